"""check perf and check datascale: petcdctl's output, progress bar included, is
etcdctl 3.4's byte for byte once the numbers are set aside. The bar frames are checked
by re-rendering each from its own numbers with cheggaaa/pb v1's layout; the slow tests
run that same check on etcdctl's real output, so the model is etcdctl's."""

from __future__ import annotations

import re

import pytest

from petcd.cli.ctl.progress import go_duration
from petcd.testing import MemberProcess

from .harness import PETCDCTL, Result, run

_FRAME = re.compile(r" (\d+) / (\d+) +(\d+\.\d\d)%(?: (.*))?")
_LEFT = re.compile(r"(?:\d+d)?(?:\d+h)?\d\dm\d\ds")
_GO_DURATION = re.compile(r"(?:[1-9]\d*h)?(?:\d+m)?\d+s")


# etcdctl's check perf races its own bar: a goroutine adds 1 to it after each of 60
# sleeps of 1 s (which drift under load) and only then draws the finished frame, while
# the puts stop at a 60 s deadline and the summary follows at once. On a loaded machine
# the summary can win: its first line is then glued to an unfinished frame, and the
# finished frame comes later between the summary's lines, or never (the process ends).
_GLUED = re.compile(r"( \d+ / \d+ +\d+\.\d\d%(?: (?:\d+d)?(?:\d+h)?\d\dm\d\ds)?)([A-Z].*)")
_LATE_FINISH = re.compile(r"\r (\d+) / \1 +100\.00% [0-9hms]+")


def _check_frames(out: bytes, unfinished_ok: bool = False) -> str:
    """Every bar frame as pb v1 draws it (no terminal: no bar); returns what follows.
    unfinished_ok: etcdctl's check perf, which may print its summary before its bar
    has finished (see _GLUED); petcdctl always finishes its bar first."""
    text = out.decode()
    bar, nl, rest = text.partition("\n")
    assert nl and bar.startswith("\r"), text[:200]
    frames = bar.split("\r")[1:]
    finished = True
    if unfinished_ok and (g := _GLUED.fullmatch(frames[-1])):
        frames[-1] = g[1]
        rest = (g[2] + "\n" + _LATE_FINISH.sub("", rest)).replace("\n\n", "\n")
        finished = False
    assert len(frames) >= 2, text[:300]
    last = len(frames) - 1 if finished else -1
    for i, f in enumerate(frames):
        m = _FRAME.fullmatch(f)
        assert m, repr(f)
        cur, total = int(m[1]), int(m[2])
        want = f" {cur} / {total} " + f" {cur / (total / 100):6.2f}%"
        if i == last:  # finished: the elapsed time as Go prints a Duration
            assert m[4] is not None and _GO_DURATION.fullmatch(m[4]), f
            assert cur == total
        elif m[4] is not None:
            assert _LEFT.fullmatch(m[4]), f
        left = f" {m[4]}" if m[4] is not None else ""
        assert f == want + left, (f, want + left)
    return rest


def _numbers_aside(text: str) -> str:
    return re.sub(r"-?\d+(\.\d+)?", "N", text)


# Every summary etcdctl can print (which one depends on the machine's load).
_PERF_SUMMARY = re.compile(
    r"(FAIL: too many errors\n(FAIL: ERROR\(.*\) -> N\n)+)?"
    r"(PASS: Throughput is N writes/s|FAIL: Throughput too low: N writes/s)\n"
    r"(PASS: Slowest request took Ns|Slowest request took too long: Ns)\n"
    r"(PASS: Stddev is Ns|Stddev too high: Ns)\n(PASS|FAIL)\n")


def _perf_summary_ok(r: Result, unfinished_ok: bool = False) -> None:
    tail = _numbers_aside(_check_frames(r.out, unfinished_ok))
    m = _PERF_SUMMARY.fullmatch(tail)
    assert m, tail
    assert (r.rc == 0) == (m[6] == "PASS"), (r.rc, tail)


_MAINTENANCE = ('Compacting with revision N\nCompacted with revision N\n'
                'Defragmenting "N.N:N"\nDefragmented "N.N:N"\n')


def _perf(tool: list[str], member: MemberProcess, seconds: int | None = None,
          extra: tuple[str, ...] = ()) -> Result:
    env = {"PETCDCTL_CHECK_PERF_DURATION": str(seconds)} if seconds else None
    return run(tool, member.address, ["check", "perf", "--prefix", "perf-check/", *extra],
               None, env=env, timeout=300)


