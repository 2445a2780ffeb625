"""etcdctl's environment and global flags beside petcdctl's: ETCDCTL_<FLAG> variables
(endpoints, output format, hex; an empty one is unset, one that does not parse is
dropped), the fatal line when a variable is shadowed by its flag on the command line,
the warning for a variable naming no flag, ETCDCTL_USER against a cluster without
auth, --command-timeout=0s, and an unreadable --cacert/--cert file. Same stdout,
stderr (times aside) and exit code, etcdctl against etcd and petcdctl against petcd."""

from __future__ import annotations

import os
import subprocess

import pytest

from petcd.testing import SRC_DIR, MemberProcess, have_etcd

from .harness import PETCDCTL, Result, assert_same

pytestmark = pytest.mark.skipif(not have_etcd(), reason="etcd/etcdctl 3.4 not installed")


def _run(tool: list[str], ep: str, args: list[str], env: dict[str, str]) -> Result:
    """The endpoint from ETCDCTL_ENDPOINTS unless a case names it on the command line."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL")}
    e["PYTHONPATH"] = str(SRC_DIR)
    e["ETCDCTL_ENDPOINTS"] = ep
    e.update({k: v.replace("@EP@", ep) for k, v in env.items()})
    argv = [a.replace("@EP@", ep) for a in args]
    p = subprocess.run([*tool, *argv], capture_output=True, env=e, timeout=60, check=False)
    return Result(p.returncode, p.stdout, p.stderr.decode("utf-8", "replace"))


CASES: list[tuple[dict[str, str], list[str]]] = [
    ({}, ["put", "env/k", "v"]),
    ({"ETCDCTL_WRITE_OUT": "json"}, ["put", "env/k", "v2"]),
    ({"ETCDCTL_HEX": "true"}, ["get", "env/k"]),
    ({"ETCDCTL_HEX": ""}, ["get", "env/k"]),  # empty: as if unset
    ({"ETCDCTL_DIAL_TIMEOUT": "abc"}, ["get", "env/k"]),  # dropped, not an error
    ({}, ["--endpoints", "@EP@", "get", "env/k"]),  # shadowed: fatal
    ({"ETCDCTL_HEX": "false"}, ["--hex", "get", "env/k"]),
    ({"ETCDCTL_BOGUS": "1"}, ["get", "env/k"]),  # unrecognized: a warning
    ({"ETCDCTL_WATCH_KEY": "env/k"}, ["get", "env/k"]),  # (only watch takes it)
    ({"ETCDCTL_BOGUS": "1"}, ["version"]),  # no client made: nothing checked
    ({"ETCDCTL_USER": "root:x"}, ["get", "env/k"]),  # auth not enabled: goes on
    ({}, ["get", "env/k", "--command-timeout=0s"]),
    ({"ETCDCTL_CACERT": "/nonexistent/ca.pem"}, ["get", "env/k"]),
    ({}, ["--cert", "/nonexistent/c.pem", "--key", "/nonexistent/k.pem", "get", "env/k"]),
    ({"ETCDCTL_API": "3"}, ["get", "env/k", "-w", "fields"]),
]


def test_env_and_global_flags_like_etcdctl(etcd: MemberProcess, petcd: MemberProcess
                                           ) -> None:
    for env, args in CASES:
        want = _run(["etcdctl"], etcd.address, args, env)
        got = _run(PETCDCTL, petcd.address, args, env)
        assert_same([*(f"{k}={v}" for k, v in env.items()), *args], want, got)
    # the shadowing case really is etcdctl's fatal line (not a pass by accident)
    r = _run(PETCDCTL, petcd.address, ["--endpoints", "@EP@", "get", "env/k"], {})
    assert r.rc == 1 and 'C | pkg/flags: conflicting environment variable "ETCDCTL_ENDPOINTS"' \
        in r.err, r


MORE: list[tuple[list[str], str | None]] = [
    (["lease", "grant", "600"], None),
    (["lease", "list"], None),
    (["lease", "list", "-w", "json"], None),
    (["defrag", "--cluster"], None),
    (["user", "add", "pu", "--new-user-password=a"], None),
    (["user", "passwd", "pu", "--interactive=false"], "b\n"),
    (["user", "passwd", "nobody", "--interactive=false"], "b\n"),
    (["user", "delete", "pu"], None),
    (["member", "list", "-w", "table", "--hex"], None),
    (["endpoint", "health", "--cluster"], None),
]


def test_more_commands_like_etcdctl(etcd: MemberProcess, petcd: MemberProcess) -> None:
    """lease list, defrag --cluster, user passwd from stdin, member list --hex."""
    import re

    from .harness import run

    for args, stdin in MORE:
        want = run(["etcdctl"], etcd.address, args, stdin)
        got = run(PETCDCTL, petcd.address, args, stdin)
        if args[0] == "member":  # (names differ: the fixtures name their members apart)
            want.out = re.sub(rb"\| +\S+ +\| http", b"| NAME | http", want.out)
            got.out = re.sub(rb"\| +\S+ +\| http", b"| NAME | http", got.out)
        if args[:2] == ["endpoint", "health"]:  # (how long the probe took)
            want.out = re.sub(rb"took = \S+", b"took", want.out)
            got.out = re.sub(rb"took = \S+", b"took", got.out)
        assert_same(args, want, got)


def test_unreachable_endpoint_like_etcdctl() -> None:
    """No member at the endpoint: clientv3 3.4 dials without blocking, so its first
    call fails at the command deadline, after its retry warning line."""
    from petcd.testing import free_port

    from .harness import run

    dead = f"127.0.0.1:{free_port()}"
    for args in (["get", "k", "--command-timeout", "2s"],
                 ["endpoint", "health", "--command-timeout", "2s"]):
        want = run(["etcdctl"], dead, [*args, "--dial-timeout", "1s"], None)
        got = run(PETCDCTL, dead, [*args, "--dial-timeout", "1s"], None)
        assert_same(args, want, got)
        assert want.rc == 1 and '"level":"warn"' in want.err
