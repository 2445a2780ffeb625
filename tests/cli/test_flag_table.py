"""A flag is declared in one place, its row in cli/flags.py: name, kind, default, help,
and the ServerOptions field it fills. These tests hold the table to that: every flag
fills a typed field or says why not, every field is filled by one flag or says why not,
the dataclass defaults are what the flags' defaults give, and every row reaches its
field from the command line, ETCD_* and the config file with no other code per flag."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from petcd.cli.config import load
from petcd.cli.flags import FLAGS, NOT_FOR_PETCD, Flag, Kind
from petcd.cli.server import help_text, options_from
from petcd.server.options import ServerOptions

FIELDS = {f.name: f for f in dataclasses.fields(ServerOptions)}
OPTION_FLAGS = [f for f in FLAGS if f.option]
# Text values where the kind alone does not give a valid non-default one.
SAMPLE = {"initial-cluster": "default=http://127.0.0.1:1", "auth-token": "simple,ttl=5m",
          "tls-min-version": "TLS1.3", "tls-max-version": "TLS1.3", "metrics": "extensive",
          "auto-compaction-retention": "5", "auto-compaction-mode": "revision",
          "cors": "http://a.example:1",
          "cipher-suites": "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"}
# etcd refuses explicit listen-client-urls without advertise-client-urls.
BASE = {"advertise-client-urls": "http://127.0.0.1:9"}
NEEDS = {"experimental-enable-lease-checkpoint-persist":
         {"experimental-enable-lease-checkpoint": "true"}}


def test_every_flag_fills_a_field_or_says_why_not() -> None:
    for f in FLAGS:
        fates = [bool(f.option), bool(f.no_option), f.name in NOT_FOR_PETCD]
        assert fates.count(True) == 1, (f.name, fates)
        if f.option:
            assert f.option in FIELDS, f"--{f.name} names no ServerOptions field {f.option!r}"


def test_every_field_has_one_flag_or_a_reason() -> None:
    filled = [f.option for f in OPTION_FLAGS]
    assert len(filled) == len(set(filled)), "two flags fill one field"
    for name, fld in FIELDS.items():
        reason = fld.metadata.get("no_flag", "")
        assert (name in filled) != bool(reason), name


def test_field_defaults_are_the_flag_defaults() -> None:
    from_flags = options_from(load([], {})[0])
    assert from_flags == ServerOptions()
    for name in FIELDS:  # and of the same type (an int where the field says float...)
        assert type(getattr(from_flags, name)) is type(getattr(ServerOptions(), name)), name


def _sample(f: Flag) -> str:
    """A valid value other than the default, as command-line text."""
    if f.name in SAMPLE:
        return SAMPLE[f.name]
    if f.kind is Kind.BOOL:
        return "false" if f.default else "true"
    if f.kind in (Kind.INT, Kind.UINT):
        return str(int(f.default) + 1)  # type: ignore[call-overload]
    if f.kind is Kind.DURATION:
        return f"{float(f.default) + 1}s"  # type: ignore[arg-type]
    if f.kind is Kind.URLS:
        return "http://127.0.0.1:1"
    if f.kind is Kind.CHOICE:
        return next(c for c in f.choices if c != f.default)
    return "/some/value" if f.name.endswith(("file", "dir")) else "somevalue"


@pytest.mark.parametrize("flag", OPTION_FLAGS, ids=lambda f: f.name)
def test_every_flag_reaches_its_field_three_ways(flag: Flag, tmp_path: Path) -> None:
    base = {k: v for k, v in (BASE | NEEDS.get(flag.name, {})).items() if k != flag.name}
    args = [f"--{k}={v}" for k, v in base.items()]
    plain = getattr(options_from(load(args, {})[0]), flag.option)
    value = _sample(flag)
    by_flag = getattr(options_from(load([*args, f"--{flag.name}={value}"], {})[0]),
                      flag.option)
    assert by_flag != plain, (flag.name, value)
    env = {"ETCD_" + k.upper().replace("-", "_"): v for k, v in base.items()}
    env[flag.env] = value
    assert getattr(options_from(load([], env)[0]), flag.option) == by_flag
    f = tmp_path / "etcd.conf.yml"
    f.write_text(yaml.safe_dump({**base, flag.name: value}))
    assert getattr(options_from(load(["--config-file", str(f)], {})[0]), flag.option) == by_flag
    if flag.file_key:  # etcd's nested key (client-/peer-transport-security)
        outer, inner = flag.file_key.split(".")
        f.write_text(yaml.safe_dump({**base, outer: {inner: value}}))
        got = getattr(options_from(load(["--config-file", str(f)], {})[0]), flag.option)
        assert got == by_flag


def test_help_lists_each_flag_once_in_table_order() -> None:
    text = help_text()
    positions = [text.index(f"\n  --{f.name} '") for f in FLAGS]
    assert positions == sorted(positions)
    assert "[not yet used]" not in text
