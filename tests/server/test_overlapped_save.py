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
    d.wal_writer._fast = d.wal_writer._streak
    d.wal_writer.fast = 1000.0
    req = rpc.PutRequest(key=b"warm", value=b"v")
    await node.propose(PUT, req.SerializeToString(), req)
    while d.ready_loop._waiter is None:
        await asyncio.sleep(0.01)
    return node


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
        applied = d.applier.applied_index
        commits = node.backend.uncommitted
        req = rpc.PutRequest(key=b"k", value=b"1")
        fut = node.propose(PUT, req.SerializeToString(), req)
        assert fut.done()  # (durable, applied and answered inside propose())
        resp = fut.result()
        assert isinstance(resp, rpc.PutResponse)
        assert log == [("sync", applied + 1, [False]), ("synced",),
                       ("told", resp.header.revision)]
        assert d.ready_loop._durable == d.applier.applied_index == applied + 1
        assert node.backend.uncommitted == commits + 1  # (committed later, in a batch)
        assert node.range(rpc.RangeRequest(key=b"k")).kvs[0].value == b"1"

        # Not for other kinds (a compaction) nor when the batch would reach the backend's
        # commit limit: the sync comes first there, as before.
        node.backend.batch_limit = node.backend.uncommitted + 1
        log.clear()
        fut = node.propose(PUT, req.SerializeToString(), req)
        await fut
        assert [x[0] for x in log] == ["sync", "synced", "told"]
        assert log[0][1] == applied + 1  # (the apply came after the sync)
    run(body, tmp_path, size=1, unsafe_no_fsync=False)


def test_a_failed_sync_leaves_nothing_seen(tmp_path: Path) -> None:
    async def body(c: Cluster) -> None:
        node = await _parked(c)
        d = node._log
        wal = d.storage.wal
        told: list[int] = []
        node.applier.add_commit_listener(lambda events, rev: told.append(rev))

        def sync_written(fd: int) -> None:
            raise OSError(5, "injected: the disk failed the fdatasync")

        wal.sync_written = sync_written
        req = rpc.PutRequest(key=b"k", value=b"1")
        fut = node.propose(PUT, req.SerializeToString(), req)
        result = await fut
        assert not isinstance(result, rpc.PutResponse)  # (the member stopped: STOPPED)
        assert told == []
        with pytest.raises(BackendFailed):
            node.range(rpc.RangeRequest(key=b"k"))
    run(body, tmp_path, size=1, unsafe_no_fsync=False)
