"""The apply queue: committed entries the Ready loop handed out, applied in log order on
the loop thread (where reads of the applied state run too, so no read sees half a batch).
A compaction's physical part runs here too, in short steps between the batches.

All queued batches go into one Applier.apply (one LMDB write transaction), so applying
batch N overlaps writing the WAL for batch N+1. The backend commits what was applied at
most --backend-batch-interval later (and at once after --backend-batch-limit operations).
That interval's commit runs on the backend's thread (Backend.commit_soon) when the
backend has one: the loop goes on reading, proposing and answering meanwhile, and the
next batch is applied once the commit has ended (a read in that window waits for it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable

from petcd import errors
from petcd.mvcc.backend import Backend
from petcd.pb.internalpb.internal_pb2 import InternalRequest
from petcd.server.apply import Applier
from petcd.server.metrics import Metrics
from petcd.server.proposal import Committed, Result
from petcd.server.raftnode.proposals import Pending

log = logging.getLogger(__name__)

MAX_APPLY_BATCH = 8192  # entries per Applier.apply

Job = tuple[list[Committed], list[tuple[int, Pending]]]
# (entries, their results, our own proposals among them by position, forwarded ones
# by position and proposal id)
OnApplied = Callable[[list[Committed], list[Result], list[tuple[int, Pending]],
                      list[tuple[int, int]]], None]


class ApplyQueue:
    def __init__(self, member_id: int, applier: Applier, backend: Backend,
                 metrics: Metrics | None, commit_interval: float, on_applied: OnApplied,
                 on_failure: Callable[[BaseException, str], None],
                 stopping: Callable[[], bool], compaction_pause: float = 0.01) -> None:
        self._member_id = member_id
        self._applier = applier
        self._backend = backend
        self._metrics = metrics
        self._on_applied = on_applied
        self._on_failure = on_failure
        self._stopping = stopping
        self._jobs: deque[Job] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False  # set once nothing more will be pushed
        self._commit_interval = commit_interval
        self._commit_timer: asyncio.TimerHandle | None = None
        # --experimental-compaction-sleep-interval: between two compaction steps
        self._compaction_pause = compaction_pause
        self._next_step = 0.0  # loop time of the next compaction step
        # `physical` compactions answered once the old records are gone
        self._physical_waiters: list[tuple[asyncio.Future[Result], Result]] = []
        self._parked = False  # the task waits for work, holding none
        self._failed = False
        # Set by the end of a background commit of the backend (batches wait for it).
        self._committed = asyncio.Event()

    def push(self, batch: list[Committed], local: list[tuple[int, Pending]]) -> None:
        """Queue a batch; applied by the next flush()."""
        self._jobs.append((batch, local))
        self._idle.clear()

    def kick(self) -> None:
        """Look for work (a compaction left over from before a restart)."""
        self._wake.set()

    def close(self) -> None:
        """No more pushes: the loop ends once everything pushed is applied."""
        self._closing = True
        self._wake.set()

    def wait_physical(self, fut: asyncio.Future[Result], response: Result) -> None:
        self._physical_waiters.append((fut, response))

    async def run(self) -> None:
        try:
            while True:
                if self._jobs:
                    self._idle.clear()
                    if self._backend.committing:
                        self._committed.clear()  # (ended, it is settled, then set)
                        await self._committed.wait()
                    async with self._applier.exclusive:  # (free unless a defragment holds it)
                        self._apply_queued()
                elif self._closing:
                    self._idle.set()
                    return  # the Ready loop ended and everything it handed out is applied
                elif not self._compaction_due():
                    self._compaction_settled()
                    self._idle.set()  # (nothing runs on the apply thread now)
                    self._parked = True
                    try:
                        await self._sleep(self._compaction_wait())
                    finally:
                        self._parked = False
                    continue
                # Between write batches (or alone, without writes): one step of a
                # compaction's physical part when it is due.
                if self._compaction_due():
                    self._idle.clear()
                    await self._compaction_step()
        except asyncio.CancelledError:
            raise
        except BaseException as e:
            self._failed = True
            self._on_failure(e, "applying committed entries failed")

    def flush(self, inline: bool = True) -> bool:
        """Get what was pushed applied: at once, on the caller's turn, while this loop's
        task is parked with nothing to do (saves waking it: one loop iteration and a
        task step per batch on a lone write's path), else by waking the task. The
        pusher (the Ready loop) calls it before it next waits for anything; with
        inline=False when it waits for the WAL thread, which should get the GIL while
        the task applies in the next iteration. True if it applied (and answered) here."""
        if not self._jobs:
            return False
        if inline and self._parked and not self._closing and not self._failed and \
                not self._backend.committing and not self._applier.exclusive.locked():
            try:
                self._apply_queued()
            except BaseException as e:
                self._failed = True
                self._on_failure(e, "applying committed entries failed")
                return False
            self._idle.set()
            if self._applier.compaction_pending:
                self._wake.set()  # the task runs its steps (it may be parked untimed)
            return True
        self._wake.set()
        return False

    def apply_held(self) -> HeldApply | None:
        """Apply what was pushed right now, as flush() would inline, while its WAL
        entries are still being synced: nothing of it is seen outside this synchronous
        turn until HeldApply.publish() (no commit listener told, no caller answered, no
        read released, no backend commit). None, with nothing applied: flush() later
        (it could not apply inline, a backend commit is in flight on its thread, or the
        batch could reach --backend-batch-limit and commit the backend before its
        entries are durable)."""
        jobs = self._jobs
        if not jobs or not self._parked or self._closing or self._failed or \
                self._backend.committing or \
                self._applier.exclusive.locked() or len(jobs) != 1 or \
                self._backend.uncommitted + len(jobs[0][0]) >= self._backend.batch_limit:
            return None
        entries, local = jobs.popleft()
        applier = self._applier
        applier.held = []
        try:
            results, forwarded = self._apply_batch(entries)
        except BaseException as e:
            applier.held = None
            self._failed = True
            self._on_failure(e, "applying committed entries failed")
            return None
        return HeldApply(self, entries, results, local, forwarded)

    def _apply_queued(self) -> None:
        """Everything queued (up to MAX_APPLY_BATCH entries) in one Applier batch, then
        answered."""
        jobs = self._jobs
        entries: list[Committed]
        local: list[tuple[int, Pending]]
        if len(jobs) == 1:  # (the usual case: one Ready's batch, taken as it is)
            entries, local = jobs.popleft()
        else:
            entries = []
            local = []
            while jobs and len(entries) < MAX_APPLY_BATCH:
                batch, mine = jobs.popleft()
                base = len(entries)
                entries.extend(batch)
                local.extend((base + i, p) for i, p in mine)
        results, forwarded = self._apply_batch(entries)
        self._on_applied(entries, results, local, forwarded)
        self._schedule_commit()

    async def _sleep(self, timeout: float | None) -> None:
        """Until something is pushed (or kicked), at most `timeout` seconds."""
        if timeout is None:
            await self._wake.wait()
        else:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
        self._wake.clear()

    def _apply_batch(self, entries: list[Committed]) -> tuple[list[Result], list[tuple[int, int]]]:
        """Decode what others proposed, then one Applier batch."""
        me = self._member_id
        forwarded: list[tuple[int, int]] = []
        applied = self._applier.applied_index
        parse = InternalRequest.FromString
        for pos, c in enumerate(entries):
            if c.request is None and c.data and c.index > applied:
                ir = parse(c.data)
                kind = ir.WhichOneof("request")
                if kind is None:
                    c.data = b""
                    continue
                c.kind = kind
                c.request = getattr(ir, kind)
                if ir.HasField("auth"):
                    c.stamp = (ir.auth.username, ir.auth.revision)
                if ir.origin == me:
                    forwarded.append((pos, ir.id))
        return self._applier.apply(entries), forwarded

    def _schedule_commit(self) -> None:
        if self._commit_timer is None and self._backend.uncommitted:
            self._commit_timer = asyncio.get_running_loop().call_later(
                self._commit_interval, self._commit_backend)

    def _commit_backend(self) -> None:
        """The batch interval is up: commit what was applied (one synced LMDB commit)."""
        self._commit_timer = None
        if self._applier.exclusive.locked():
            return  # paused: its holder committed, and nothing is applied meanwhile
        loop = asyncio.get_running_loop()
        try:
            self._backend.commit_soon(lambda: loop.call_soon_threadsafe(self._settle))
        except Exception as e:
            self._on_failure(e, "committing the backend failed")

    def _settle(self) -> None:
        """The background commit ended: take its outcome, let batches be applied again."""
        self._committed.set()
        self._wake.set()
        try:
            self._backend.settle()
        except Exception as e:
            self._failed = True
            self._on_failure(e, "committing the backend failed")

    # -- a compaction's physical part (etcd's compaction batches)

    def _compaction_due(self) -> bool:
        return self._applier.compaction_pending and not self._stopping() and \
            asyncio.get_running_loop().time() >= self._next_step

    def _compaction_wait(self) -> float | None:
        """Seconds until the next compaction step (None: no compaction under way)."""
        if not self._applier.compaction_pending or self._stopping():
            return None
        return max(0.0, self._next_step - asyncio.get_running_loop().time())

    async def _compaction_step(self) -> None:
        """Remove up to --experimental-compaction-batch-limit keys' old records, for at
        most a few milliseconds (Applier.compaction_step); the next step comes
        --experimental-compaction-sleep-interval later, so writes and reads flow between."""
        applier = self._applier
        async with applier.exclusive:
            applier.compaction_step()
        self._next_step = asyncio.get_running_loop().time() + self._compaction_pause
        self._schedule_commit()
        self._compaction_settled()

    def _compaction_settled(self) -> None:
        """Answer `physical` compactions once nothing is left."""
        pending = self._applier.compaction_pending
        if self._physical_waiters and not pending:
            for fut, resp in self._physical_waiters:
                if not fut.done():
                    fut.set_result(resp)
            self._physical_waiters.clear()

    async def drain(self) -> None:
        """Until everything handed out is applied and the apply thread is idle."""
        while self._jobs or not self._idle.is_set():
            await self._idle.wait()

    def stop(self) -> None:
        """After the loop ended: no commit timer, and nobody left waiting."""
        for fut, _ in self._physical_waiters:
            if not fut.done():
                fut.set_result(errors.STOPPED())
        if self._commit_timer is not None:
            self._commit_timer.cancel()
            self._commit_timer = None


class HeldApply:
    """A batch ApplyQueue.apply_held() applied: published once its entries are durable,
    or discarded if their WAL sync failed."""

    __slots__ = ("_entries", "_forwarded", "_local", "_queue", "_results")

    def __init__(self, queue: ApplyQueue, entries: list[Committed], results: list[Result],
                 local: list[tuple[int, Pending]], forwarded: list[tuple[int, int]]) -> None:
        self._queue = queue
        self._entries = entries
        self._results = results
        self._local = local
        self._forwarded = forwarded

    def publish(self) -> None:
        """The entries are durable: tell the commit listeners (watchers), answer."""
        q = self._queue
        q._applier.notify_held()
        q._on_applied(self._entries, self._results, self._local, self._forwarded)
        q._schedule_commit()
        q._idle.set()
        if q._applier.compaction_pending:
            q._wake.set()

    def discard(self) -> None:
        """Their sync failed: what was applied must never be read (the member stops;
        a restart replays the WAL)."""
        q = self._queue
        q._applier.held = None
        q._failed = True
        q._backend.failed = "a write was applied whose WAL sync failed"