def test_check_perf_output(petcd: MemberProcess) -> None:
    r = _perf(PETCDCTL, petcd, 3)
    assert r.rc in (0, 1), (r.out, r.err)
    _perf_summary_ok(r)  # (a loaded machine may miss the rate: FAIL, in etcdctl's words)
    r = run(PETCDCTL, petcd.address, ["check", "perf", "--load", "huge"], None)
    assert (r.rc, r.err) == (4, "Error: unknown load option huge\n")


def test_check_perf_medium_with_maintenance(petcd: MemberProcess) -> None:
    """--load m (200 concurrent clients from the worker processes, 1000 puts/s), then
    etcdctl's compaction (physical) and defragmentation lines before the summary; the
    keys written are gone afterwards."""
    r = _perf(PETCDCTL, petcd, 3, ("--load", "m", "--auto-compact", "--auto-defrag"))
    assert r.rc in (0, 1), (r.out, r.err)
    tail = _numbers_aside(_check_frames(r.out))
    assert tail.startswith(_MAINTENANCE), tail
    m = _PERF_SUMMARY.fullmatch(tail[len(_MAINTENANCE):])
    assert m and (r.rc == 0) == (m[6] == "PASS"), (r.rc, tail)
    assert not r.err
    left = run(PETCDCTL, petcd.address, ["get", "--prefix", "perf-check/", "--keys-only"],
               None)
    assert (left.rc, left.out) == (0, b""), left


@pytest.mark.slow
@pytest.mark.parametrize("load", ["l", "xl"])
def test_check_perf_large_loads(petcd: MemberProcess, load: str) -> None:
    """The large loads (500 and 1000 clients, 8000 and 15000 puts/s) end with etcdctl's
    summary, PASS or FAIL from the figures measured, and its exit code: no deadline
    error when the member falls behind (etcdctl's 30 s for the final delete)."""
    r = _perf(PETCDCTL, petcd, 20, ("--load", load))
    assert r.rc in (0, 1) and not r.err, (r.out[-300:], r.err)
    _perf_summary_ok(r)


@pytest.mark.slow
def test_check_perf_like_etcdctl(etcd: MemberProcess, petcd: MemberProcess) -> None:
    want = _perf(["etcdctl"], etcd)  # a full minute
    got = _perf(PETCDCTL, petcd)
    _perf_summary_ok(want, unfinished_ok=True)  # (etcdctl's race, see _GLUED)
    _perf_summary_ok(got)
    # a prefix that has keys: the same refusal
    for tool, m in ((["etcdctl"], etcd), (PETCDCTL, petcd)):
        run(tool, m.address, ["put", "perf-busy/k", "v"], None)
    w = run(["etcdctl"], etcd.address, ["check", "perf", "--prefix", "perf-busy/"], None)
    g = run(PETCDCTL, petcd.address, ["check", "perf", "--prefix", "perf-busy/"], None)
    assert (g.rc, g.out, g.err) == (w.rc, w.out, w.err)


DATASCALE_TAIL = ('Compacting with revision N\nCompacted with revision N\n'
                  'Defragmenting "N.N:N"\nDefragmented "N.N:N"\n'
                  "PASS: Approximate system memory used : N MB.\n")


@pytest.mark.slow
@pytest.mark.parametrize("tool", ["etcdctl", "petcdctl"])
@pytest.mark.parametrize("server", ["etcd", "petcd"])
def test_check_datascale_like_etcdctl(tool: str, server: str, request: pytest.FixtureRequest
                                      ) -> None:
    """10000 puts of 1 KiB: each tool against each server, the same output."""
    member: MemberProcess = request.getfixturevalue(server)
    r = run(["etcdctl"] if tool == "etcdctl" else PETCDCTL, member.address,
            ["check", "datascale", "--prefix", f"ds-{tool}/", "--auto-compact",
             "--auto-defrag"], None, timeout=600)
    assert r.rc == 0, (r.out[-500:], r.err)
    first, _, rest = r.out.decode().partition("\n")
    assert first == ("Start data scale check for work load [10000 key-value pairs, 1024 "
                     "bytes per key-value, 50 concurrent clients].")
    assert _numbers_aside(_check_frames(rest.encode())) == DATASCALE_TAIL


def test_go_duration() -> None:
    assert [go_duration(s) for s in (0, 3, 60, 61, 3600, 3725)] == \
        ["0s", "3s", "1m0s", "1m1s", "1h0m0s", "1h2m5s"]
