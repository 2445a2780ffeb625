"""A single-member log with Raft's shape, used until the Raft driver lands: proposals
queue up, get consecutive indexes, and are applied in batches by one task (the only
writer). The synced LMDB commit of a batch is the durability point; callers are
answered only after it. A burst of N proposals costs one write txn and one sync.

The Raft driver will replace this class behind the same two calls: `propose` and
`read_barrier`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

from google.protobuf.message import Message

from petcd import errors
from petcd.errors import EtcdError
from petcd.server.apply import Applier, WaitPhysical
from petcd.server.metrics import Metrics
from petcd.server.proposal import Committed, Proposal, Result

log = logging.getLogger("petcd.log")


class LocalLog:
    def __init__(self, applier: Applier, member_id: int, *, max_batch: int = 4096,
                 on_fatal: Callable[[BaseException], None] | None = None,
                 metrics: Metrics | None = None) -> None:
        self._applier = applier
        self.leader_id = member_id  # a cluster of one leads itself
        self._leader_listeners: list[Callable[[int, int], None]] = []
        self._metrics = metrics
        self._max_batch = max_batch
        self._on_fatal = on_fatal
        self.term = max(applier.applied_term, 1)
        self.last_index = applier.applied_index  # last index handed out
        self._next_id = 1
        self._pending: list[Proposal] = []
        # Callers of `physical` compactions, answered when the old records are gone.
        self._physical_waiters: list[tuple[asyncio.Future[Result], Result]] = []
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        # LMDB's commit (and fsync) releases the GIL: applying on a thread lets the event
        # loop keep accepting requests, which become the next batch.
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="petcd-apply")

    @property
    def stopped(self) -> bool:
        return self._stopping

    @property
    def applied_index(self) -> int:
        return self._applier.applied_index

    def add_leader_listener(self, listener: Callable[[int, int], None]) -> None:
        self._leader_listeners.append(listener)

    def start(self) -> None:
        for listener in self._leader_listeners:
            listener(self.leader_id, self.term)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="apply-loop")
        if self._applier.compaction_pending:  # one was under way when we last stopped
            self._wake.set()

    def propose(self, kind: str, raw: bytes, request: Message) -> asyncio.Future[Result]:
        """Queue a mutation; the future resolves to its response or EtcdError."""
        fut: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        if self._stopping:
            fut.set_result(errors.STOPPED)
            return fut
        pid = self._next_id
        self._next_id = pid + 1
        self._pending.append(Proposal(pid, kind, raw, request, fut))
        self._wake.set()
        return fut

    def read_barrier(self) -> Awaitable[None] | None:
        """None when a read may run now. Here every acknowledged write is already
        committed and visible, so a linearizable read needs no wait; a Raft member
        will return a ReadIndex wait (one per batch of reads)."""
        return None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                first = self.last_index + 1
                entries = [Committed(first + i, self.term, p.kind, p.request)
                           for i, p in enumerate(batch)]
                self.last_index += len(batch)
                metrics = self._metrics
                if metrics is not None:
                    metrics.proposals_committed.set(self.last_index)
                    metrics.proposals_pending.set(len(self._pending))
                try:
                    results = await loop.run_in_executor(self._executor, self._applier.apply,
                                                         entries)
                except asyncio.CancelledError:
                    raise
                except BaseException as e:  # a failed batch write: fail stop, as etcd panics
                    log.critical("applying entries %d..%d failed", first, self.last_index,
                                 exc_info=e)
                    self._stopping = True
                    for p in [*batch, *self._pending]:
                        if not p.future.done():
                            p.future.set_result(errors.STOPPED)
                    self._pending.clear()
                    if self._on_fatal is not None:
                        self._on_fatal(e)
                    return
                if metrics is not None:  # before any caller hears of this batch
                    metrics.compaction_pending.set(int(self._applier.compaction_pending))
                failed = 0
                for p, r in zip(batch, results, strict=True):
                    if type(r) is EtcdError:
                        failed += 1
                    elif type(r) is WaitPhysical:
                        self._physical_waiters.append((p.future, r.response))
                        continue
                    if not p.future.done():  # the caller may have gone (cancelled)
                        p.future.set_result(r)
                if metrics is not None:
                    metrics.proposals_applied.set(self._applier.applied_index)
                    if failed:
                        metrics.proposals_failed.inc(failed)
            # Without writes to carry it, a compaction's physical part gets batches of its own.
            while self._applier.compaction_pending and not self._pending and not self._stopping:
                try:
                    await loop.run_in_executor(self._executor, self._applier.compaction_step)
                except asyncio.CancelledError:
                    raise
                except BaseException as e:
                    log.critical("physical compaction failed", exc_info=e)
                    break
            pending = self._applier.compaction_pending
            if self._metrics is not None:
                self._metrics.compaction_pending.set(int(pending))
            if self._physical_waiters and not pending:
                for fut, resp in self._physical_waiters:
                    if not fut.done():
                        fut.set_result(resp)
                self._physical_waiters.clear()
            if self._stopping:
                for fut, _ in self._physical_waiters:
                    if not fut.done():
                        fut.set_result(errors.STOPPED)
                return

    async def stop(self) -> None:
        """Refuse new proposals, apply those already queued, stop the loop."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._executor.shutdown(wait=True)
