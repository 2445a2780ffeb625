"""How the Ready loop makes a Ready durable without blocking the event loop.

Two ways, behind one `await writer.save(...)`:

- native AIO (petcd.wal.aio), the default where the kernel allows it: the WAL frame is
  written to the page cache here, on the loop thread (a few microseconds), and the
  kernel runs the fdatasync on its own worker, signalling an eventfd the event loop
  watches. No Python thread, so no thread wake-ups and GIL hand-overs on a lone write's
  path, and the loop keeps serving reads, heartbeats and lease keep-alives however slow
  the disk is.
- the WAL thread (petcd.server.worker): write and fdatasync there. Used where AIO is
  unavailable (or PETCD_WAL_AIO=0), for Readies carrying a snapshot, and whenever the
  WAL is busy on the thread (a snapshot marker, a segment cut), so the loop never waits
  for the WAL's lock.

Either way the Ready's entries count as durable only once their fdatasync completed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Sequence

from petcd.raft import Entry, HardState, Snapshot
from petcd.server.worker import Worker
from petcd.wal.aio import AioSync
from petcd.wal.storage import MemberStorage

log = logging.getLogger(__name__)


def aio_wanted() -> bool:
    return os.environ.get("PETCD_WAL_AIO", "1") != "0"


class WalWriter:
    def __init__(self, storage: MemberStorage, thread: Worker, *, use_aio: bool = True) -> None:
        self._storage = storage
        self._thread = thread
        self._aio: AioSync | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting: dict[int, asyncio.Future[int]] = {}
        self._next_token = 1
        self._use_aio = use_aio and aio_wanted()

    @property
    def uses_thread(self) -> bool:
        """Whether saves run on the WAL thread (which then wants the GIL meanwhile)."""
        return self._aio is None

    @property
    def syncing(self) -> int:
        """AIO fdatasyncs under way."""
        return len(self._waiting)

    def start(self) -> None:
        """On the event loop: set up AIO if wanted and available."""
        if not self._use_aio:
            return
        aio = AioSync.open()
        if aio is None:
            log.info("wal: native AIO fdatasync unavailable; fdatasync on a thread")
            return
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(aio.fileno(), self._reap)
        self._aio = aio

    def save(self, hard_state: HardState | None, entries: Sequence[Entry],
             snapshot: Snapshot | None) -> Awaitable[object]:
        """Persist one Ready: the write starts now; awaiting the result returns once what
        the Ready holds is durable."""
        aio = self._aio
        if aio is not None and snapshot is None:
            wal = self._storage.wal
            token = self._next_token
            started = time.monotonic()
            begun = wal.save_begin(hard_state, entries, lambda fd: aio.submit(fd, token))
            if begun:
                self._next_token = token + 1
                assert self._loop is not None
                fut: asyncio.Future[int] = self._loop.create_future()
                self._waiting[token] = fut
                return self._synced(fut, started)
            if begun is not None:  # nothing to wait for
                return self._cut() if wal.full else _done()
        return self._thread.run(self._storage.save, hard_state, entries, snapshot)

    async def _synced(self, fut: asyncio.Future[int], started: float) -> None:
        error = await fut
        self._storage.wal.save_end(error, time.monotonic() - started)
        if self._storage.wal.full:
            await self._cut()

    async def _cut(self) -> None:
        """The segment is full: the next one is made on the thread (it fallocates and
        fsyncs), in order with the thread's other WAL work."""
        await self._thread.run(self._storage.wal.cut_if_full)

    def _reap(self) -> None:
        assert self._aio is not None
        for token, error in self._aio.reap():
            fut = self._waiting.pop(token, None)
            if fut is not None and not fut.done():
                fut.set_result(error)

    def close(self) -> None:
        """After the Ready loop ended (nothing is awaiting a save)."""
        aio, self._aio = self._aio, None
        if aio is not None:
            assert self._loop is not None
            self._loop.remove_reader(aio.fileno())
            aio.close()


def _done() -> asyncio.Future[None]:
    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    fut.set_result(None)
    return fut
