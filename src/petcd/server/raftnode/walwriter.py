"""How the Ready loop makes a Ready durable without blocking the event loop.

Two ways, behind one `await writer.save(...)`:

- asynchronous fdatasync (petcd.wal.fdsync: native AIO, else io_uring), the default
  where the kernel allows it: the WAL frame is written to the page cache here, on the
  loop thread (a few microseconds), and the kernel runs the fdatasync on its own worker,
  signalling an eventfd the event loop watches. No Python thread, so no thread wake-ups
  and GIL hand-overs on a lone write's path, and the loop keeps serving reads,
  heartbeats and lease keep-alives however slow the disk is.
- the WAL thread (petcd.server.worker): write and fdatasync there. Used where neither is
  available (or PETCD_WAL_AIO=0), for Readies carrying a snapshot, and whenever the
  WAL is busy on the thread (a snapshot marker, a segment cut), so the loop never waits
  for the WAL's lock.

A lone write (the caller says so: nothing else is waiting on the loop) is saved inline
instead: write and fdatasync right here, on the loop thread, as etcd's Raft loop does.
That saves the kernel worker's start and the eventfd wake-up and reap: ~40-60 us of a
lone put on a quiet machine, and far more on a busy one. The kernel's AIO fdatasync runs
on a worker bound to the submitting CPU, so when the CPUs are contended it waits for a
turn there (a lone put measured 1.4-3.9 ms that way at load 8, 0.63-0.75 ms inline).
The loop is blocked meanwhile, so it is done only while the disk is fast, judged by the
inline fdatasyncs alone (asynchronous ones also time the kernel worker's wait for a
CPU), less what the loop thread meanwhile waited in the run queue for a CPU (the
kernel's schedstat: on a busy machine a thread woken from its fdatasync may wait a
whole timer tick, 4 ms at HZ=250, which says nothing of the disk): when more than
SLOW_ALLOWED of the last WINDOW took FAST or longer, lone saves go asynchronous, and
one lone save per PROBE seconds is still synced inline to see whether the disk is fast
again (then the inline path is back). A disk turning slow
blocks the loop for a few fdatasyncs, then for one per PROBE seconds.

A lone voter's lone write may also be written with its fdatasync left for later
(`write_lone`): the disk write starts at once, the caller applies the entry meanwhile,
holding back everything others could see of it, and `finish` then syncs and publishes.

A lone voter's batches under concurrency may be pipelined (`save_piped`, see
raftnode/pipeline.py, off by default): the frame is written and its asynchronous
fdatasync started while the one before is still in flight, and a callback (no future, no
task wake-up) says when it completed. An fdatasync covers every frame written before it
started, so its completion makes all of them durable, whatever order completions come
in.

Either way the Ready's entries count as durable only once their fdatasync completed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence

from petcd.raft import Entry, HardState, Snapshot
from petcd.server.worker import Worker
from petcd.wal.fdsync import FdSync, open_fdsync
from petcd.wal.fileutil import start_writeback
from petcd.wal.storage import MemberStorage

log = logging.getLogger(__name__)

# Seconds: an inline fdatasync this quick counts as fast.
# PETCD_WAL_INLINE_FAST_MS sets it (0: never inline; tests use a large one to force it).
FAST = float(os.environ.get("PETCD_WAL_INLINE_FAST_MS", "2")) / 1000
WINDOW = 16  # the last inline fdatasyncs judged
SLOW_ALLOWED = 4  # of WINDOW that may be slow while lone saves stay inline
PROBE = 1.0  # seconds between inline tries while lone saves go asynchronous
# write_lone (the apply of a lone voter's lone write overlapping its disk write):
# PETCD_WAL_OVERLAP=0 turns it off (for A/B runs).
OVERLAP = os.environ.get("PETCD_WAL_OVERLAP", "1") != "0"


class WalWriter:
    def __init__(self, storage: MemberStorage, thread: Worker, *,
                 fdsync: str | None = None, fast: float = FAST,
                 window: int = WINDOW, slow_allowed: int = SLOW_ALLOWED,
                 probe: float = PROBE) -> None:
        """fdsync: "aio", "uring" or "0" (the thread only); default: PETCD_WAL_AIO, else
        the best available (petcd.wal.fdsync). fast, window, slow_allowed, probe: when a
        lone save is synced inline (see the module's docstring)."""
        self._storage = storage
        self._thread = thread
        self._fdsync: FdSync | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # token -> what to call with the errno (0: fine) once its fdatasync completed
        self._waiting: dict[int, Callable[[int], object]] = {}
        self._next_token = 1
        self._choice = fdsync
        self.fast = fast
        self._slow: deque[bool] = deque(maxlen=window)  # the last inline ones: slow?
        self._slow_allowed = slow_allowed
        self._probe = probe
        self._probe_at = 0.0  # while lone saves go asynchronous: the next inline try
        self.inline_saves = 0  # (for tests and benchmarks)
        # (start, wall time, run-queue wait) of the last LoneSave's fdatasync, not yet
        # settle_lone()d
        self._lone_synced: tuple[float, float, float] | None = None
        # /proc/thread-self/schedstat of the loop thread (opened by start()), or -1
        self._schedstat = -1

    @property
    def uses_thread(self) -> bool:
        """Whether saves run on the WAL thread (which then wants the GIL meanwhile)."""
        return self._fdsync is None

    @property
    def syncing(self) -> int:
        """Asynchronous fdatasyncs under way."""
        return len(self._waiting)

    def start(self) -> None:
        """On the event loop: set up the asynchronous fdatasync if wanted and available."""
        fs = open_fdsync(self._choice, self._storage.wal.dir)
        if fs is not None and self._schedstat < 0:
            # (this thread's: the one inline fdatasyncs run on; none: wall time alone)
            with contextlib.suppress(OSError):
                self._schedstat = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
        if fs is None:
            log.info("wal: neither native AIO nor io_uring fdatasync available; "
                     "fdatasync on a thread")
            return
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(fs.fileno(), self._reap)
        self._fdsync = fs

    def can_inline(self) -> bool:
        """Whether a lone save now would be synced inline (unless the WAL is busy on
        its thread)."""
        return self._fdsync is not None and self.fast > 0 and not self._waiting and \
            (not self._probe_at or time.monotonic() >= self._probe_at)

    def save(self, hard_state: HardState | None, entries: Sequence[Entry],
             snapshot: Snapshot | None, lone: bool = False) -> Awaitable[object]:
        """Persist one Ready: the write starts now; awaiting the result returns once what
        the Ready holds is durable. lone: nothing else waits on the loop, so a fast disk
        may be waited for right here (see the module's docstring)."""
        fs = self._fdsync
        if fs is not None and snapshot is None:
            wal = self._storage.wal
            if lone and self.can_inline():
                started = time.monotonic()
                queued = self.queued()
                synced = wal.save_begin(hard_state, entries, os.fdatasync)
                if synced is not None:  # (None: busy on the thread; go there)
                    if synced:
                        took = time.monotonic() - started
                        self._judge(took - self.queued_since(queued, took), started)
                        wal.save_end(0, took)
                        self.inline_saves += 1
                    return self._cut() if wal.full else _done()
            token = self._next_token
            started = time.monotonic()
            begun = wal.save_begin(hard_state, entries, lambda fd: fs.submit(fd, token))
            if begun:
                self._next_token = token + 1
                assert self._loop is not None
                fut: asyncio.Future[int] = self._loop.create_future()
                self._waiting[token] = functools.partial(_resolve, fut)
                return self._synced(fut, started)
            if begun is not None:  # nothing to wait for
                return self._cut() if wal.full else _done()
        return self._thread.run(self._storage.save, hard_state, entries, snapshot)

    def save_piped(self, hard_state: HardState | None, entries: Sequence[Entry],
                   done: Callable[[BaseException | None], object]) -> bool:
        """Write one Ready's frame and start its asynchronous fdatasync, not waiting for
        it: `done(None)` is called on the loop once it completed (the frame and every
        one written before it are durable), `done(error)` if it failed (nothing since
        the last completed one may be taken as durable). False, with nothing written:
        not now (no asynchronous fdatasync, the segment is full or the WAL busy on its
        thread): use save()."""
        fs = self._fdsync
        wal = self._storage.wal
        if fs is None or wal.full:
            return False
        token = self._next_token
        started = time.monotonic()
        begun = wal.save_begin(hard_state, entries, lambda fd: fs.submit(fd, token))
        if begun is None:
            return False  # (busy on the thread)
        if not begun:  # nothing to wait for (fsync off)
            done(None)
            return True
        self._next_token = token + 1

        def completed(error: int) -> None:
            try:
                wal.save_end(error, time.monotonic() - started)
            except BaseException as e:
                done(e)
                return
            done(None)
        self._waiting[token] = completed
        return True

    @property
    def full(self) -> bool:
        """The segment is full: `cut()` before the next save_piped()."""
        return self._storage.wal.full

    async def cut(self) -> None:
        """Start the next segment (once the saves written to this one are durable)."""
        await self._cut()

    def write_lone(self, hard_state: HardState | None,
                   entries: Sequence[Entry]) -> LoneSave | None:
        """A lone save (as save(..., lone=True) would sync inline) written now with its
        write-back started but not waited for: the caller's work until `finish()`
        overlaps the disk write. None: not now (use save())."""
        if not OVERLAP or not self.can_inline():
            return None
        wal = self._storage.wal
        written: list[int] = []

        def begin(fd: int) -> None:
            written.append(fd)
            start_writeback(fd)

        begun = wal.save_begin(hard_state, entries, begin)
        if begun is None:
            return None  # (busy on the thread)
        return LoneSave(self, written[0] if begun else -1)

    def settle_lone(self) -> None:
        """The bookkeeping of the last LoneSave's fdatasync (whether the disk is still
        fast; the WAL's sync histogram), done once its write was answered: a lone
        write's answer does not wait for it (the caller runs this after its turn)."""
        synced = self._lone_synced
        if synced is not None:
            self._lone_synced = None
            started, took, queued = synced
            self._judge(took - queued, started)
            self._storage.wal.save_end(0, took)

    def queued(self) -> float:
        """Seconds the loop thread has waited in the run queue for a CPU so far (0 if
        unknown): what of an inline fdatasync's wall time was not the disk's."""
        if self._schedstat < 0:
            return 0.0
        try:
            return int(os.pread(self._schedstat, 64, 0).split()[1]) / 1e9
        except (OSError, ValueError, IndexError):
            return 0.0

    def queued_since(self, before: float, took: float) -> float:
        """The loop thread's run-queue wait since queued() returned `before`, for an
        inline fdatasync of `took` seconds: read only when the sync was slow by its wall
        time (a fast one is judged fast whatever the wait, and the schedstat read, ~3 us,
        would delay the answer)."""
        return self.queued() - before if took >= self.fast else 0.0

    def _judge(self, took: float, now: float) -> None:
        """After an inline fdatasync that took `took` seconds (not counting the loop
        thread's waits for a CPU): keep syncing lone saves inline, or not (until a later
        try is fast)."""
        slow = took >= self.fast
        if self._probe_at:  # a try while lone saves go asynchronous
            if slow:
                self._probe_at = now + self._probe
            else:
                self._slow.clear()
                self._probe_at = 0.0
            return
        self._slow.append(slow)
        if slow and sum(self._slow) > self._slow_allowed:
            self._probe_at = now + self._probe

    async def _synced(self, fut: asyncio.Future[int], started: float) -> None:
        error = await fut
        took = time.monotonic() - started
        self._storage.wal.save_end(error, took)
        if self._storage.wal.full:
            await self._cut()

    async def _cut(self) -> None:
        """The segment is full: the next one is made on the thread (it fallocates and
        fsyncs), in order with the thread's other WAL work."""
        await self._thread.run(self._storage.wal.cut_if_full)

    def _reap(self) -> None:
        assert self._fdsync is not None
        for token, error in self._fdsync.reap():
            done = self._waiting.pop(token, None)
            if done is not None:
                done(error)

    def close(self) -> None:
        """After the Ready loop ended (nothing is awaiting a save)."""
        fs, self._fdsync = self._fdsync, None
        if self._schedstat >= 0:
            os.close(self._schedstat)
            self._schedstat = -1
        if fs is not None:
            assert self._loop is not None
            self._loop.remove_reader(fs.fileno())
            fs.close()


class LoneSave:
    """A write_lone() save: durable once finish() returned."""

    __slots__ = ("_fd", "_writer")

    def __init__(self, writer: WalWriter, fd: int) -> None:
        self._writer = writer
        self._fd = fd  # -1: nothing to sync (fsync off)

    def finish(self) -> Awaitable[object] | None:
        """fdatasync (raises if it fails); then None, or the segment cut to await.
        What the sync took is told later (WalWriter.settle_lone)."""
        writer = self._writer
        wal = writer._storage.wal
        if self._fd >= 0:
            if writer._lone_synced is not None:  # (two in one turn: never, normally)
                writer.settle_lone()
            started = time.monotonic()
            queued = writer.queued()
            wal.sync_written(self._fd)
            # (the wait: the write began earlier)
            took = time.monotonic() - started
            writer._lone_synced = (started, took, writer.queued_since(queued, took))
            writer.inline_saves += 1
        return writer._cut() if wal.full else None


def _resolve(fut: asyncio.Future[int], error: int) -> None:
    if not fut.done():  # (cancelled: its awaiter is gone)
        fut.set_result(error)


def _done() -> asyncio.Future[None]:
    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    fut.set_result(None)
    return fut
