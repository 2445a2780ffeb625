"""The lone voter's WAL pipeline: a batch's frame is written and its fdatasync started
while the batch before is still being synced, so under concurrency the disk goes from one
fdatasync to the next without waiting for the loop, and each batch's entries are applied
and answered the moment their fdatasync returns (in its completion callback).

The Ready loop (ready.py) hands a Ready here when `takes()` says so: a lone voter's plain
Ready (new entries, committed entries that are all normal ones, no messages, snapshot,
leader change or read states) that is not a lone write (nothing else in flight).
Such a Ready is persisted with WalWriter.save_piped, recorded in the in-memory Raft
storage and advanced at once, with its committed entries
held back (`_held`) until an fdatasync that started after their frame was written has
returned; only then are they handed out to the apply queue, in log order. So nothing is
applied, answered or seen before it is durable, as without the pipeline. Raft counts
them applied from the advance on; for a lone voter that only moves where its next
Ready's committed entries start (a conf change is never held: such a Ready is not
taken).

At most DEPTH fdatasyncs are in flight; the loop waits for one to return before it takes
another Ready (`wait()`). A Ready of any other kind first waits for every one in flight
(`drain()`), and the inline paths (propose_inline, receive_inline) are off meanwhile, so
the rest of the loop sees the log as it did before. PETCD_WAL_PIPELINE sets DEPTH (0,
the default: off, each batch's fdatasync is awaited before the next is written). Off by
default because at 64 clients it measured 0.94x the puts/s of off at load ~3.5 (its
closest to a quiet machine yet): the first request read after a big batch was written
goes alone with an fdatasync of its own, which costs the disk as much as a full one,
and batches alternate 1 and ~30 entries (bench/write_path.py --clients 64).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from petcd.raft import Entry, EntryType, Ready

if TYPE_CHECKING:
    from petcd.server.raftnode.driver import RaftDriver
    from petcd.server.raftnode.ready import ReadyLoop

DEPTH = int(os.environ.get("PETCD_WAL_PIPELINE", "0"))

_NORMAL = EntryType.NORMAL


class WalPipeline:
    def __init__(self, driver: RaftDriver, ready_loop: ReadyLoop,
                 hand_out: Callable[[list[Entry]], object],
                 record: Callable[[Ready], None]) -> None:
        """hand_out, record: the Ready loop's own (committed entries to the apply
        queue; a persisted Ready into the in-memory Raft storage)."""
        self._loop = ready_loop
        self._d = driver
        self._hand_out = hand_out
        self._record = record
        self.depth = DEPTH
        self.in_flight = 0  # fdatasyncs started here and not returned yet
        self.saves = 0  # Readies persisted here, and those while another was syncing
        self.overlapped = 0  # (tests, benchmarks)
        self._held: list[Entry] = []  # committed entries not durable yet, in log order
        self._waiter: asyncio.Future[None] | None = None  # wait()/drain() parked here
        # An fdatasync failed: the page cache can't be trusted, so nothing held is ever
        # taken as durable (a later fdatasync's success proves nothing; the member stops).
        self._failed = False
        self._saving = False  # within save_piped: a completion now waits for save()'s end
        self._done_now: tuple[BaseException | None] | None = None

    def takes(self, rd: Ready) -> bool:
        """Whether rd may be persisted without waiting (see the module's docstring)."""
        d = self._d
        if self.depth <= 0 or not rd.entries or rd.snapshot is not None or \
                rd.soft_state is not None or rd.messages or rd.read_states or \
                not rd.send_before_persist or d.raw.voters != (d.id,) or \
                d.wal_writer.uses_thread:
            return False
        proposals = d.proposals
        if len(rd.entries) == 1 and not proposals.queue and proposals.in_flight <= 1:
            # A lone write (nothing to overlap): the loop's own way, synced inline while
            # the disk is fast (quicker than any hand-off), as without the pipeline.
            return False
        return all(e.type == _NORMAL for e in rd.committed_entries)

    @property
    def full(self) -> bool:
        return self.in_flight >= max(1, self.depth)

    def save(self, rd: Ready) -> bool:
        """Persist rd (takes(rd) said yes, and not full): its frame written, its
        fdatasync started; recorded and advanced; its committed entries held until
        durable. False, with nothing done: the WAL cannot now (use the awaited way)."""
        d = self._d
        last = rd.entries[-1].index
        mark = len(self._held)
        self._held.extend(rd.committed_entries)
        self.in_flight += 1
        self._saving = True
        try:
            saved = d.wal_writer.save_piped(rd.hard_state, rd.entries,
                                            lambda err: self._synced(last, err))
        finally:
            self._saving = False
        if not saved:
            self.in_flight -= 1
            del self._held[mark:]
            return False
        self.saves += 1
        if self.in_flight > 1:
            self.overlapped += 1
        self._record(rd)
        d.raw.advance(rd)
        d.leadership.notify(self._loop.term)
        if self._done_now is not None:  # (durable at once: fsync off)
            done, self._done_now = self._done_now, None
            self._synced(last, done[0])
        return True

    def _synced(self, last: int, err: BaseException | None) -> None:
        """An fdatasync of ours returned (on the loop, from the WAL writer's reap): the
        entries up to `last` are durable; what is held up to there is handed out, then
        applied and answered here."""
        if self._saving:  # (within save_piped: after the Ready is recorded, in save())
            self._done_now = (err,)
            return
        self.in_flight -= 1
        loop = self._loop
        d = self._d
        if err is not None:
            self._failed = True
            self._held = []
            d.fail(err, "a WAL fdatasync failed")
        elif not self._failed:
            if last > loop.durable:
                loop.durable = last
            held = self._held
            if held and held[0].index <= last:
                n = len(held)
                if held[-1].index > last:
                    n = next(i for i, e in enumerate(held) if e.index > last)
                self._held = held[n:]
                try:
                    self._hand_out(held[:n])
                    d.apply_queue.flush()
                except BaseException as e:  # (in the WAL writer's reader callback)
                    self._failed = True
                    d.fail(e, "the Raft loop failed")
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def wait(self) -> None:
        """Until fewer than DEPTH fdatasyncs are in flight (or the member stops)."""
        while self.full and not self._d.stopped:
            await self._park()

    async def drain(self, stopping: bool = False) -> None:
        """Until every fdatasync started here returned and what it held is handed out
        (stopping: even though the member stops, so those callers get their answers)."""
        while self.in_flight and (stopping or not self._d.stopped):
            await self._park()

    async def _park(self) -> None:
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None
