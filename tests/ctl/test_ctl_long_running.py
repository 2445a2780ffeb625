"""The long-running petcdctl commands beside etcdctl's: continuous `lease keep-alive`
(its lines, its end when the lease is revoked, death by SIGINT), a successful
`move-leader` in 3-member clusters, and `make-mirror` from petcd and from etcd into
petcd (the mirror's content; its 30 s count line under `slow`)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from petcd.client import Client
from petcd.testing import (
    FAST_ELECTIONS,
    SRC_DIR,
    MemberProcess,
    have_etcd,
    start_members,
)

from .harness import PETCDCTL, normalize, run

needs_etcd = pytest.mark.skipif(not have_etcd(), reason="etcd 3.4 not installed")
FAST = list(FAST_ELECTIONS)


def _popen(tool: list[str], endpoint: str, *args: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL")}
    env["PYTHONPATH"] = str(SRC_DIR)
    return subprocess.Popen([*_DEFAULT_SIGINT, *tool, "--endpoints", endpoint, *args],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


# The tests send SIGINT as a terminal's ^C does: the tool must not inherit it ignored (as
# pytest started in the background, `make soak &`, passes it on; Go and Python programs
# then keep ignoring it, and etcdctl never ends). A small exec wrapper resets it: not
# preexec_fn, which runs Python in the forked child of a threaded pytest worker (it
# crashed one with SIGSEGV in logging's at-fork hook).
_DEFAULT_SIGINT = [sys.executable, "-c",
                   "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                   "os.execvp(sys.argv[1], sys.argv[1:])"]


def _tools(etcd: MemberProcess, petcd: MemberProcess) -> list[tuple[list[str], str]]:
    return [(["etcdctl"], etcd.address), (PETCDCTL, petcd.address)]


def _once(text: str) -> str:
    """A refresh line once however many refreshes the timing let through (one per
    TTL/3: how many fall before the revoke or the signal depends on the load)."""
    return re.sub(r"(lease HEX keepalived with TTL\(\d+\)\n)+", r"\1", text)


@contextlib.contextmanager
def _held_lease(ep: str, ttl: int) -> Iterator[tuple[str, Callable[[], None]]]:
    """A lease granted and kept alive by this process until the returned release() is
    called: a tool's `lease keep-alive` is a new process, and under CPU load starting
    one can take longer than a few seconds' TTL, so a lease left alone could expire
    before the tool's first refresh (seen: the tool then prints only "expired or
    revoked" and the revoke fails with "lease not found")."""
    with Client(ep, timeout=30) as c:
        lease = c.lease_grant(ttl).id
        ka = c.keep_alive(lease)
        try:
            yield f"{lease:x}", ka.stop
        finally:
            ka.stop()


@needs_etcd
def test_lease_keep_alive_like_etcdctl(etcd: MemberProcess, petcd: MemberProcess) -> None:
    seen: list[tuple[int, str, str]] = []
    for tool, ep in _tools(etcd, petcd):
        with _held_lease(ep, 3) as (lease, release):
            p = _popen(tool, ep, "lease", "keep-alive", lease)
            assert p.stdout is not None
            lines = [p.stdout.readline()]
            release()  # the tool refreshes it from here on
            lines.append(p.stdout.readline())  # renewed every TTL/3
            assert run(tool, ep, ["lease", "revoke", lease], None).rc == 0
            out, err = p.communicate(timeout=30)  # the lease is gone: the command ends
        assert lines[0] == lines[1] and lines[0].endswith(b" keepalived with TTL(3)\n")
        seen.append((p.returncode, _once(normalize(b"".join(lines).decode() + out.decode())),
                     err.decode()))
    want, got = seen
    assert got == want
    assert want[0] == 0 and want[1] == ("lease HEX keepalived with TTL(3)\n"
                                        "lease HEX expired or revoked.\n")

    seen = []
    for tool, ep in _tools(etcd, petcd):
        with _held_lease(ep, 5) as (lease, _):
            p = _popen(tool, ep, "lease", "keep-alive", lease)
            assert p.stdout is not None
            first = p.stdout.readline()
            p.send_signal(signal.SIGINT)  # etcdctl does not catch it: it dies of it
            out, err = p.communicate(timeout=30)
        seen.append((p.returncode, _once(normalize((first + out).decode())), err.decode()))
    want, got = seen
    assert got == want
    assert want[0] == -signal.SIGINT and want[1] == "lease HEX keepalived with TTL(5)\n"


