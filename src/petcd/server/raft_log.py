"""The Raft driver: the ReplicatedLog every member (a cluster of one too) writes through.

One asyncio task runs the Ready loop of petcd.raft.RawNode, following its contract:

    proposals queued since the last Ready ──propose_batch──> RawNode
    rd = ready()
      soft state      leader changes: listeners, metrics, pending reads fail
      send first      if rd.send_before_persist (a leader streams while it writes)
      persist         MemberStorage.save(hard state, entries, snapshot): one WAL frame, one
                      fdatasync, on the WAL thread; then the in-memory Raft storage
      send            the other messages (snapshots go on their own connection)
      hand out        committed entries -> apply queue (conf changes are applied to Raft,
                      the member list and the transport right here, in log order)
      read states     ReadIndex answers
      advance

The apply queue is drained by a second task onto the apply thread: all queued batches in
one Applier.apply (one LMDB write transaction), so applying batch N overlaps writing the
WAL for batch N+1. Callers are answered after their entry is applied on this member.
Every --snapshot-count applied entries the backend is synced, a snapshot marker saved, the
in-memory log compacted and old WAL/snapshot files purged.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import dataclasses
import json
import logging
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from google.protobuf.message import Message as PbMessage
from grpc import StatusCode

from petcd import errors
from petcd.errors import EtcdError
from petcd.mvcc.backend import Backend
from petcd.pb.internalpb.internal_pb2 import InternalRequest
from petcd.raft import (
    ConfChange,
    Config,
    ConfState,
    DropReason,
    Entry,
    EntryType,
    Message,
    MessageType,
    ProposalDropped,
    RawNode,
    ReadIndexDropped,
    ReadState,
    Ready,
    Role,
    SoftState,
    decode_conf_change,
    decode_message,
    encode_message,
)
from petcd.raft.errors import RaftError
from petcd.raft.rawnode import Status as RaftStatus
from petcd.server.apply import Applier, WaitPhysical
from petcd.server.bootstrap import Boot
from petcd.server.ids import member_id as derive_member_id
from petcd.server.membership import (
    CONF_CHANGE_KIND,
    Member,
    Membership,
    add_change,
    attributes_change,
    learner_check_promote,
    members_to_json,
    promote_change,
    quorum_check_add,
    quorum_check_remove,
    remove_change,
    update_change,
)
from petcd.server.metrics import Metrics
from petcd.server.options import ServerOptions
from petcd.server.proposal import Committed, Proposal, Result, Stamp, encode_stamp, varint
from petcd.server.worker import Worker
from petcd.transport import PeerTransport, RequestFailed, Status, TransportConfig

log = logging.getLogger("petcd.raft")

READ_INDEX_RETRY = 0.5  # seconds before an unanswered ReadIndex is asked again, as etcd
HEALTH_INTERVAL = 5.0  # a peer counts as healthy once connected this long (etcd's)
MAX_APPLY_GAP = 5000  # committed - applied beyond which new proposals are refused

_NORMAL = EntryType.NORMAL
_CONF_CHANGE = EntryType.CONF_CHANGE
_SNAP = MessageType.SNAP
_FIELD_TAGS = {f.name: varint((f.number << 3) | 2)
               for f in InternalRequest.DESCRIPTOR.oneofs_by_name["request"].fields}


class _Pending(Proposal):
    """A proposal waiting to be applied."""

    __slots__ = ("deadline", "started", "term")

    def __init__(self, proposal_id: int, kind: str, raw: bytes, request: PbMessage,
                 future: asyncio.Future[Result], deadline: float, stamp: Stamp) -> None:
        super().__init__(proposal_id, kind, raw, request, future, stamp)
        self.deadline = deadline
        self.started = time.time()
        self.term = 0


class _ReadRound:
    """One ReadIndex request shared by every read that arrived before it was sent."""

    __slots__ = ("ctx", "deadline", "index", "retry_at", "waiters")

    def __init__(self, ctx: bytes, waiters: list[asyncio.Future[None]], now: float,
                 timeout: float) -> None:
        self.ctx = ctx
        self.waiters = waiters
        self.deadline = now + timeout
        self.retry_at = now + READ_INDEX_RETRY
        self.index = -1  # set once the leader answered


class RaftDriver:
    def __init__(self, opts: ServerOptions, boot: Boot, applier: Applier, backend: Backend,
                 membership: Membership, metrics: Metrics | None = None, *,
                 on_fatal: Callable[[BaseException], None] | None = None,
                 on_removed: Callable[[], None] | None = None,
                 transport_config: TransportConfig | None = None) -> None:
        self._opts = opts
        self.id = boot.local_id
        self.cluster_id = boot.cluster_id
        self._storage = boot.storage
        self._mem = boot.raft_storage
        self._applier = applier
        self._backend = backend
        self.membership = membership
        self._metrics = metrics
        self._on_fatal = on_fatal
        self._on_removed = on_removed
        self._tick_s = opts.heartbeat_ms / 1000.0
        election_ticks = max(2, opts.election_ms // max(1, opts.heartbeat_ms))
        self._election_ticks = election_ticks
        self.request_timeout = 5.0 + 2 * opts.election_ms / 1000.0
        self._raw = RawNode(Config(
            id=self.id, election_tick=election_ticks, heartbeat_tick=1, applied=boot.applied,
            max_size_per_msg=1 << 20, max_inflight_msgs=256, pre_vote=opts.pre_vote,
            check_quorum=True), self._mem)
        if boot.bootstrap_peers:
            self._raw.bootstrap(boot.bootstrap_peers)
        applier.register(CONF_CHANGE_KIND, lambda batch, cc: membership.write(batch, cc))
        self._transport = PeerTransport(
            self.id, self.cluster_id, list(opts.listen_peer_urls), self._on_messages,
            self._on_snapshot, config=transport_config, server_ssl=boot.server_ssl,
            client_ssl=boot.client_ssl, server_gate=boot.peer_gate,
            on_peer_status=self._on_peer_status,
            on_rejected=self._on_rejected, on_request=self._on_request)
        self._sync_transport()

        # Raft's configuration as of each conf change handed out (for snapshots).
        self._conf_states: list[tuple[int, ConfState]] = [
            (boot.applied, self._raw.status().conf_state)]
        self._snap_index = self._mem.snapshot().metadata.index
        self._snapshotting = False
        self._durable = self._mem.last_index()  # last log index known to be in the WAL
        if metrics is not None:
            self._storage.wal.fsync_observer = _fsync_observer(metrics.wal_fsync.observe)

        # proposals
        self._next_id = ((self.id & 0xFFFF) << 48) | ((int(time.time() * 1000) & 0xFFFFFFFFFF) << 8)
        self._queue: list[_Pending] = []  # not yet handed to Raft
        self._by_index: dict[int, _Pending] = {}  # proposed here as leader: index -> proposal
        self._by_id: dict[int, _Pending] = {}  # forwarded to the leader: id -> proposal
        self._deadlines: deque[_Pending] = deque()
        self._conf_waiters: dict[int, asyncio.Future[None]] = {}
        self._physical_waiters: list[tuple[asyncio.Future[Result], Result]] = []

        # reads
        self._read_waiters: list[asyncio.Future[None]] = []
        self._read_round: _ReadRound | None = None
        self._read_seq = 0
        self._applied_waiters: list[tuple[int, int, list[asyncio.Future[None]]]] = []

        # apply queue
        self._apply_jobs: deque[tuple[list[Committed], list[tuple[int, _Pending]]]] = deque()
        self._apply_wake = asyncio.Event()
        self._apply_idle = asyncio.Event()
        self._apply_idle.set()
        self._wal_thread = Worker("petcd-wal")
        # The backend commits what was applied at most this long after it was applied
        # (and at once after --backend-batch-limit operations: Backend.batch_limit).
        self._commit_interval = opts.backend_batch_interval_ms / 1000.0
        self._commit_timer: asyncio.TimerHandle | None = None

        # state the API reads
        self._lead = 0
        self._lead_elected_at = 0.0
        self._role = Role.FOLLOWER
        self._term = self._raw.term
        self._committed = self._raw.commit_index
        self._leader_listeners: list[Callable[[int, int], None]] = []
        self._notified: tuple[int, int] = (-1, -1)

        self._wake = asyncio.Event()
        self._stopping = False
        self._failed = False
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[Any]] = set()
        self._ticker: asyncio.TimerHandle | None = None
        self._ticks_advanced = False
        self._publish_at = 0.0
        self._publishing = False
        # Set once our name and client URLs are in the member list (etcd's ReadyNotify).
        self.ready = asyncio.Event()
        self._copying = 0

    # ------------------------------------------------------------------ the seam

    @property
    def term(self) -> int:
        return self._term

    @property
    def last_index(self) -> int:
        return self._raw.last_index

    @property
    def committed_index(self) -> int:
        return self._committed

    @property
    def applied_index(self) -> int:
        return self._applier.applied_index

    @property
    def stopped(self) -> bool:
        return self._stopping

    @property
    def leader_id(self) -> int:
        return self._lead

    @property
    def is_leader(self) -> bool:
        return self._role == Role.LEADER

    @property
    def is_learner(self) -> bool:
        return self._raw.is_learner

    def peer_traffic(self) -> tuple[dict[int, int], dict[int, int]]:
        """Bytes sent to and received from each peer (lifetime), for metrics."""
        sent = {pid: st.sent_bytes for pid, st in self._transport.statuses().items()}
        return sent, dict(self._transport.received_bytes)

    def add_leader_listener(self, listener: Callable[[int, int], None]) -> None:
        self._leader_listeners.append(listener)

    async def listen(self) -> None:
        """Bind the peer URLs (before start(), so that a taken port fails the start)."""
        await self._transport.start()

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._notify_leader()
        self._tasks = [loop.create_task(self._run(), name="raft-ready-loop"),
                       loop.create_task(self._apply_loop(), name="raft-apply-loop")]
        self._ticker = loop.call_later(self._tick_s, self._on_tick)
        if self._applier.compaction_pending:
            self._apply_wake.set()
        self._wake.set()

    async def stop(self) -> None:
        """Hand leadership over (if we lead others), refuse new proposals, fail those
        waiting, finish what is handed out, close."""
        if self._stopping and not self._tasks:
            return
        if not self._stopping and self._role == Role.LEADER:
            await self._transfer_on_shutdown()
        self._stopping = True
        if self._ticker is not None:
            self._ticker.cancel()
        # Not in the log yet: refused now. Reads too. What the current Ready hands out
        # is still applied and answered with its result.
        for p in self._queue:
            if not p.future.done():
                p.future.set_result(errors.STOPPED)
        self._queue.clear()
        self._fail_reads(errors.STOPPED)
        self._wake.set()
        self._apply_wake.set()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self._apply_wake.set()
        self._tasks = []
        self._fail_all(errors.STOPPED)  # proposed, but not committed in time
        for task in list(self._background):
            task.cancel()
        with contextlib.suppress(Exception):
            await self._transport.stop()
        for fut, _ in self._physical_waiters:
            if not fut.done():
                fut.set_result(errors.STOPPED)
        if self._commit_timer is not None:
            self._commit_timer.cancel()
            self._commit_timer = None
        self._wal_thread.shutdown()
        self._storage.close()

    def propose(self, kind: str, raw: bytes, request: PbMessage,
                stamp: Stamp = None) -> asyncio.Future[Result]:
        fut: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        if self._stopping:
            fut.set_result(errors.STOPPED)
            return fut
        if self._raw.is_learner:
            fut.set_result(errors.NOT_SUPPORTED_FOR_LEARNER)
            return fut
        if self._committed - self._applier.applied_index > MAX_APPLY_GAP:
            fut.set_result(errors.TOO_MANY_REQUESTS)
            return fut
        pid = self._next_id
        self._next_id = pid + 1
        p = _Pending(pid, kind, raw, request, fut, time.monotonic() + self.request_timeout,
                     stamp)
        self._queue.append(p)
        self._deadlines.append(p)
        if not self._wake.is_set():
            self._wake.set()
        return fut

    def read_barrier(self) -> Awaitable[None] | None:
        raw = self._raw
        if self._role == Role.LEADER and raw.voters == (self.id,):
            # A lone voter cannot be deposed without its own vote, and every write it
            # acknowledged is applied: nothing to wait for.
            return None
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._stopping:
            fut.set_exception(errors.STOPPED)
        elif raw.is_learner:
            fut.set_exception(errors.NOT_SUPPORTED_FOR_LEARNER)
        else:
            self._read_waiters.append(fut)
            if self._read_round is None:
                self._start_read_round()
        return fut

    # ------------------------------------------------------------------ Ready loop

    async def _run(self) -> None:
        raw = self._raw
        try:
            while not self._stopping:
                await self._wake.wait()
                # One loop iteration for the requests already read to be proposed with
                # this one: bigger batches, hardly any latency.
                await asyncio.sleep(0)
                self._wake.clear()
                self._flush_proposals()
                while raw.has_ready() and not self._stopping:
                    await self._handle_ready(raw.ready())
                    self._flush_proposals()
        except asyncio.CancelledError:
            raise
        except BaseException as e:
            self._fail(e, "the Raft loop failed")
        finally:
            self._apply_wake.set()  # lets the apply loop finish and end

    def _flush_proposals(self) -> None:
        queue = self._queue
        if not queue or self._lead == 0:
            return
        limit = self._opts.max_batch_entries
        batch = queue[:limit]
        del queue[:limit]
        me = self.id
        raw = self._raw
        leading = raw.is_leader  # (the soft state may not have told us yet)
        first = raw.last_index + 1
        tags = _FIELD_TAGS
        origin = b"\x10" + varint(me)
        datas = [tags[p.kind] + varint(len(p.raw)) + p.raw + b"\x08" + varint(p.id) + origin
                 + (b"" if p.stamp is None else encode_stamp(p.stamp)) for p in batch]
        try:
            raw.propose_batch(datas)
        except ProposalDropped as e:
            if e.reason in (DropReason.NO_LEADER, DropReason.TRANSFER_PENDING):
                self._queue[:0] = batch  # wait for a leader (or the transfer's end)
                return
            for p in batch:
                if not p.future.done():
                    p.future.set_result(EtcdError(StatusCode.UNAVAILABLE,
                                                  f"etcdserver: {e.reason.value}"))
            return
        if leading:
            term = raw.term
            by_index = self._by_index
            for i, p in enumerate(batch, first):
                p.term = term
                by_index[i] = p
        else:
            by_id = self._by_id
            for p in batch:
                by_id[p.id] = p
        if self._metrics is not None:
            self._metrics.proposals_pending.set(len(self._by_index) + len(self._by_id))

    async def _handle_ready(self, rd: Ready) -> None:
        raw = self._raw
        if rd.soft_state is not None:
            self._on_soft_state(rd.soft_state)
        messages = rd.messages
        if messages and rd.send_before_persist:
            self._send(messages)
            messages = []
        snapshot = rd.snapshot
        committed = rd.committed_entries
        if rd.must_sync or snapshot is not None:
            if committed and snapshot is None:
                # Committed entries that earlier Readies already made durable need not
                # wait for this fsync (a leader's are usually all of them): apply them
                # while the WAL writes the new ones.
                durable = self._durable
                if rd.entries:
                    durable = min(durable, rd.entries[0].index - 1)
                if committed[0].index <= durable:
                    n = bisect.bisect_right(committed, durable, key=_index)
                    self._hand_out(committed[:n])
                    committed = committed[n:]
            await self._wal_thread.run(self._storage.save, rd.hard_state, rd.entries,
                                       snapshot)
            if rd.entries:
                self._durable = rd.entries[-1].index
            elif snapshot is not None:
                self._durable = snapshot.metadata.index
        elif rd.hard_state is not None:
            self._storage.save(rd.hard_state, ())  # commit index only: written, not synced
        mem = self._mem
        if snapshot is not None:
            mem.apply_snapshot(snapshot)
        if rd.entries:
            mem.append(rd.entries)
        if rd.hard_state is not None:
            mem.set_hard_state(rd.hard_state)
            self._term = rd.hard_state.term
            self._committed = rd.hard_state.commit
        if messages:
            self._send(messages)
        if snapshot is not None:
            await self._install_snapshot(snapshot.metadata.index, snapshot.metadata.conf_state)
        if committed:
            self._hand_out(committed)
        if rd.read_states:
            self._on_read_states(rd.read_states)
        raw.advance(rd)
        if self._notified != (self._lead, self._term):
            self._notify_leader()

    def _hand_out(self, entries: list[Entry]) -> None:
        batch: list[Committed] = []
        local: list[tuple[int, _Pending]] = []
        by_index = self._by_index
        for e in entries:
            if e.type == _CONF_CHANGE:
                cc = decode_conf_change(e.data)
                cs = self._raw.apply_conf_change(cc)
                self._conf_states.append((e.index, cs))
                self.membership.apply(e.index, cc)
                self._after_conf_change(cc)
                batch.append(Committed(e.index, e.term, CONF_CHANGE_KIND, cc))
                continue
            p = by_index.get(e.index) if by_index else None
            if p is not None:
                del by_index[e.index]
                if p.term == e.term:
                    local.append((len(batch), p))
                    batch.append(Committed(e.index, e.term, p.kind, p.request, b"", p.stamp))
                    continue
                if not p.future.done():  # our entry at this index was overwritten
                    p.future.set_result(errors.LEADER_CHANGED)
            batch.append(Committed(e.index, e.term, None, None, e.data))
        self._committed = max(self._committed, entries[-1].index)
        self._apply_jobs.append((batch, local))
        self._apply_wake.set()

    # ------------------------------------------------------------------ applying

    async def _apply_loop(self) -> None:
        jobs = self._apply_jobs
        try:
            while True:
                if not jobs:
                    if self._stopping and self._tasks and self._tasks[0].done():
                        self._apply_idle.set()
                        return  # the Ready loop ended and everything it handed out is applied
                    await self._compact_when_idle()
                    if not jobs:
                        self._apply_idle.set()  # (nothing runs on the apply thread now)
                        await self._apply_wake.wait()
                        self._apply_wake.clear()
                    continue
                self._apply_idle.clear()
                entries: list[Committed] = []
                local: list[tuple[int, _Pending]] = []
                while jobs and len(entries) < 8192:
                    batch, mine = jobs.popleft()
                    base = len(entries)
                    entries.extend(batch)
                    local.extend((base + i, p) for i, p in mine)
                async with self._applier.exclusive:  # (free unless a defragment holds it)
                    results, forwarded = self._apply_batch(entries)
                self._after_apply(entries, results, local, forwarded)
        except asyncio.CancelledError:
            raise
        except BaseException as e:
            self._fail(e, "applying committed entries failed")

    def _apply_batch(self, entries: list[Committed]) -> tuple[list[Result], list[tuple[int, int]]]:
        """Decode what others proposed, then one Applier batch (on the loop thread, where
        reads of the applied state run: no read ever sees half a batch)."""
        me = self.id
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

    def _after_apply(self, entries: list[Committed], results: list[Result],
                     local: list[tuple[int, _Pending]],
                     forwarded: list[tuple[int, int]]) -> None:
        failed = 0
        for pos, p in local:
            failed += self._answer(p, results[pos])
        by_id = self._by_id
        for pos, rid in forwarded:
            waiting = by_id.pop(rid, None)
            if waiting is not None:
                failed += self._answer(waiting, results[pos])
        if not self.ready.is_set() and self._published():
            self.ready.set()
        waiters = self._conf_waiters
        if waiters:
            for c in entries:
                if c.kind == CONF_CHANGE_KIND:
                    fut = waiters.pop(c.request.id, None)
                    if fut is not None and not fut.done():
                        fut.set_result(None)
        metrics = self._metrics
        applied = self._applier.applied_index
        if metrics is not None:
            metrics.proposals_applied.set(applied)
            metrics.proposals_committed.set(self._committed)
            metrics.proposals_pending.set(len(self._by_index) + len(self._by_id))
            metrics.compaction_pending.set(int(self._applier.compaction_pending))
            if failed:
                metrics.proposals_failed.inc(failed)
        self._release_reads(applied)
        if self._commit_timer is None and self._backend.uncommitted:
            self._commit_timer = asyncio.get_running_loop().call_later(
                self._commit_interval, self._commit_backend)
        if applied - self._snap_index >= self._opts.snapshot_count and not self._snapshotting:
            self._snapshotting = True
            self._spawn(self._take_snapshot(applied))

    def _answer(self, p: _Pending, r: Result) -> int:
        # The proposal stays in the deadline queue until its deadline: let go of what is
        # big now (requests of seconds of traffic would otherwise stay alive).
        p.raw = b""
        p.request = None  # type: ignore[assignment]
        fut = p.future
        if type(r) is WaitPhysical:
            self._physical_waiters.append((fut, r.response))
            return 0
        if not fut.done():
            fut.set_result(r)
        return 1 if type(r) is EtcdError else 0

    def _commit_backend(self) -> None:
        """The batch interval is up: commit what was applied (one synced LMDB commit)."""
        self._commit_timer = None
        if self._applier.exclusive.locked():
            return  # paused: its holder committed, and nothing is applied meanwhile
        try:
            self._backend.commit()
        except Exception as e:
            self._fail(e, "committing the backend failed")

    async def _compact_when_idle(self) -> None:
        """Without writes to carry it, a compaction's physical part gets batches of its own."""
        applier = self._applier
        while applier.compaction_pending and not self._apply_jobs and not self._stopping:
            async with applier.exclusive:
                applier.compaction_step()
            await asyncio.sleep(0)  # (a step is bounded; let everything else run between)
            if self._commit_timer is None and self._backend.uncommitted:
                self._commit_timer = asyncio.get_running_loop().call_later(
                    self._commit_interval, self._commit_backend)
        if self._physical_waiters and not applier.compaction_pending:
            for fut, resp in self._physical_waiters:
                if not fut.done():
                    fut.set_result(resp)
            self._physical_waiters.clear()
        if self._metrics is not None:
            self._metrics.compaction_pending.set(int(applier.compaction_pending))

    async def _drain_apply(self) -> None:
        """Until everything handed out is applied and the apply thread is idle."""
        while self._apply_jobs or not self._apply_idle.is_set():
            self._apply_wake.set()
            await asyncio.sleep(0.001)

    # ------------------------------------------------------------------ snapshots

    def _conf_state_at(self, index: int) -> ConfState:
        states = self._conf_states
        pos = bisect.bisect_right(states, index, key=lambda s: s[0]) - 1
        cs = states[max(pos, 0)][1]
        # Older ones are no longer needed: snapshots only move forward.
        if pos > 0:
            del states[:pos]
        return cs

    def _sync_backend(self) -> None:
        with self._backend.readers.reading():  # (not while a defragment swaps the file)
            self._backend.sync()

    async def _take_snapshot(self, index: int) -> None:
        try:
            # The WAL may drop entries only once the backend holds them durably.
            self._backend.commit()
            await asyncio.get_running_loop().run_in_executor(None, self._sync_backend)
            mem = self._mem
            if index <= mem.snapshot().metadata.index:
                return
            snap = mem.create_snapshot(index, self._conf_state_at(index), b"")
            await self._wal_thread.run(self._storage.save_snapshot, snap)
            self._snap_index = index
            keep = self._opts.snapshot_catchup_entries
            compact = index - keep if index > keep else 0
            if compact >= mem.first_index():
                mem.compact(compact)
            opts = self._opts
            await self._wal_thread.run(self._storage.purge, opts.max_wals, opts.max_snapshots)
            log.info("snapshot at index %d saved; log compacted to %d", index, compact)
            if self._metrics is not None:
                self._metrics.snapshots.inc()
        except Exception as e:
            if not self._stopping:
                self._fail(e, "taking a snapshot failed")
        finally:
            self._snapshotting = False

    async def _send_snapshot(self, m: Message) -> None:
        """A follower is behind our compacted log: stream it the backend (a consistent copy,
        at our applied index, which is >= the snapshot's)."""
        loop = asyncio.get_running_loop()
        assert m.snapshot is not None
        path = os.path.join(self._storage.snapshotter.dir,
                            f"send-{m.to:x}-{m.snapshot.metadata.index:x}.db.tmp")
        ok = False
        self._copying += 1
        try:
            try:
                self._backend.commit()  # the copy must hold everything applied so far
                await loop.run_in_executor(None, self._copy_backend, path)
            finally:
                self._copying -= 1
            ok = await self._transport.send_snapshot(m.to, encode_message(m), path)
        except Exception as e:
            log.warning("sending a snapshot to %x failed: %s", m.to, e)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)
        if not self._stopping:
            self._raw.report_snapshot(m.to, ok)
            self._wake.set()

    def _copy_backend(self, path: str) -> None:
        with open(path, "wb") as f, self._backend.readers.reading():
            self._backend.snapshot_to(f)

    async def _on_snapshot(self, from_id: int, metadata: bytes,
                           chunks: AsyncIterator[bytes]) -> None:
        m = decode_message(metadata)
        if m.type != _SNAP or m.snapshot is None:
            raise ValueError("snapshot stream without a snapshot message")
        index = m.snapshot.metadata.index
        receiver = self._storage.snapshotter.receive_db(index)
        try:
            async for chunk in chunks:
                receiver.write(chunk)
            await asyncio.get_running_loop().run_in_executor(None, receiver.commit)
        except BaseException:
            receiver.abort()
            raise
        log.info("received the backend of snapshot %d from %x (%d bytes)", index, from_id,
                 receiver.size)
        if self._stopping:
            return
        self._step(m)
        self._wake.set()

    async def _install_snapshot(self, index: int, conf_state: ConfState) -> None:
        """Apply a snapshot from the leader: everything before it is applied first, then
        the received backend file replaces ours (the member list comes with it)."""
        await self._drain_apply()
        while self._copying:
            await asyncio.sleep(0.01)
        snapshotter = self._storage.snapshotter
        path = snapshotter.db_file_path(index)
        if path is None:
            raise RuntimeError(f"snapshot {index} arrived without its backend file")
        # On the loop thread: reads run there too, so none sees the file being swapped;
        # reads in other threads (hashes, snapshot copies) are waited for.
        applier = self._applier
        readers = self._backend.readers
        async with applier.paused():  # (not while a defragment rewrites the file)
            await asyncio.get_running_loop().run_in_executor(None, readers.close)
            try:
                self._backend.restore_from(path)
            finally:
                readers.open()
        applier.applied_index, applier.applied_term = self._backend.consistent_index()
        self.membership.load(self._backend)
        self._conf_states = [(index, conf_state)]
        self._snap_index = index
        self._sync_transport()
        snapshotter.release_snap_dbs(index)
        # Proposals we made as leader at indexes the snapshot covers: whether they made it
        # is unknown, so they end as timeouts (as in etcd).
        for i in [i for i in self._by_index if i <= index]:
            del self._by_index[i]
        log.info("installed the snapshot at index %d (backend at index %d)", index,
                 applier.applied_index)
        self._release_reads(applier.applied_index)

    # ------------------------------------------------------------------ messages

    def _send(self, messages: list[Message]) -> None:
        by_to: dict[int, list[bytes]] = {}
        for m in messages:
            if m.type == _SNAP:
                self._spawn(self._send_snapshot(m))
                continue
            payloads = by_to.get(m.to)
            if payloads is None:
                by_to[m.to] = payloads = []
            payloads.append(encode_message(m))
        send = self._transport.send
        for to, payloads in by_to.items():
            send(to, payloads)

    def _on_messages(self, payloads: list[bytes]) -> None:
        if self._stopping:
            return
        for payload in payloads:
            try:
                m = decode_message(payload)
            except ValueError as e:
                log.warning("dropping an undecodable peer message: %s", e)
                continue
            self._step(m)
        if not self._wake.is_set():
            self._wake.set()

    def _step(self, m: Message) -> None:
        try:
            self._raw.step(m)
        except ValueError as e:
            log.warning("dropping a peer message: %s", e)
        except RaftError as e:
            self._fail(e, "the Raft core refused a message")

    def _on_peer_status(self, peer_id: int, active: bool) -> None:
        if active and self._opts.initial_election_tick_advance and not self._ticks_advanced \
                and self._lead == 0:
            # etcd's initial election tick advance: once peers are reachable, a fresh
            # member need not sit out a whole election timeout before campaigning.
            self._ticks_advanced = True
            for _ in range(max(0, self._election_ticks - 2)):
                self._raw.tick()
            self._wake.set()

    def _on_rejected(self, peer_id: int, status: Status, reason: str) -> None:
        if status == Status.REMOVED_MEMBER and not self._stopping:
            log.warning("peer %x says: %s", peer_id, reason)
            self._removed()

    def _removed(self) -> None:
        if self._on_removed is not None:
            log.warning("the member has been permanently removed from the cluster")
            cb, self._on_removed = self._on_removed, None
            cb()

    # ------------------------------------------------------------------ ticks and time

    def _on_tick(self) -> None:
        if self._stopping:
            return
        loop = asyncio.get_running_loop()
        self._ticker = loop.call_later(self._tick_s, self._on_tick)
        raw = self._raw
        raw.tick()
        for peer in self._transport.drain_unreachable():
            raw.report_unreachable(peer)
        now = time.monotonic()
        deadlines = self._deadlines
        while deadlines and deadlines[0].deadline <= now:
            p = deadlines.popleft()
            if not p.future.done():
                p.future.set_result(self._timeout_error(p.started))
                self._by_id.pop(p.id, None)
                if p in self._queue:
                    self._queue.remove(p)
        rnd = self._read_round
        if rnd is not None and rnd.index < 0:
            if now >= rnd.deadline:
                self._finish_round(errors.TIMEOUT)
            elif now >= rnd.retry_at:
                rnd.retry_at = now + READ_INDEX_RETRY
                self._ask_read_index(rnd)
        if self._lead and not self._publishing and now >= self._publish_at:
            self._maybe_publish(now)
        self._wake.set()

    def _timeout_error(self, started: float) -> EtcdError:
        """etcd's choice of words for a proposal that timed out."""
        elected = self._lead_elected_at
        window = 2 * self._opts.election_ms / 1000.0
        if elected - window < started < elected:
            return errors.TIMEOUT_DUE_TO_LEADER_FAIL
        lead = self._lead
        if lead == self.id:
            voters = self._raw.voters
            ok = sum(1 for v in voters if v == self.id or self._connected_since(v, started))
            if ok < len(voters) // 2 + 1:
                return errors.TIMEOUT_DUE_TO_CONNECTION_LOST
        elif lead and not self._connected_since(lead, started):
            return errors.TIMEOUT_DUE_TO_CONNECTION_LOST
        return errors.TIMEOUT

    def _connected_since(self, peer_id: int, when: float) -> bool:
        since = self._transport.active_since(peer_id)
        return since is not None and since <= when

    # ------------------------------------------------------------------ leadership

    def _on_soft_state(self, ss: SoftState) -> None:
        was_leader = self._role == Role.LEADER
        self._role = ss.role
        metrics = self._metrics
        if ss.lead != self._lead:
            if ss.lead:
                self._lead_elected_at = time.time()
                if metrics is not None:
                    metrics.leader_changes.inc()
                if not self._publishing:
                    self._maybe_publish(time.monotonic())
                log.info("member %x: leader is %x (term %d)", self.id, ss.lead, self._raw.term)
            else:
                log.info("member %x: no leader (term %d)", self.id, self._raw.term)
            old, self._lead = self._lead, ss.lead
            rnd = self._read_round
            if rnd is not None and rnd.index < 0:
                if old == 0 and ss.lead:
                    self._ask_read_index(rnd)  # asked while there was no leader: ask now
                else:
                    self._finish_round(errors.LEADER_CHANGED)
        if metrics is not None:
            metrics.has_leader.set(1 if ss.lead else 0)
            metrics.is_leader.set(1 if ss.role == Role.LEADER else 0)
        if was_leader and ss.role != Role.LEADER:
            log.info("member %x lost leadership (term %d)", self.id, self._raw.term)

    def _notify_leader(self) -> None:
        self._notified = (self._lead, self._term)
        for listener in self._leader_listeners:
            try:
                listener(self._lead, self._term)
            except Exception:
                log.exception("leader listener failed")

    # ------------------------------------------------------------------ reads

    def _start_read_round(self) -> None:
        self._read_seq += 1
        rnd = _ReadRound(self._read_seq.to_bytes(8, "big"), self._read_waiters,
                         time.monotonic(), self.request_timeout)
        self._read_waiters = []
        self._read_round = rnd
        self._ask_read_index(rnd)

    def _ask_read_index(self, rnd: _ReadRound) -> None:
        try:
            self._raw.read_index(rnd.ctx)
        except ReadIndexDropped:
            return  # no leader yet: the tick retries
        self._wake.set()

    def _on_read_states(self, states: list[ReadState]) -> None:
        rnd = self._read_round
        for rs in states:
            if rnd is None or rs.request_ctx != rnd.ctx or rnd.index >= 0:
                continue  # an answer to a round that already ended
            rnd.index = rs.index
            if self._applier.applied_index >= rs.index:
                self._finish_round(None)
            else:
                bisect.insort(self._applied_waiters, (rs.index, self._read_seq, rnd.waiters))
                self._read_round = None
                if self._read_waiters:
                    self._start_read_round()

    def _finish_round(self, err: EtcdError | None) -> None:
        rnd = self._read_round
        assert rnd is not None
        self._read_round = None
        _resolve(rnd.waiters, err)
        if self._read_waiters and not self._stopping:
            self._start_read_round()

    def _release_reads(self, applied: int) -> None:
        waiting = self._applied_waiters
        while waiting and waiting[0][0] <= applied:
            _resolve(waiting.pop(0)[2], None)

    # ------------------------------------------------------------------ membership

    def _sync_transport(self) -> None:
        """Make the transport's peers match the member list."""
        t = self._transport
        for m in self.membership.members.values():
            if m.id == self.id or not m.peer_urls:
                continue
            if m.id in t.peer_ids():
                t.update_peer(m.id, m.peer_urls)
            else:
                t.add_peer(m.id, m.peer_urls)
        for rid in self.membership.removed:
            if rid != self.id:
                t.remove_peer(rid)

    def _after_conf_change(self, cc: ConfChange) -> None:
        self._sync_transport()
        if self.id in self.membership.removed:
            self._removed()

    def _published(self) -> bool:
        me = self.membership.local
        opts = self._opts
        return me is not None and me.name == opts.name and \
            me.client_urls == list(opts.advertise_client_urls)

    def _maybe_publish(self, now: float) -> None:
        """Publish our name and client URLs (etcd's 'publish') until the list has them."""
        me = self.membership.local
        opts = self._opts
        urls = list(opts.advertise_client_urls)
        if me is None or self._published():
            if me is not None and not self.ready.is_set():
                self.ready.set()
            return
        self._publishing = True
        # A leader drops conf changes forwarded while one of its own is unapplied (its
        # first entry counts): retry soon rather than wait out a request timeout.
        wait = max(0.5, 5 * self._tick_s)
        self._publish_at = now + wait

        async def publish() -> None:
            try:
                err = await self.conf_change(attributes_change(self.id, opts.name, urls),
                                             timeout=wait)
                if err is None:
                    log.info("published name %s and client URLs %s", opts.name, urls)
            finally:
                self._publishing = False

        self._spawn(publish())

    async def conf_change(self, cc: ConfChange, *, timeout: float | None = None
                          ) -> EtcdError | None:
        """Propose a membership change and wait until it is applied here."""
        if self._stopping:
            return errors.STOPPED
        started = time.time()
        deadline = time.monotonic() + (timeout or self.request_timeout)
        rid = self._next_id
        self._next_id = rid + 1
        cc = dataclasses.replace(cc, id=rid)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._conf_waiters[rid] = fut
        try:
            while True:
                try:
                    self._raw.propose_conf_change(cc)
                    break
                except ProposalDropped as e:
                    if e.reason not in (DropReason.CONF_CHANGE_PENDING, DropReason.NO_LEADER,
                                        DropReason.TRANSFER_PENDING):
                        return EtcdError(StatusCode.UNAVAILABLE, f"etcdserver: {e.reason.value}")
                    if time.monotonic() >= deadline:
                        return self._timeout_error(started)
                    await asyncio.sleep(self._tick_s)
                    if self._stopping:
                        return errors.STOPPED
            self._wake.set()
            try:
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    await fut
            except TimeoutError:
                return self._timeout_error(started)
            except EtcdError as e:
                return e
            return None
        finally:
            self._conf_waiters.pop(rid, None)

    async def _wait_leader(self, deadline: float) -> int:
        while self._lead == 0:
            if time.monotonic() >= deadline or self._stopping:
                return 0
            await asyncio.sleep(self._tick_s)
        return self._lead

    async def member_op(self, op: str, **args: Any) -> tuple[Member | None, list[Member]]:
        """A Cluster RPC: run by the leader (forwarded to it from other members).
        Raises EtcdError."""
        deadline = time.monotonic() + self.request_timeout
        while True:
            if self._stopping:
                raise errors.STOPPED
            if self._role == Role.LEADER:
                return await self._member_op_here(op, args)
            lead = await self._wait_leader(deadline)
            if lead == 0:
                raise errors.STOPPED if self._stopping else errors.TIMEOUT
            if lead == self.id:
                continue
            try:
                answer = await self._transport.request(
                    lead, json.dumps({"op": op, **args}).encode(),
                    timeout=max(0.1, deadline - time.monotonic()))
            except RequestFailed as e:
                if time.monotonic() >= deadline:
                    raise errors.TIMEOUT from e
                await asyncio.sleep(self._tick_s)
                continue
            doc = json.loads(answer)
            if "error" in doc:
                code, message = doc["error"]
                if message == "etcdserver: not leader" and time.monotonic() < deadline:
                    await asyncio.sleep(self._tick_s)  # leadership moved meanwhile
                    continue
                raise EtcdError(StatusCode[code], message)
            member = Member.from_json(doc["member"]) if doc.get("member") else None
            return member, [Member.from_json(m) for m in doc["members"]]

    async def _member_op_here(self, op: str, args: dict[str, Any]
                              ) -> tuple[Member | None, list[Member]]:
        ms = self.membership
        member: Member | None = None
        if op == "add":
            urls = sorted(args["peerURLs"])
            member = Member(derive_member_id(urls, "", now=int(time.time())), "", urls, [],
                            bool(args["isLearner"]))
            err = ms.check_add(member, self._opts.max_learners) or self._check_add(member)
            cc = add_change(member)
        elif op == "remove":
            mid = int(args["id"])
            err = ms.check_remove(mid) or self._check_remove(mid)
            cc = remove_change(mid)
        elif op == "update":
            mid = int(args["id"])
            err = ms.check_update(mid, list(args["peerURLs"]))
            cc = update_change(mid, list(args["peerURLs"]))
        elif op == "promote":
            mid = int(args["id"])
            err = ms.check_promote(mid) or self._check_promote(mid)
            cc = promote_change(mid)
        else:
            raise EtcdError(StatusCode.INVALID_ARGUMENT, f"unknown member operation {op}")
        if err is not None:
            raise err
        err = await self.conf_change(cc)
        if err is not None:
            raise err
        return member, ms.sorted()

    def _connected_long_enough(self, member_id: int) -> bool:
        return member_id == self.id or \
            self._connected_since(member_id, time.time() - HEALTH_INTERVAL)

    def _check_add(self, member: Member) -> EtcdError | None:
        if not self._opts.strict_reconfig_check:
            return None
        return quorum_check_add(self.membership, member, self._connected_long_enough)

    def _check_remove(self, mid: int) -> EtcdError | None:
        if not self._opts.strict_reconfig_check:
            return None
        return quorum_check_remove(self.membership, mid, self._connected_long_enough,
                                   down=mid != self.id and
                                   self._transport.active_since(mid) is None)

    def _check_promote(self, mid: int) -> EtcdError | None:
        raw = self._raw
        ours = raw.match_index(self.id)
        if ours is None:
            return errors.NOT_LEADER  # only the leader knows how far the learner is
        return learner_check_promote(self.membership, raw.match_index(mid) or 0, ours,
                                     self._opts.strict_reconfig_check)

    async def _on_request(self, from_id: int, payload: bytes) -> bytes:
        """Peer REQUEST connections: the member list for a joining member, and Cluster
        RPCs forwarded to the leader."""
        doc = json.loads(payload)
        op = doc.pop("op")
        if op == "members":
            return members_to_json(self.cluster_id, self.membership.sorted())
        try:
            if self._role != Role.LEADER:
                raise errors.NOT_LEADER
            member, members = await self._member_op_here(op, doc)
        except EtcdError as e:
            return json.dumps({"error": [e.code.name, e.message]}).encode()
        return json.dumps({"member": member.to_json() if member else None,
                           "members": [m.to_json() for m in members]}).encode()

    async def move_leader(self, target: int) -> None:
        """Maintenance.MoveLeader on the leader. Raises EtcdError."""
        if self._role != Role.LEADER:
            raise errors.NOT_LEADER
        m = self.membership.members.get(target)
        if m is None or m.is_learner:
            raise errors.BAD_LEADER_TRANSFEREE
        deadline = time.monotonic() + self.request_timeout
        log.info("leadership transfer from %x to %x starting", self.id, target)
        self._raw.transfer_leader(target)
        self._wake.set()
        while self._lead != target:
            if time.monotonic() >= deadline or self._stopping:
                raise errors.TIMEOUT_LEADER_TRANSFER
            await asyncio.sleep(self._tick_s)
        log.info("leadership transfer from %x to %x finished", self.id, target)

    async def _transfer_on_shutdown(self) -> None:
        """As etcd does on a clean stop: give leadership to the most caught-up voter so
        that the cluster does not wait out an election timeout."""
        raw = self._raw
        voters = [v for v in raw.voters if v != self.id]
        if not voters:
            return
        target = max(voters, key=lambda v: raw.match_index(v) or 0)
        log.info("transferring leadership to %x before stopping", target)
        raw.transfer_leader(target)
        self._wake.set()
        deadline = time.monotonic() + self._opts.election_ms / 1000.0
        while self._lead != target and time.monotonic() < deadline:
            await asyncio.sleep(self._tick_s)

    def raft_status(self, tail: int) -> tuple[RaftStatus, list[Entry]]:
        """Raft's state and the last `tail` entries of the in-memory log, computed on
        request from what is already in memory (for the read-only status endpoint)."""
        mem = self._mem
        hi = mem.last_index() + 1
        lo = max(mem.first_index(), hi - max(0, tail))
        return self._raw.status(), (mem.entries(lo, hi) if lo < hi else [])

    def progress(self) -> dict[int, int]:
        """The leader's view of each member's log (member id -> match index); empty on
        followers."""
        return {mid: pr.match for mid, pr in self._raw.status().progress.items()}

    # ------------------------------------------------------------------ failures

    def _fail_all(self, err: EtcdError) -> None:
        for p in self._deadlines:
            if not p.future.done():
                p.future.set_result(err)
        self._deadlines.clear()
        self._queue.clear()
        self._by_id.clear()
        self._by_index.clear()
        self._fail_reads(err)

    def _fail_reads(self, err: EtcdError) -> None:
        _resolve(list(self._conf_waiters.values()), err)
        rnd = self._read_round
        if rnd is not None:
            _resolve(rnd.waiters, err)
            self._read_round = None
        _resolve(self._read_waiters, err)
        self._read_waiters = []
        for _, _, waiters in self._applied_waiters:
            _resolve(waiters, err)
        self._applied_waiters = []

    def _fail(self, e: BaseException, what: str) -> None:
        if self._failed:
            return
        self._failed = True
        log.critical("%s; stopping", what, exc_info=e)
        self._stopping = True
        self._fail_all(errors.STOPPED)
        if self._on_fatal is not None:
            self._on_fatal(e)

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def _index(e: Entry) -> int:
    return e.index


def _resolve(waiters: list[asyncio.Future[None]], err: EtcdError | None) -> None:
    for fut in waiters:
        if fut.done():
            continue
        if err is None:
            fut.set_result(None)
        else:
            fut.set_exception(err)


SLOW_FSYNC = 1.0  # seconds: etcd's warning threshold for a WAL sync


def _fsync_observer(observe: Callable[[float], None]) -> Callable[[float], None]:
    """The WAL sync histogram, plus etcd's warning for a sync slower than a second (runs
    on the WAL thread; logging is thread-safe)."""
    def observer(took: float) -> None:
        observe(took)
        if took > SLOW_FSYNC:
            log.warning("slow fdatasync: took %.3fs, expected less than %gs", took,
                        SLOW_FSYNC, extra={"fields": {"took": f"{took:.6f}s",
                                                      "expected-duration": f"{SLOW_FSYNC:g}s"}})
    return observer
