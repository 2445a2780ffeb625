"""The Ready loop's WAL writer (server/raftnode/walwriter.py): native AIO fdatasync
completing on the event loop, and the WAL thread as fallback. The loop never waits for
the disk: other callbacks (reads, heartbeats, lease keep-alives) run while a save is
under way, also when the WAL is busy on the thread."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from petcd.raft.types import Entry, EntryType, HardState
from petcd.server.raftnode.walwriter import WalWriter
from petcd.server.worker import Worker
from petcd.wal.storage import MemberStorage


def ents(first: int, n: int) -> list[Entry]:
    return [Entry(1, i, EntryType.NORMAL, b"x%d" % i) for i in range(first, first + n)]


def reopened(data_dir: Path) -> tuple[HardState, list[Entry]]:
    storage, rec = MemberStorage.restore(str(data_dir))
    storage.close()
    return rec.hard_state, rec.entries


async def ticks_while(pending: asyncio.Future[object] | asyncio.Task[object]) -> int:
    """Loop turns that ran while `pending` was not done."""
    n = 0
    while not pending.done():
        n += 1
        await asyncio.sleep(0)
    return n


def run_writer(tmp_path: Path, fdsync: str, body: object, streak: int = 16) -> None:
    async def main() -> None:
        storage = MemberStorage.create(str(tmp_path), b"meta")
        thread = Worker("test-wal")
        writer = WalWriter(storage, thread, fdsync=fdsync, streak=streak)
        writer.start()
        try:
            await body(storage, thread, writer)  # type: ignore[operator]
        finally:
            writer.close()
            thread.shutdown()
            storage.close()
    asyncio.run(main())


@pytest.mark.parametrize("fdsync", ["uring", "aio", "0"])
def test_saves_are_durable_and_in_order(tmp_path: Path, fdsync: str) -> None:
    async def body(storage: MemberStorage, thread: Worker, writer: WalWriter) -> None:
        if fdsync != "0" and writer.uses_thread:
            pytest.skip(f"{fdsync} fdsync is not available on this machine")
        assert writer.uses_thread is (fdsync == "0")
        await writer.save(HardState(1, 1, 0), ents(1, 2), None)
        await writer.save(HardState(1, 1, 2), ents(3, 1), None)
        await writer.save(HardState(1, 1, 3), [], None)  # commit only: nothing to wait for
        # A snapshot marker and the thread's own jobs stay in order with the saves.
        await thread.run(storage.wal.save, None, ents(4, 1))
        await writer.save(None, ents(5, 3), None)
    run_writer(tmp_path, fdsync, body)
    state, entries = reopened(tmp_path)
    assert state == HardState(1, 1, 3)
    assert entries == ents(1, 7)


@pytest.mark.parametrize("fdsync", ["uring", "aio"])
def test_async_save_leaves_the_loop_running(tmp_path: Path, fdsync: str) -> None:
    async def body(storage: MemberStorage, thread: Worker, writer: WalWriter) -> None:
        if writer.uses_thread:
            pytest.skip(f"{fdsync} fdsync is not available on this machine")
        for i in range(1, 21):
            task = asyncio.ensure_future(writer.save(None, ents(i, 1), None))
            # The frame is written, its fdatasync under way in the kernel (not on
            # this thread), and the loop keeps turning until it completes.
            assert writer.syncing == 1
            await ticks_while(task)
            await task
            assert writer.syncing == 0
    run_writer(tmp_path, fdsync, body)
    assert reopened(tmp_path)[1] == ents(1, 20)


@pytest.mark.parametrize("fdsync", ["uring", "aio", "0"])
def test_busy_wal_does_not_block_the_loop(tmp_path: Path, fdsync: str) -> None:
    """The WAL held by the thread for as long as the test likes (as a snapshot marker's
    fdatasync on a slow disk would): save() still returns at once, the loop keeps
    serving, and the save completes, in order, once the WAL is free."""
    async def body(storage: MemberStorage, thread: Worker, writer: WalWriter) -> None:
        await writer.save(None, ents(1, 1), None)
        held, release = threading.Event(), threading.Event()

        def slow_job() -> None:
            with storage.wal._lock:
                held.set()
                release.wait(30)
            storage.wal.save(None, ents(2, 1))

        busy = thread.run(slow_job)
        await asyncio.get_running_loop().run_in_executor(None, held.wait, 30)
        save = asyncio.ensure_future(writer.save(None, ents(3, 1), None))
        turns = 0
        for _ in range(50):  # the loop turns (a heartbeat would be sent meanwhile)
            await asyncio.sleep(0.001)
            turns += 1
        assert not save.done() and turns == 50
        release.set()
        await busy
        await save
    run_writer(tmp_path, fdsync, body)
    assert reopened(tmp_path)[1] == ents(1, 3)


@pytest.mark.parametrize("fdsync", ["uring", "aio"])
def test_lone_saves_go_inline_only_while_the_disk_is_fast(tmp_path: Path, fdsync: str) -> None:
    """A lone save is synced on the loop thread once `streak` fdatasyncs in a row were
    fast; the first slow one (here: every one counts as slow from then on) sends the
    saves back to the asynchronous path, where the loop keeps turning during the
    fdatasync, until a new streak of fast ones."""
    async def body(storage: MemberStorage, thread: Worker, writer: WalWriter) -> None:
        if writer.uses_thread:
            pytest.skip(f"{fdsync} fdsync is not available on this machine")
        writer.fast = 3600.0  # (every fdatasync counts as fast, however busy the disk)
        index = 1
        for _ in range(3):  # not yet a streak: asynchronous
            task = asyncio.ensure_future(writer.save(None, ents(index, 1), None, True))
            index += 1
            assert writer.syncing == 1
            await task
        assert writer.inline_saves == 0
        # Not lone (other proposals wait): asynchronous however fast the disk.
        task = asyncio.ensure_future(writer.save(None, ents(index, 1), None))
        index += 1
        assert writer.syncing == 1
        await task
        for _ in range(5):  # lone, after a streak: done when save() returns
            await writer.save(None, ents(index, 1), None, True)
            index += 1
            assert writer.syncing == 0
        assert writer.inline_saves == 5
        writer.fast = 0.0  # the disk turns slow: the next inline fdatasync is too slow
        await writer.save(None, ents(index, 1), None, True)
        index += 1
        assert writer.inline_saves == 6
        for _ in range(2):  # back on the asynchronous path: the loop turns meanwhile
            task = asyncio.ensure_future(writer.save(None, ents(index, 1), None, True))
            index += 1
            assert writer.syncing == 1
            await ticks_while(task)
            await task
        assert writer.inline_saves == 6
        writer.fast = 3600.0
        for _ in range(4):  # a new streak (3 asynchronous), then inline again
            await writer.save(None, ents(index, 1), None, True)
            index += 1
        assert writer.inline_saves == 7
    run_writer(tmp_path, fdsync, body, streak=3)
    assert reopened(tmp_path)[1] == ents(1, 16)
