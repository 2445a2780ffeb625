"""A lone voter's lone KV write is applied while its WAL frame is written to the disk
(ReadyLoop._finish_overlapped): the apply happens before the fdatasync, but nothing of
it is seen (no watcher told, no caller answered, no backend commit) until the entry is
durable; a failed sync leaves nothing readable. In-process members (tests/server/inproc)
with real WAL files and real fdatasyncs; the sync is observed (and, for the failure,
made to fail) by wrapping the WAL's own method."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from petcd.mvcc.backend import BackendFailed
from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.server.proposal import PUT

from .inproc import Cluster, run


async def _parked(c: Cluster) -> Any:
    """The lone member, its disk taken as fast (inline saves), its loop parked."""
    node = c.nodes[0]
    d = node._log
    d.wal_writer.fast = 1000.0
    d.wal_writer._probe_at = 0.0
    req = rpc.PutRequest(key=b"warm", value=b"v")
    await node.propose(PUT, req.SerializeToString(), req)
    await _settled(node)
    return node


async def _settled(node: Any) -> None:
    """Until the Ready loop is parked, the WAL idle and no backend commit in flight (what
    the path needs: a busy machine may leave start-up work on the WAL thread for a
    while)."""
    d = node._log
    while d.ready_loop._waiter is None or d.ready_loop._woken or d.wal_writer.syncing or \
            d.ready_loop._unadvanced is not None or \
            not d.wal_writer.can_inline() or d.storage.wal._lock.locked() or \
            node.backend.committing:
        await asyncio.sleep(0.01)


def test_applied_during_the_sync_seen_only_after_it(tmp_path: Path) -> None:
    async def body(c: Cluster) -> None:
        node = await _parked(c)
        d = node._log
        wal = d.storage.wal
        log: list[Any] = []
        real = wal.sync_written

        def sync_written(fd: int) -> None:
            pending = list(d.proposals.deadlines.values())
            log.append(("sync", d.applier.applied_index, [p.future.done() for p in pending]))
            real(fd)
            log.append(("synced",))

        wal.sync_written = sync_written
        node.applier.add_commit_listener(lambda events, rev: log.append(("told", rev)))
        req = rpc.PutRequest(key=b"k", value=b"1")
        for _ in range(50):  # (until the path is taken: see _settled)
            await _settled(node)
            log.clear()
            applied = d.applier.applied_index
            commits = node.backend.uncommitted
            fut = node.propose(PUT, req.SerializeToString(), req)
            if log and log[0][0] == "sync":
                break
            await fut
        assert fut.done()  # (durable, applied and answered inside propose())
        resp = fut.result()
        assert isinstance(resp, rpc.PutResponse)
        assert log == [("sync", applied + 1, [False]), ("synced",),
                       ("told", resp.header.revision)]
        assert d.ready_loop.durable == d.applier.applied_index == applied + 1
        assert node.backend.uncommitted == commits + 1  # (committed later, in a batch)
        assert node.range(rpc.RangeRequest(key=b"k")).kvs[0].value == b"1"

        # A batch that would reach the backend's commit limit (and so commit the backend)
        # is applied only after the sync, as before.
        for _ in range(50):
            await _settled(node)
            node.backend.batch_limit = node.backend.uncommitted + 1
            log.clear()
            applied = d.applier.applied_index
            fut = node.propose(PUT, req.SerializeToString(), req)
            if log and log[0][0] == "sync":
                break
            await fut
        resp = await fut
        assert log == [("sync", applied, [False]), ("synced",), ("told", resp.header.revision)]
        assert node.backend.uncommitted == 0
    run(body, tmp_path, size=1, unsafe_no_fsync=False)


def test_a_failed_sync_leaves_nothing_seen(tmp_path: Path) -> None:
    async def body(c: Cluster) -> None:
        node = await _parked(c)
        d = node._log
        wal = d.storage.wal
        told: list[int] = []
        node.applier.add_commit_listener(lambda events, rev: told.append(rev))

        failed: list[int] = []

        def sync_written(fd: int) -> None:
            failed.append(fd)
            raise OSError(5, "injected: the disk failed the fdatasync")

        wal.sync_written = sync_written
        for i in range(50):  # (until the path is taken: see _settled)
            await _settled(node)
            req = rpc.PutRequest(key=b"k%d" % i, value=b"1")
            result = await node.propose(PUT, req.SerializeToString(), req)
            if failed:
                break
            told.clear()
        assert not isinstance(result, rpc.PutResponse)  # (the member stopped: STOPPED)
        assert told == []
        with pytest.raises(BackendFailed):
            node.range(rpc.RangeRequest(key=req.key))
    run(body, tmp_path, size=1, unsafe_no_fsync=False)


def test_advance_and_sync_bookkeeping_come_after_the_answer(tmp_path: Path) -> None:
    """What the answer need not wait for (advance(), the disk-speed judge, the sync
    histogram) runs at the start of the next loop turn (ReadyLoop._new_turn): when
    propose() returns answered, the Ready is still outstanding and the loop not
    parked; a second write made in that same turn goes to the loop, which handles it
    only after the advance (a ready() before it would fail the member); and a third,
    in a later turn, goes inline again."""
    async def body(c: Cluster) -> None:
        node = await _parked(c)
        d = node._log
        rl = d.ready_loop
        writer = d.wal_writer
        observed: list[float] = []
        real_observer = d.storage.wal.fsync_observer

        def observer(took: float) -> None:
            observed.append(took)
            if real_observer is not None:
                real_observer(took)

        d.storage.wal.fsync_observer = observer
        for i in range(50):  # (until the path is taken: see _settled)
            await _settled(node)
            observed.clear()
            saves = writer.inline_saves
            req = rpc.PutRequest(key=b"a%d" % i, value=b"1")
            fut = node.propose(PUT, req.SerializeToString(), req)
            if fut.done() and writer.inline_saves == saves + 1:
                break
            await fut
        assert isinstance(fut.result(), rpc.PutResponse)
        # Answered; the rest is left for the next turn.
        assert rl._unadvanced is not None and not rl._parked()
        assert writer._lone_synced is not None and observed == []
        # A write in the same turn: to the loop (not inline), answered after the advance.
        req2 = rpc.PutRequest(key=b"b", value=b"2")
        fut2 = node.propose(PUT, req2.SerializeToString(), req2)
        assert not fut2.done()
        await asyncio.sleep(0)  # (the next turn: _new_turn first)
        assert rl._unadvanced is None and writer._lone_synced is None
        assert observed  # (the first write's sync; the loop may have synced the second)
        resp2 = await fut2
        assert isinstance(resp2, rpc.PutResponse)
        assert resp2.header.revision == fut.result().header.revision + 1
        assert not d.stopped
        # A later turn: inline again, and everything applied is what Raft applied.
        await _settled(node)
        assert d.raw.status().applied == d.applier.applied_index == rl.durable
        req3 = rpc.PutRequest(key=b"c", value=b"3")
        fut3 = node.propose(PUT, req3.SerializeToString(), req3)
        await fut3
        await _settled(node)  # (the next turn: advanced)
        assert node.range(rpc.RangeRequest(key=b"c")).kvs[0].value == b"3"
        assert d.raw.status().applied == d.applier.applied_index
    run(body, tmp_path, size=1, unsafe_no_fsync=False)
