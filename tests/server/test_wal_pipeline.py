"""The lone voter's WAL pipeline (server/raftnode/pipeline.py; off by default, depth 2
here), on real members in one process (tests/server/inproc.py) with real fdatasyncs: a
batch's frame is written while the batch before is still syncing, and nothing is handed
out to be applied before an fdatasync that started after its frame was written has
returned."""

from __future__ import annotations

import asyncio
import errno
from pathlib import Path
from typing import Any

from petcd.errors import EtcdError
from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.raft import Entry
from petcd.server.proposal import PUT

from .inproc import Cluster, run
from .test_raftnode import _until, put

WRITERS = 64
PUTS = 12


def test_batches_are_written_while_the_one_before_syncs(tmp_path: Path) -> None:
    """64 concurrent writers: later batches go to the disk while earlier ones sync;
    what is applied is never ahead of what is durable, every write is answered once, in
    log order, and all are there."""
    async def body(c: Cluster) -> None:
        node = c.nodes[0]
        d = node._log
        ready_loop = d.ready_loop
        pipe = ready_loop._pipe
        pipe.depth = 2
        writer = d.wal_writer
        seen: list[tuple[int, int, int]] = []  # at each save: in flight, applied, durable
        save_piped = writer.save_piped

        def traced_save(hs: Any, entries: Any, done: Any) -> bool:
            seen.append((pipe.in_flight, d.applier.applied_index, ready_loop.durable))
            return save_piped(hs, entries, done)
        writer.save_piped = traced_save  # type: ignore[method-assign]
        handed: list[int] = []
        hand_out = pipe._hand_out

        def traced_hand_out(entries: list[Entry]) -> object:
            assert entries[-1].index <= ready_loop.durable  # durable before handed out
            handed.extend(e.index for e in entries)
            return hand_out(entries)
        pipe._hand_out = traced_hand_out

        async def writes(w: int) -> list[int]:
            revs = []
            for i in range(PUTS):
                for _ in range(w % 4):  # (staggered: proposals come in several turns)
                    await asyncio.sleep(0)
                revs.append((await put(node, b"w/%02d/%02d" % (w, i))).header.revision)
            return revs
        revs = [r for rs in await asyncio.gather(*(writes(w) for w in range(WRITERS)))
                for r in rs]
        assert len(set(revs)) == WRITERS * PUTS
        assert pipe.overlapped > 0 and any(n >= 2 for n, _, _ in seen), seen[:20]
        assert all(applied <= durable for _, applied, durable in seen)
        assert handed == sorted(handed) and len(set(handed)) == len(handed)
        assert pipe.in_flight == 0
        resp = node.range(rpc.RangeRequest(key=b"w/", range_end=b"w0", count_only=True))
        assert resp.count == WRITERS * PUTS
    run(body, tmp_path, size=1, unsafe_no_fsync=False)


def test_depth_zero_turns_it_off(tmp_path: Path) -> None:
    """PETCD_WAL_PIPELINE=0 (the default): each batch's fdatasync is awaited before the next is
    written, as before the pipeline."""
    async def body(c: Cluster) -> None:
        node = c.nodes[0]
        d = node._log
        pipe = d.ready_loop._pipe
        pipe.depth = 0
        syncing: list[int] = []
        save = d.wal_writer.save

        def traced_save(*a: Any, **k: Any) -> Any:
            syncing.append(d.wal_writer.syncing)
            return save(*a, **k)
        d.wal_writer.save = traced_save  # type: ignore[method-assign]

        async def writes(w: int) -> None:
            for i in range(4):
                await put(node, b"z/%02d/%d" % (w, i))
        await asyncio.gather(*(writes(w) for w in range(16)))
        assert pipe.saves == 0 and syncing and max(syncing) == 0
    run(body, tmp_path, size=1, unsafe_no_fsync=False)


def test_a_failed_fdatasync_leaves_its_batch_unapplied(tmp_path: Path) -> None:
    """An fdatasync of the pipeline fails: nothing it held is applied or answered as
    written (the callers get an error), and the member stops."""
    async def body(c: Cluster) -> None:
        node = c.nodes[0]
        d = node._log
        await put(node, b"warm")
        d.ready_loop._pipe.depth = 2
        d.wal_writer.fast = 0  # (no inline save: the batch goes the pipeline's way)
        applied = d.applier.applied_index
        save_piped = d.wal_writer.save_piped

        def failing(hs: Any, entries: Any, done: Any) -> bool:
            return save_piped(hs, entries, lambda err: done(
                err or OSError(errno.EIO, "injected fdatasync failure")))
        d.wal_writer.save_piped = failing  # type: ignore[method-assign]
        req = rpc.PutRequest(key=b"lost", value=b"1")
        futs = [node.propose(PUT, req.SerializeToString(), req) for _ in range(8)]
        results = await asyncio.wait_for(asyncio.gather(*futs), 30)
        assert all(isinstance(r, EtcdError) for r in results), results
        assert d.ready_loop._pipe.saves >= 1
        assert d.applier.applied_index == applied and d.stopped
    run(body, tmp_path, size=1, unsafe_no_fsync=False)


def test_with_fsync_off_each_batch_is_handed_out_after_it_is_recorded(tmp_path: Path) -> None:
    """--unsafe-no-fsync: a pipelined save is durable at once; its entries are handed out
    only after the Ready is in the in-memory log and advanced (so a snapshot taken on
    apply finds them there), and writes stay in order."""
    async def body(c: Cluster) -> None:
        node = c.nodes[0]
        d = node._log
        d.wal_writer.fast = 0  # (no inline save)
        pipe = d.ready_loop._pipe
        pipe.depth = 2
        hand_out = pipe._hand_out

        def traced_hand_out(entries: list[Entry]) -> object:
            assert entries[-1].index <= d.mem.last_index()  # recorded before handed out
            return hand_out(entries)
        pipe._hand_out = traced_hand_out

        async def writes(w: int) -> list[int]:
            revs = []
            for i in range(10):
                for _ in range(w % 3):
                    await asyncio.sleep(0)
                revs.append((await put(node, b"f/%02d/%d" % (w, i))).header.revision)
            return revs
        revs = await asyncio.gather(*(writes(w) for w in range(16)))
        assert all(r == sorted(r) for r in revs)
        assert d.ready_loop._pipe.saves > 0 and d.ready_loop._pipe.in_flight == 0
        assert d.applier.applied_index <= d.mem.last_index()
        # (snapshots taken on apply, every 20 entries, at indexes the log held)
        await asyncio.wait_for(_until(lambda: d.mem.snapshot().metadata.index > 0), 10)
    run(body, tmp_path, size=1, unsafe_no_fsync=True, snapshot_count=20)


def test_a_lone_write_the_loop_handles_is_still_synced_inline(tmp_path: Path) -> None:
    """A lone write that propose() leaves to the loop (here: the loop was just woken)
    is synced inline there while the disk is fast, not handed to the pipeline's
    asynchronous fdatasync (slower for one write, and far slower on a busy machine)."""
    async def body(c: Cluster) -> None:
        node = c.nodes[0]
        d = node._log
        d.wal_writer.fast = 1000.0  # (every inline fdatasync counts as fast)
        await put(node, b"warm")
        pipe = d.ready_loop._pipe
        pipe.depth = 2
        saves, inline = pipe.saves, d.wal_writer.inline_saves
        d.ready_loop.wake()  # (not parked: propose() leaves it to the loop)
        await put(node, b"lone")
        assert pipe.saves == saves and d.wal_writer.inline_saves == inline + 1
    run(body, tmp_path, size=1, unsafe_no_fsync=False)
