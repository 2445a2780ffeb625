"""The member's maintenance operations, as the API layer calls them: alarms and quota,
whole-backend hash, HashKV, defragmentation and backend snapshots.

Reads that run off the event loop thread (hashes, snapshot copies, and any other layer's
reads in worker threads) hold `reading()` (the backend's ReadGate); reads on the loop
thread are synchronous and need nothing. Defragmentation pauses the apply path
(Applier.exclusive) for its whole run, copies the backend compactly while reads go on,
then swaps the file in on the loop thread once the off-loop readers have drained: writes
wait, nothing fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, BinaryIO

import lmdb
from grpc import StatusCode

from petcd.errors import EtcdError
from petcd.mvcc.backend import Backend
from petcd.mvcc.kvstore import ReadTxn
from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.server.alarm import ALARM, NOSPACE, Alarms, alarm_text
from petcd.snapshot.etcd import export_bolt

if TYPE_CHECKING:
    from petcd.server.node import Node

log = logging.getLogger("petcd.maintenance")


class Maintenance:
    def __init__(self, node: Node) -> None:
        self._node = node
        self._backend = node.backend
        self._store = node.store
        self._applier = node.applier
        self.gate = node.backend.readers
        self.alarms = Alarms(node.backend, node.applier, node.opts.quota_backend_bytes,
                             self._quota_exceeded_on_apply)
        self._loop: asyncio.AbstractEventLoop | None = None
        with contextlib.suppress(RuntimeError):
            self._loop = asyncio.get_running_loop()
        self._raising_nospace: asyncio.Future[object] | None = None
        self._defrag: asyncio.Task[None] | None = None
        self._pool = ThreadPoolExecutor(2, thread_name_prefix="petcd-maint")
        # The loop is known once the log starts (leader listeners run on it at start).
        node.add_leader_listener(self._on_leader)

    def _on_leader(self, leader_id: int, term: int) -> None:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()

    def reading(self) -> contextlib.AbstractContextManager[None]:
        """Hold while reading the backend from a thread other than the event loop's
        (defragmentation waits for such reads before it swaps the file)."""
        return self.gate.reading()

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    # -- alarms and quota

    def errors(self) -> list[str]:
        """StatusResponse.errors' alarm part, worded as etcd words it."""
        return [alarm_text(m) for m in self.alarms.store.active]

    def unhealthy_alarms(self, excluded: set[str]) -> list[rpc.AlarmMember]:
        """Active alarms that make /health answer false (?exclude=NAME drops a type)."""
        return [m for m in self.alarms.store.active
                if rpc.AlarmType.Name(m.alarm) not in excluded]

    def quota_available(self, cost: int) -> bool:
        return self.alarms.quota.available(cost)

    def quota_fits_surely(self, upper_bound: int) -> bool:
        """True when even `upper_bound` fits: lets a handler skip computing the cost."""
        return self.alarms.quota.available(upper_bound)

    async def raise_nospace(self) -> None:
        """Propose this member's NOSPACE alarm and wait until it is applied (what etcd
        does before refusing a request over quota). Concurrent callers share one."""
        fut = self._raising_nospace
        if fut is None or fut.done():
            fut = self._raising_nospace = self._propose_nospace()
        await asyncio.shield(fut)

    def _propose_nospace(self) -> asyncio.Future[object]:
        req = rpc.AlarmRequest(action=rpc.AlarmRequest.ACTIVATE, memberID=self._node.member_id,
                               alarm=NOSPACE)
        return self._node.propose(ALARM, req.SerializeToString(), req)

    def _quota_exceeded_on_apply(self) -> None:
        """Apply thread: an applied request went past the quota; raise the alarm."""
        loop = self._loop
        if loop is None:
            return
        loop.call_soon_threadsafe(self._raise_nospace_soon)

    def _raise_nospace_soon(self) -> None:
        if self.alarms.nospace:
            return
        fut = self._raising_nospace
        if fut is None or fut.done():
            log.warning("applied request exceeded the backend quota (%s bytes); raising "
                        "the NOSPACE alarm", self.alarms.quota.limit)
            self._raising_nospace = self._propose_nospace()

    # -- hashes

    async def hash(self) -> tuple[int, int]:
        """(CRC-32 of the whole backend, current revision): Maintenance.Hash."""
        view, reader = await self._off_loop_view()

        def run() -> tuple[int, int]:
            started = time.monotonic()
            try:
                with view:
                    return self._backend.hash(view.txn), view.rev
            finally:
                reader.__exit__(None, None, None)
                self._node.metrics.hash_duration.observe(time.monotonic() - started)
        return await asyncio.get_running_loop().run_in_executor(self._pool, run)

    async def _off_loop_view(self) -> tuple[ReadTxn, contextlib.AbstractContextManager[None]]:
        """A view of exactly the applied state (committed first) for a worker thread, and
        the gate it holds (entered here: only holders of `exclusive` close the gate, so
        this cannot block; and no file swap can come between the two)."""
        async with self._applier.exclusive:
            view = self._store.read_snapshot()
            reader = self.gate.reading()
            reader.__enter__()
        return view, reader

    async def hash_kv(self, revision: int) -> tuple[int, int, int, int]:
        """(hash, current revision, compact revision, hashed revision) for HashKV;
        raises COMPACTED / FUTURE_REV as etcd does."""
        view, reader = await self._off_loop_view()

        def run() -> tuple[int, int, int, int]:
            started = time.monotonic()
            try:
                h, current, compact = self._store.hash_kv(revision, view)
            finally:
                reader.__exit__(None, None, None)
                self._node.metrics.hash_rev_duration.observe(time.monotonic() - started)
            return h, current, compact, revision if revision > 0 else current
        return await asyncio.get_running_loop().run_in_executor(self._pool, run)

    # -- defragment

    @property
    def defragmenting(self) -> bool:
        return self._defrag is not None and not self._defrag.done()

    async def defragment(self) -> None:
        """Rewrite the backend compactly. Runs to the end even if the caller goes away
        (it holds the apply path); concurrent calls share one run."""
        task = self._defrag
        if task is None or task.done():
            task = self._defrag = asyncio.get_running_loop().create_task(self._defragment())
        await asyncio.shield(task)

    async def _defragment(self) -> None:
        loop = asyncio.get_running_loop()
        backend, applier, pool = self._backend, self._applier, self._pool
        started = time.monotonic()
        before = backend.size()
        log.info("starting defragment (db size %d)", before)
        # Let the batch being applied finish, then hold the apply path (a snapshot from
        # the leader cannot replace the file meanwhile either).
        metrics = self._node.metrics
        async with applier.paused():
            metrics.defrag_inflight.set(1)
            try:
                await loop.run_in_executor(pool, backend.defragment_copy)
                await loop.run_in_executor(pool, self.gate.close)
                try:
                    # On the loop thread: no read of the loop's is in progress here.
                    backend.defragment_swap()
                finally:
                    self.gate.open()
            except Exception as e:
                log.error("defragment failed: %s", e)
                if not _env_open(backend):
                    # The old file is closed and the new one did not open: nothing can be
                    # served any more; stop as etcd stops on a backend failure.
                    self._node.fatal(e)
                # gRPC-Go answers a plain error with code Unknown and its text.
                raise EtcdError(StatusCode.UNKNOWN, f"defragment failed: {e}") from e
            finally:
                metrics.defrag_inflight.set(0)
        took = time.monotonic() - started
        metrics.defrag_duration.observe(took)
        log.info("finished defragment in %.3fs (db size %d -> %d)", took, before,
                 backend.size())

    # -- snapshot

    async def snapshot(self) -> tuple[BinaryIO, int]:
        """The backend as an etcd snapshot database (bbolt, so etcdctl and etcd can read
        and restore it) in an unnamed temporary file positioned at its start, and its
        size. One LMDB read transaction: the state of one committed batch. The caller
        closes the file."""
        snap_dir = os.path.dirname(self._backend.path) or "."
        tmp = tempfile.TemporaryFile(dir=snap_dir)  # noqa: SIM115 - handed to the caller

        # Taken here, on the applying thread with the apply path held: everything applied
        # is committed first, the gate is entered before any swap could come, and the
        # worker reads exactly that state whatever is applied meanwhile.
        async with self._applier.exclusive:
            txn = self._backend.read_snapshot()
            reader = self.gate.reading()
            reader.__enter__()

        def copy() -> None:
            started = time.monotonic()
            try:
                export_bolt(self._backend, self._node.store, tmp, txn=txn)
            finally:
                txn.abort()
                reader.__exit__(None, None, None)
            self._node.metrics.backend_snapshot_duration.observe(time.monotonic() - started)
        try:
            await asyncio.get_running_loop().run_in_executor(self._pool, copy)
            size = os.fstat(tmp.fileno()).st_size
            tmp.seek(0)
        except BaseException:
            tmp.close()
            raise
        return tmp, size


def _env_open(backend: Backend) -> bool:
    try:
        backend.env.info()
    except lmdb.Error:
        return False
    return True
