"""`etcdctl watch` (real etcdctl 3.4) against real etcd and petcd: the same watch and
the same writes must print the same thing. Every watch starts at an explicit revision
(--rev), so whether etcdctl's watch is set up before or after the writes does not
matter."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable

import pytest

from petcd.testing import ETCDCTL_BIN, Etcdctl, MemberProcess, have_etcd

pytestmark = pytest.mark.skipif(not have_etcd(), reason="etcd/etcdctl 3.4 not installed")

END = "END-OF-TEST"


def next_revision(ctl: Etcdctl) -> int:
    out = ctl.ok("put", "rev-probe", "x", "-w", "fields")
    rev = next(line for line in out.splitlines() if line.startswith('"Revision"'))
    return int(rev.split(":")[1]) + 1


def watch_output(member: MemberProcess, args: list[str], writes: Callable[[Etcdctl], None],
                 until: Callable[[str], bool], stdin: str | None = None,
                 timeout: float = 20.0) -> tuple[str, str, int | None]:
    """Start `etcdctl watch ARGS`, run the writes, read its output until `until` holds
    (or it exits); returns (stdout, stderr, exit code or None if it was stopped)."""
    ctl = Etcdctl(member.endpoint)
    proc = subprocess.Popen(
        [ETCDCTL_BIN, "--endpoints", member.endpoint, "watch", *args],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"})
    out: list[str] = []
    err: list[str] = []
    assert proc.stdout is not None and proc.stderr is not None and proc.stdin is not None
    readers = [threading.Thread(target=lambda f=f, acc=acc: acc.extend(iter(f.readline, "")),
                                daemon=True)
               for f, acc in ((proc.stdout, out), (proc.stderr, err))]
    for t in readers:
        t.start()
    try:
        if stdin is not None:
            proc.stdin.write(stdin)
            proc.stdin.flush()
        writes(ctl)
        deadline = time.monotonic() + timeout
        while not until("".join(out)) and proc.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"etcdctl watch {args}: got {''.join(out)!r} "
                                     f"{''.join(err)!r}")
            time.sleep(0.02)
        code = proc.poll()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for t in readers:
            t.join(5)
    return "".join(out), "".join(err), code


def same(etcd: MemberProcess, petcd: MemberProcess, make_args: Callable[[int], list[str]],
         writes: Callable[[Etcdctl], None], stdin: Callable[[int], str] | None = None,
         until: Callable[[str], bool] = lambda out: out.rstrip("\n").endswith(END)) -> str:
    # (the writes end with a put of END: an END printed earlier as a previous value of a
    # later deletion does not count)
    results = []
    for m in (etcd, petcd):
        rev = next_revision(Etcdctl(m.endpoint))
        results.append(watch_output(m, make_args(rev), writes, until,
                                    None if stdin is None else stdin(rev)))
    assert results[1] == results[0]
    return results[1][0]


def test_key(etcd: MemberProcess, petcd: MemberProcess) -> None:
    def writes(ctl: Etcdctl) -> None:
        ctl.ok("put", "k1", "v1")
        ctl.ok("put", "k1b", "no")
        ctl.ok("put", "k1", "v2")
        ctl.ok("del", "k1")
        ctl.ok("put", "k1", END)

    out = same(etcd, petcd, lambda rev: ["--rev", str(rev), "k1"], writes)
    assert out == f"PUT\nk1\nv1\nPUT\nk1\nv2\nDELETE\nk1\n\nPUT\nk1\n{END}\n"


def test_prefix_and_prev_kv(etcd: MemberProcess, petcd: MemberProcess) -> None:
    def writes(ctl: Etcdctl) -> None:
        ctl.ok("put", "p/a", "1")
        ctl.ok("put", "q", "no")
        ctl.ok("put", "p/a", "2")
        ctl.ok("put", "p/b", "3")
        ctl.ok("del", "--prefix", "p/")
        ctl.ok("put", "p/z", END)

    same(etcd, petcd, lambda rev: ["--rev", str(rev), "--prefix", "p/"], writes)
    same(etcd, petcd, lambda rev: ["--rev", str(rev), "--prefix", "--prev-kv", "p/"], writes)


def test_txn_events_together(etcd: MemberProcess, petcd: MemberProcess) -> None:
    def writes(ctl: Etcdctl) -> None:
        ctl.ok("put", "t/3", "old")
        ctl.ok("txn", input='\nput t/1 one\nput t/2 two\ndel t/3\n\n\n')
        ctl.ok("put", "t/9", END)

    out = same(etcd, petcd, lambda rev: ["--rev", str(rev), "--prefix", "--prev-kv", "t/"],
               writes)
    assert "PUT\nt/1\none\nPUT\nt/2\ntwo\nDELETE\nt/3\nold\nt/3\n\n" in out


def test_history_from_revision(etcd: MemberProcess, petcd: MemberProcess) -> None:
    def history(ctl: Etcdctl) -> None:
        for i in range(5):
            ctl.ok("put", f"h/{i % 2}", f"v{i}")
        ctl.ok("del", "h/0")
        ctl.ok("put", "h/9", END)

    for m in (etcd, petcd):
        history(Etcdctl(m.endpoint))

    def rewind(rev: int) -> list[str]:
        return ["--rev", str(rev - 8), "--prefix", "h/"]  # the first put (a probe put follows)

    out = same(etcd, petcd, rewind, lambda ctl: None)
    assert out.count("PUT") == 6 and out.count("DELETE") == 1


def test_compacted_revision(etcd: MemberProcess, petcd: MemberProcess) -> None:
    for m in (etcd, petcd):
        ctl = Etcdctl(m.endpoint)
        ctl.ok("put", "c1", "a")
        ctl.ok("put", "c1", "b")
        ctl.ok("compact", str(next_revision(ctl) - 1))

    out = same(etcd, petcd, lambda rev: ["--rev", "2", "c1"], lambda ctl: None,
               until=lambda out: False)
    assert out == ""


def test_interactive(etcd: MemberProcess, petcd: MemberProcess) -> None:
    def writes(ctl: Etcdctl) -> None:
        ctl.ok("put", "i1", "x")
        ctl.ok("put", "i2", END)

    same(etcd, petcd, lambda rev: ["-i"], writes,
         stdin=lambda rev: f"watch --rev {rev} --prefix i\n")
