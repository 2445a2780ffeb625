"""Live migration with etcdctl's make-mirror (a client of both clusters): keys written to
the source while the mirror runs, existing ones included, reach the destination, etcd ->
petcd and petcd -> etcd."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import Any

import pytest
from maintenance.conftest import needs_etcd

from petcd.testing import ETCDCTL_BIN, Etcdctl, MemberProcess

pytestmark = needs_etcd


def mirror(src: MemberProcess, dst: MemberProcess) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL")}
    return subprocess.Popen(
        [ETCDCTL_BIN, "--endpoints", src.endpoint, "make-mirror", "--prefix", "live/",
         dst.endpoint], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True)


def wait_same(src: Etcdctl, dst: Etcdctl, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    want = src.ok("get", "live/", "--prefix")
    while True:
        got = dst.ok("get", "live/", "--prefix")
        if got == want:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"destination never caught up:\n{want!r}\n{got!r}")
        time.sleep(0.1)


@pytest.mark.parametrize("direction", ["etcd-to-petcd", "petcd-to-etcd"])
def test_make_mirror(direction: str, petcd_factory: Any, etcd_factory: Any) -> None:
    petcd, etcd = petcd_factory(), etcd_factory()
    src, dst = (etcd, petcd) if direction == "etcd-to-petcd" else (petcd, etcd)
    sctl, dctl = Etcdctl(src.endpoint), Etcdctl(dst.endpoint)
    for i in range(20):
        sctl.ok("put", f"live/{i:02d}", f"before-{i}")
    sctl.ok("put", "elsewhere", "not mirrored")
    proc = mirror(src, dst)
    try:
        wait_same(sctl, dctl)
        for i in range(10):  # changes while it runs: overwrites, new keys, deletes
            sctl.ok("put", f"live/{i:02d}", f"during-{i}")
            sctl.ok("put", f"live/new/{i}", "x")
        sctl.ok("del", "live/15")
        got = wait_same(sctl, dctl)
        assert "during-9" in got and "live/15" not in got
        assert dctl.ok("get", "elsewhere") == ""
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