@pytest.fixture
def clusters(tmp_path: Path) -> Iterator[dict[str, list[MemberProcess]]]:
    made: dict[str, list[MemberProcess]] = {}
    try:
        for kind in (["etcd"] if have_etcd() else []) + ["petcd"]:
            made[kind] = start_members(kind, tmp_path, 3, FAST, token=kind)
        yield made
    finally:
        for ms in made.values():
            for m in ms:
                m.kill()


def _leader_and_follower(ms: list[MemberProcess]) -> tuple[int, int, dict[int, str]]:
    """(leader ID, a follower's ID, member ID -> client address)."""
    with Client([m.address for m in ms], timeout=20) as c:
        leader = c.status().leader
        addr = {m.id: m.client_urls[0].split("://")[-1] for m in c.member_list().members}
    return leader, next(i for i in addr if i != leader), addr


def test_move_leader_in_3_members(clusters: dict[str, list[MemberProcess]]) -> None:
    outs: dict[str, tuple[int, str, str]] = {}
    for kind, ms in clusters.items():
        leader, target, addr = _leader_and_follower(ms)
        tool = ["etcdctl"] if kind == "etcd" else PETCDCTL
        r = run(tool, ",".join(m.address for m in ms), ["move-leader", f"{target:x}"], None)
        assert r.rc == 0, r.err
        assert r.out.decode() == f"Leadership transferred from {leader:x} to {target:x}\n"
        outs[kind] = (r.rc, normalize(r.out.decode()), r.err)
        with Client([m.address for m in ms], timeout=20) as c:
            deadline = time.monotonic() + 20
            while c.status().leader != target:
                assert time.monotonic() < deadline, "leadership did not move"
                time.sleep(0.1)
        # asked only of followers: no leader among the endpoints, as etcdctl says
        followers = [a for i, a in addr.items() if i != target]
        r2 = run(tool, ",".join(followers), ["move-leader", f"{leader:x}"], None)
        outs[kind + "-no-leader"] = (r2.rc, normalize(r2.out.decode()), normalize(r2.err))
    if "etcd" in clusters:
        assert outs["petcd"] == outs["etcd"]
        assert outs["petcd-no-leader"] == outs["etcd-no-leader"]


def _wait_for(c: Client, prefix: str, want: dict[bytes, bytes]) -> None:
    deadline = time.monotonic() + 30
    while True:
        got = {kv.key: kv.value for kv in c.get(prefix, prefix=True).kvs}
        if got == want:
            return
        assert time.monotonic() < deadline, (got, want)
        time.sleep(0.1)


def _mirror(source: MemberProcess, dest: MemberProcess, tool: list[str] | None = None
            ) -> subprocess.Popen[bytes]:
    """Mirror source's mirror/ to dest's copy/; history first, then live changes."""
    with Client(source.address) as s:
        s.put("mirror/a", "1")
        s.put("mirror/b", "2")
        s.put("other/x", "no")
    p = _popen(tool or PETCDCTL, source.address, "make-mirror", "--prefix", "mirror/",
               "--dest-prefix", "copy/", dest.address)
    with Client(dest.address) as d, Client(source.address) as s:
        _wait_for(d, "copy/", {b"copy/a": b"1", b"copy/b": b"2"})
        s.put("mirror/c", "3")
        s.delete("mirror/a")
        _wait_for(d, "copy/", {b"copy/b": b"2", b"copy/c": b"3"})
        assert d.get("other/", prefix=True).kvs == []
    return p


def test_make_mirror_petcd_to_petcd(petcd: MemberProcess, petcd_factory: Any) -> None:
    dest = petcd_factory()
    p = _mirror(petcd, dest)
    p.kill()
    p.wait()


@needs_etcd
def test_make_mirror_etcd_to_petcd(etcd: MemberProcess, petcd_factory: Any) -> None:
    dest = petcd_factory()
    p = _mirror(etcd, dest)
    p.kill()
    p.wait()


@pytest.mark.slow
@needs_etcd
def test_make_mirror_count_like_etcdctl(etcd_factory: Any, petcd_factory: Any) -> None:
    """After 30 s both print the number of changes mirrored (2 keys, then 2 events)."""
    outs = []
    for tool in (["etcdctl"], PETCDCTL):
        source, dest = etcd_factory(), petcd_factory()
        p = _mirror(source, dest, tool)
        assert p.stdout is not None
        line = p.stdout.readline()  # printed 30 s after the start
        p.send_signal(signal.SIGINT)
        p.wait(30)
        outs.append((line, p.returncode))
    assert outs[0] == outs[1] == (b"4\n", -signal.SIGINT)
