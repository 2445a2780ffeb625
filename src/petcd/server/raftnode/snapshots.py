"""Snapshots: taking one every --snapshot-count applied entries, streaming the backend to a
follower that is behind the leader's compacted log, receiving one, installing it.

A snapshot here is a marker (index, term, Raft's configuration) in the WAL's snap
directory; the state itself is the backend file, which is durable up to its consistent
index. Taking a snapshot syncs the backend first, then lets the WAL and the in-memory log
drop what came before (keeping --snapshot-catchup-entries for slow followers).
"""

from __future__ import annotations

import asyncio
import bisect
import dataclasses
import logging
from typing import TYPE_CHECKING

from petcd.mvcc.copystream import CopyStream
from petcd.raft import (
    ConfState,
    Message,
    MessageType,
    Snapshot,
    SnapshotMetadata,
    decode_message,
    encode_message,
)
from petcd.transport import SnapshotStream

if TYPE_CHECKING:
    from petcd.server.raftnode.driver import RaftDriver

log = logging.getLogger(__name__)


class Snapshots:
    def __init__(self, driver: RaftDriver, applied: int) -> None:
        self._d = driver
        # Raft's configuration as of each conf change handed out (for snapshots).
        self._conf_states: list[tuple[int, ConfState]] = [
            (applied, driver.raw.status().conf_state)]
        self.index = driver.mem.snapshot().metadata.index  # of the last one taken
        self._taking = False
        self._copying = 0  # backend copies for followers under way
        self._no_copies = asyncio.Event()
        self._no_copies.set()

    def conf_changed(self, index: int, cs: ConfState) -> None:
        self._conf_states.append((index, cs))

    def _conf_state_at(self, index: int, *, prune: bool = True) -> ConfState:
        states = self._conf_states
        pos = bisect.bisect_right(states, index, key=lambda s: s[0]) - 1
        cs = states[max(pos, 0)][1]
        # Older ones are no longer needed: snapshots only move forward.
        if pos > 0 and prune:
            del states[:pos]
        return cs

    def maybe_take(self, applied: int) -> None:
        """After a batch is applied: a snapshot every --snapshot-count entries."""
        if applied - self.index >= self._d.opts.snapshot_count and not self._taking:
            self._taking = True
            self._d.spawn(self._take(applied))

    def _sync_backend(self) -> None:
        backend = self._d.backend
        with backend.readers.reading():  # (not while a defragment swaps the file)
            backend.sync()

    async def _take(self, index: int) -> None:
        d = self._d
        try:
            # The WAL may drop entries only once the backend holds them durably.
            d.backend.commit()
            await asyncio.get_running_loop().run_in_executor(None, self._sync_backend)
            mem = d.mem
            if index <= mem.snapshot().metadata.index:
                return
            snap = mem.create_snapshot(index, self._conf_state_at(index), b"")
            await d.wal_thread.run(d.storage.save_snapshot, snap)
            self.index = index
            keep = d.opts.snapshot_catchup_entries
            compact = index - keep if index > keep else 0
            if compact >= mem.first_index():
                mem.compact(compact)
            opts = d.opts
            await d.wal_thread.run(d.storage.purge, opts.max_wals, opts.max_snapshots)
            log.info("snapshot at index %d saved; log compacted to %d", index, compact)
            if d.metrics is not None:
                d.metrics.snapshots.inc()
        except Exception as e:
            if not d.stopped:
                d.fail(e, "taking a snapshot failed")
        finally:
            self._taking = False

    async def send(self, m: Message) -> None:
        """A follower is behind our compacted log: stream it the backend (a consistent copy,
        at our applied index, which is >= the snapshot's). LMDB writes the copy straight
        into the stream as it is sent: nothing is written to disk or held whole."""
        d = self._d
        assert m.snapshot is not None
        ok = False
        self._copying += 1
        self._no_copies.clear()
        stream: CopyStream | None = None
        try:
            d.backend.commit()  # the copy must hold everything applied so far
            merged = self._merged(m.snapshot)
            stream = CopyStream(d.backend)
            ok = await d.transport.send_snapshot(
                m.to, encode_message(dataclasses.replace(m, snapshot=merged)), stream)
            if ok:
                log.info("sent the backend of snapshot %d to %x (%d bytes)",
                         merged.metadata.index, m.to, stream.copied)
        except Exception as e:
            log.warning("sending a snapshot to %x failed: %s", m.to, e)
        finally:
            if stream is not None:
                stream.close()
            self._copying -= 1
            if not self._copying:
                self._no_copies.set()
        if not d.stopped:
            d.raw.report_snapshot(m.to, ok)
            d.wake()

    def _merged(self, snap: Snapshot) -> Snapshot:
        """The snapshot moved up to the index the backend copy holds at least (as etcd
        merges them): else the follower would fetch and skip every entry since the last
        snapshot taken, up to --snapshot-count of them."""
        index, term = self._d.backend.consistent_index()  # (committed: the copy has it)
        if index <= snap.metadata.index:
            return snap
        md = SnapshotMetadata(index, term, self._conf_state_at(index, prune=False))
        return Snapshot(md, snap.data)

    async def receive(self, from_id: int, metadata: bytes, chunks: SnapshotStream) -> None:
        """A snapshot stream from the leader: the backend file first, then its message
        goes to Raft (whose Ready hands the snapshot to install())."""
        d = self._d
        m = decode_message(metadata)
        if m.type != MessageType.SNAP or m.snapshot is None:
            raise ValueError("snapshot stream without a snapshot message")
        index = m.snapshot.metadata.index
        receiver = d.storage.snapshotter.receive_db(index)
        loop = asyncio.get_running_loop()
        work: asyncio.Future[object] | None = None  # a thread's write or commit
        try:
            # Everything that arrived meanwhile, written by a thread while the loop
            # receives the next (the transport hashed it in one already).
            while batch := await chunks.batch():
                work = loop.run_in_executor(None, receiver.write_many, batch)
                await work
            work = loop.run_in_executor(None, receiver.commit)
            await work
        except BaseException:
            if work is not None and not work.done():
                await asyncio.wait([work])  # (its thread still uses the file)
            receiver.abort()
            raise
        log.info("received the backend of snapshot %d from %x (%d bytes)", index, from_id,
                 receiver.size)
        if d.stopped:
            return
        d.step(m)
        d.wake()

    async def install(self, index: int, conf_state: ConfState) -> None:
        """Apply a snapshot from the leader: everything before it is applied first, then
        the received backend file replaces ours. The backend's restore hook (Node's one
        ordered reload) reads everything derived from the file again, the member list
        included; the transport's peers then follow that list."""
        d = self._d
        d.ops.snapshot_applying(index, d.applier.applied_index)
        await d.apply_queue.drain()
        await self._no_copies.wait()  # (a copy must not see the file swapped)
        snapshotter = d.storage.snapshotter
        path = snapshotter.db_file_path(index)
        if path is None:
            raise RuntimeError(f"snapshot {index} arrived without its backend file")
        # On the loop thread: reads run there too, so none sees the file being swapped;
        # reads in other threads (hashes, snapshot copies) are waited for.
        applier = d.applier
        backend = d.backend
        readers = backend.readers
        async with applier.paused():  # (not while a defragment rewrites the file)
            await asyncio.get_running_loop().run_in_executor(None, readers.close)
            try:
                backend.restore_from(path)
            finally:
                readers.open()
        applier.applied_index, applier.applied_term = backend.consistent_index()
        self._conf_states = [(index, conf_state)]
        self.index = index
        d.members.sync_transport()
        snapshotter.release_snap_dbs(index)
        d.proposals.forget_upto(index)
        d.ops.snapshot_applied(index, applier.applied_index)
        d.reads.release(applier.applied_index)
