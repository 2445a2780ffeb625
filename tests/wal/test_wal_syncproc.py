"""fdatasync in a process of its own (petcd.wal.syncproc, PETCD_WAL_AIO=proc): it follows
the WAL from segment to segment, nothing it did not confirm counts when it dies (what was
in flight is synced in the member, and later syncs too), and it exits when the member
closes it or dies. Real child processes, real signals."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from wal_testutil import entries, reopen

from petcd.wal import WAL
from petcd.wal.fdsync import open_fdsync
from petcd.wal.syncproc import SyncProc


@pytest.fixture
def proc(tmp_path: Path) -> Iterator[SyncProc]:
    s = open_fdsync("proc", str(tmp_path))
    if not isinstance(s, SyncProc):
        pytest.skip("the fdatasync process cannot start here")
    yield s
    s.close()


def wait_reap(s: SyncProc, n: int = 1) -> list[tuple[int, int]]:
    done: list[tuple[int, int]] = []
    while len(done) < n:
        ready, _, _ = select.select([s.fileno()], [], [], 30)
        assert ready, "no fdatasync completion within 30 s"
        done += s.reap()
    return sorted(done)


def gone(pid: int, timeout: float = 30) -> bool:
    """The process exited (a zombie counts: a reaper may be slow) within timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.02)
    return False


def held_files(pid: int) -> set[str]:
    files = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):  # (closed meanwhile)
            files.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
    return files


def test_the_child_follows_the_wal_across_segments(tmp_path: Path, proc: SyncProc) -> None:
    d = tmp_path / "wal"
    wal = WAL.create(str(d), b"", segment_size=4096)
    token = 0

    def save() -> None:
        nonlocal token
        token += 1
        assert wal.save_begin(None, entries(wal.last_index + 1, 2),
                              lambda fd: proc.submit(fd, token))
        assert wait_reap(proc) == [(token, 0)]
        wal.save_end(0, 0.001)

    while not wal.full:
        save()
    first = os.path.realpath(wal.segments[-1].path)
    assert first in held_files(proc.pid)
    wal.cut_if_full()
    second = os.path.realpath(wal.segments[-1].path)
    save()  # (the WAL's descriptor number may well be the same as before: a new file)
    assert second in held_files(proc.pid) and first not in held_files(proc.pid)
    last = wal.last_index
    wal.close()
    wal, _, ents = reopen(str(d), segment_size=4096)
    assert ents == entries(1, last)
    wal.close()


def test_syncs_in_flight_when_the_child_dies_are_done_here(tmp_path: Path,
                                                           proc: SyncProc) -> None:
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.kill(proc.pid, signal.SIGSTOP)  # (it can take requests but answers none)
        os.write(fd, b"x" * 100)
        proc.submit(fd, 1)
        proc.submit(fd, 2)
        assert select.select([proc.fileno()], [], [], 0.3)[0] == []
        assert proc.reap() == []
        os.kill(proc.pid, signal.SIGKILL)
        assert wait_reap(proc, 2) == [(1, 0), (2, 0)]
        assert proc.in_flight == 0
        # From now on every sync is done here, completing on the same descriptor.
        os.write(fd, b"y" * 100)
        proc.submit(fd, 3)
        assert wait_reap(proc) == [(3, 0)]
        assert proc.reap() == []
        assert select.select([proc.fileno()], [], [], 0)[0] == []  # (no busy loop)
    finally:
        os.close(fd)


def test_a_dead_child_is_noticed_at_submit(tmp_path: Path, proc: SyncProc) -> None:
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.kill(proc.pid, signal.SIGKILL)
        assert gone(proc.pid)
        os.write(fd, b"x" * 100)
        proc.submit(fd, 5)
        assert wait_reap(proc) == [(5, 0)]
    finally:
        os.close(fd)


def test_a_failed_fdatasync_is_reported_after_the_child_died(proc: SyncProc) -> None:
    r, w = os.pipe()  # (a pipe cannot be fdatasynced)
    try:
        os.kill(proc.pid, signal.SIGKILL)
        assert gone(proc.pid)
        proc.submit(r, 9)
        [(token, err)] = wait_reap(proc)
        assert token == 9 and err != 0
    finally:
        os.close(r)
        os.close(w)


def test_close_stops_the_child(proc: SyncProc) -> None:
    pid = proc.pid
    proc.close()
    assert gone(pid, 0.1)  # (close waited for it)
    proc.close()  # (twice is fine)


def test_the_child_exits_when_its_member_is_killed() -> None:
    """kill -9 of the member: the kernel closes the member's end of the socket, and the
    child, which ignores the signals a member shuts down on (a terminal's ^C reaches the
    whole process group), exits on that."""
    script = ("import signal, time\n"
              "from petcd.wal.syncproc import SyncProc\n"
              "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
              "s = SyncProc.open()\n"
              "assert s is not None\n"
              "print(s.pid, flush=True)\n"
              "time.sleep(600)\n")
    member = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                              start_new_session=True)
    try:
        assert member.stdout is not None
        child = int(member.stdout.readline())
        os.killpg(member.pid, signal.SIGINT)
        assert not gone(child, 0.5)
        member.kill()
        assert gone(child)
    finally:
        member.kill()
        member.wait()


def test_the_child_yields_to_the_member(proc: SyncProc) -> None:
    """Named for ps/perf, and at a lower weight than the member's threads (it waits for
    the loop thread on a shared CPU instead of preempting it)."""
    from petcd.wal.syncproc import NICE

    def nice_of(pid: int) -> int:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])

    assert wait_for_name(proc.pid) == "petcd-fsync"
    assert nice_of(proc.pid) == min(19, nice_of(os.getpid()) + NICE)


def wait_for_name(pid: int) -> str:
    deadline = time.monotonic() + 30  # (the child names itself once it started)
    name = ""
    while time.monotonic() < deadline:
        name = Path(f"/proc/{pid}/comm").read_text().strip()
        if name == "petcd-fsync":
            break
        time.sleep(0.02)
    return name
