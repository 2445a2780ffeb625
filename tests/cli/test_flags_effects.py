"""Flags that cannot apply to petcd are refused or warned about (never silently
ignored); the warning flags log slow requests and slow applies; a start defragments when
enough of the file is free."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from petcd.cli.config import ConfigError, load
from petcd.cli.flags import FLAGS, NOT_FOR_PETCD
from petcd.testing import Etcdctl


@pytest.mark.parametrize(("args", "refused"), [
    (["--proxy", "on"], "--proxy is not supported by petcd"),
    (["--discovery-srv", "example.com"], "--discovery-srv is not supported"),
    (["--experimental-enable-distributed-tracing"], "tracing"),
    (["--experimental-memory-mlock"], "cannot lock"),
])
def test_refused(args: list[str], refused: str) -> None:
    with pytest.raises(ConfigError, match=refused):
        load(args)[0].validate()


def test_warned_and_defaults_silent() -> None:
    cfg = load(["--experimental-backend-bbolt-freelist-type", "map",
                "--log-package-levels", "etcdserver=DEBUG"])[0]
    cfg.validate()
    assert any("freelist" in w for w in cfg.warnings)
    assert any("--log-package-levels" in w for w in cfg.warnings)
    quiet = load(["--proxy", "off", "--enable-v2=false"])[0]
    quiet.validate()
    assert not quiet.warnings


def test_every_flag_is_used_or_explained() -> None:
    assert [f.name for f in FLAGS if not f.used and f.name not in NOT_FOR_PETCD] == []


def test_slow_request_and_apply_warnings(petcd_factory: Any) -> None:
    m = petcd_factory(args=["--warning-unary-request-duration", "1ns",
                            "--experimental-warning-apply-duration", "1ns"])
    Etcdctl(m.endpoint).ok("put", "slow", "x")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        log = m.log_tail(20000)
        if "request stats: /etcdserverpb.KV/Put" in log and "apply request took too long" in log:
            return
        time.sleep(0.1)
    raise AssertionError(m.log_tail())


def test_bootstrap_defrag(petcd_factory: Any) -> None:
    m = petcd_factory(args=["--experimental-bootstrap-defrag-threshold-megabytes", "1"])
    ctl = Etcdctl(m.endpoint)
    value = "v" * 20000
    for i in range(150):  # ~3 MB, then all of it deleted and compacted away
        ctl.ok("put", f"big/{i}", value)
    ctl.ok("del", "big/", "--prefix")
    rev = json.loads(ctl.ok("get", "x", "-w", "json"))["header"]["revision"]
    ctl.ok("compact", str(rev), "--physical")
    before = json.loads(ctl.ok("endpoint", "status", "-w", "json"))[0]["Status"]["dbSize"]
    m.stop()
    m.start()
    after = json.loads(Etcdctl(m.endpoint).ok("endpoint", "status", "-w", "json"))[0]
    assert "defragmenting at start" in m.log_tail(50000)
    assert after["Status"]["dbSize"] < before
