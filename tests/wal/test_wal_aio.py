"""The WAL's asynchronous fdatasync: io_uring (petcd.wal.uring), native AIO
(petcd.wal.aio), the choice between them (petcd.wal.fdsync), and WAL.save_begin /
save_end, which the Ready loop uses instead of a thread hop (server/raftnode/walwriter)."""

from __future__ import annotations

import os
import select
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from wal_testutil import entries, reopen, write_log

from petcd.raft.types import HardState
from petcd.wal import WAL, WALError
from petcd.wal.aio import AioSync
from petcd.wal.fdsync import FdSync, open_fdsync
from petcd.wal.uring import UringSync


@pytest.fixture(params=["uring", "aio"])
def aio(request: pytest.FixtureRequest) -> Iterator[FdSync]:
    a = open_fdsync(request.param)
    if a is None:  # (a sandbox refusing it; the next choice or the WAL thread is used)
        pytest.skip(f"{request.param} fdsync is not available on this machine")
    assert isinstance(a, UringSync if request.param == "uring" else AioSync)
    yield a
    a.close()


def test_choice(tmp_path: Path) -> None:
    assert open_fdsync("0") is None
    # (probed on the WAL's own file system, leaving nothing there)
    best, aio = open_fdsync(probe_dir=str(tmp_path)), AioSync.open()
    assert list(tmp_path.iterdir()) == []
    if best is not None:
        assert isinstance(best, AioSync if aio is not None else UringSync)
        best.close()
    if aio is not None:
        aio.close()


def wait_reap(aio: FdSync) -> list[tuple[int, int]]:
    """Block on the eventfd (as the event loop does) until something completed."""
    done: list[tuple[int, int]] = []
    while not done:
        ready, _, _ = select.select([aio.fileno()], [], [], 10)
        assert ready, "no fdsync completion within 10 s"
        done = aio.reap()
    return done


def save_async(wal: WAL, aio: FdSync, hs: HardState | None, first: int, n: int,
               token: int) -> None:
    begun = wal.save_begin(hs, entries(first, n), lambda fd: aio.submit(fd, token))
    assert begun is True
    assert wait_reap(aio) == [(token, 0)]
    wal.save_end(0, 0.001)


def test_fdsync_completes_on_the_eventfd(tmp_path: Path, aio: FdSync) -> None:
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.write(fd, b"x" * 100)
        aio.submit(fd, 41)
        aio.submit(fd, 42)
        assert aio.in_flight == 2
        done: list[tuple[int, int]] = []
        while len(done) < 2:
            done += wait_reap(aio)
        assert sorted(done) == [(41, 0), (42, 0)]
        assert aio.in_flight == 0
        assert aio.reap() == []  # nothing left, never blocks
    finally:
        os.close(fd)


def test_failed_submit_raises(aio: FdSync) -> None:
    r, w = os.pipe()  # (a pipe cannot be fdatasynced: refused at submit or on completion)
    try:
        try:
            aio.submit(r, 7)
        except OSError:
            return
        assert wait_reap(aio)[0][1] != 0
    finally:
        os.close(r)
        os.close(w)


def test_async_saves_interleave_with_sync_saves_and_survive_reopen(
        tmp_path: Path, aio: FdSync) -> None:
    d = str(tmp_path / "wal")
    wal = WAL.create(d, b"meta")
    save_async(wal, aio, HardState(1, 1, 0), 1, 3, 1)
    wal.save(HardState(1, 1, 2), entries(4, 2))
    save_async(wal, aio, HardState(1, 1, 5), 6, 4, 2)
    # A commit-only change needs no fdatasync: written at once, nothing to wait for.
    assert wal.save_begin(HardState(1, 1, 9), [], lambda fd: aio.submit(fd, 3)) is False
    assert aio.in_flight == 0
    wal.close()
    wal, state, ents = reopen(d)
    assert state == HardState(1, 1, 9)
    assert ents == entries(1, 9)
    wal.close()


def test_busy_wal_is_not_waited_for(tmp_path: Path, aio: FdSync) -> None:
    """While another thread holds the WAL (a snapshot marker's fdatasync), save_begin
    returns None at once instead of blocking the event loop on the lock."""
    wal = WAL.create(str(tmp_path / "wal"), b"")
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with wal._lock:
            held.set()
            release.wait(10)

    t = threading.Thread(target=holder)
    t.start()
    try:
        assert held.wait(10)
        assert wal.save_begin(None, entries(1, 1), lambda fd: aio.submit(fd, 1)) is None
        assert aio.in_flight == 0
    finally:
        release.set()
        t.join()
    save_async(wal, aio, None, 1, 1, 2)
    assert wal.last_index == 1
    wal.close()


def test_failed_fdatasync_fails_the_wal(tmp_path: Path, aio: FdSync) -> None:
    d = str(tmp_path / "wal")
    wal = WAL.create(d, b"")
    assert wal.save_begin(None, entries(1, 1), lambda fd: aio.submit(fd, 1))
    wait_reap(aio)
    with pytest.raises(OSError):
        wal.save_end(5, 0.001)  # (as the kernel reports EIO)
    with pytest.raises(WALError, match="earlier write failed"):
        wal.save(None, entries(2, 1))
    with pytest.raises(WALError):
        wal.save_begin(None, entries(2, 1), lambda fd: aio.submit(fd, 2))
    assert aio.in_flight == 0
    wal.close()


def test_submit_failure_fails_the_wal(tmp_path: Path) -> None:
    wal = WAL.create(str(tmp_path / "wal"), b"")

    def refuse(fd: int) -> None:
        raise OSError(11, "refused")

    with pytest.raises(OSError):
        wal.save_begin(None, entries(1, 1), refuse)
    with pytest.raises(WALError):
        wal.save(None, entries(2, 1))
    wal.close()


def test_full_segment_is_cut_by_cut_if_full(tmp_path: Path, aio: FdSync) -> None:
    d = str(tmp_path / "wal")
    wal = WAL.create(d, b"", segment_size=4096)
    token = 0
    while not wal.full:
        token += 1
        save_async(wal, aio, None, wal.last_index + 1, 2, token)
    assert len(wal.segments) == 1
    wal.cut_if_full()
    assert len(wal.segments) == 2 and not wal.full
    last = write_log(wal, 2, 2)
    wal.close()
    wal, _, ents = reopen(d, segment_size=4096)
    assert ents == entries(1, last)
    wal.close()


def test_unsafe_no_fsync_has_nothing_to_wait_for(tmp_path: Path) -> None:
    wal = WAL.create(str(tmp_path / "wal"), b"", fsync=False)
    started: list[int] = []
    assert wal.save_begin(None, entries(1, 1), started.append) is False
    assert started == []
    wal.close()
