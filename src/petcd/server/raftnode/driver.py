"""The Raft driver: the replicated log every member (a cluster of one too) writes through.
One asyncio task runs the Ready loop of petcd.raft.RawNode (ready.py).

Here: the wiring, the lifecycle and what the member (server/node.py) calls. Beside it,
one module per seam: ready.py (the loop above; pipeline.py, its lone voter's WAL
pipeline), proposals.py (the proposal tracker),
applying.py (the apply queue, a second task), reads.py (ReadIndex batching),
snapshots.py, members.py (conf changes, Cluster RPCs, publishing), leadership.py
(leader state, the call_leader helper, MoveLeader), peers.py (the transport's side).
Callers are answered after their entry is applied on this member.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from google.protobuf.message import Message as PbMessage

from petcd import errors
from petcd.errors import EtcdError
from petcd.mvcc.backend import Backend
from petcd.raft import (
    Config,
    Entry,
    EntryType,
    Message,
    RawNode,
    Role,
)
from petcd.raft.errors import RaftError
from petcd.raft.rawnode import Status as RaftStatus
from petcd.server.apply import Applier
from petcd.server.bootstrap import Boot
from petcd.server.membership import CONF_CHANGE_KIND, Member, Membership
from petcd.server.metrics import Metrics
from petcd.server.ops_watch import OpsWatch
from petcd.server.options import ServerOptions
from petcd.server.peer_metrics import PeerMetrics
from petcd.server.proposal import Committed, Result, Stamp
from petcd.server.raftnode.applying import ApplyQueue
from petcd.server.raftnode.leadership import Leadership
from petcd.server.raftnode.members import MemberOps
from petcd.server.raftnode.peers import Peers
from petcd.server.raftnode.proposals import Pending, ProposalTracker
from petcd.server.raftnode.reads import LinearizableReads
from petcd.server.raftnode.ready import COMMIT_DEFER, ReadyLoop
from petcd.server.raftnode.slice import request_short_slice
from petcd.server.raftnode.snapshots import Snapshots
from petcd.server.raftnode.walwriter import WalWriter
from petcd.server.worker import Worker
from petcd.transport import PeerTransport, SnapshotStream, TransportConfig

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_APPLY_GAP = 5000  # committed - applied beyond which new proposals are refused

_CONF_CHANGE = EntryType.CONF_CHANGE


class RaftDriver:
    def __init__(self, opts: ServerOptions, boot: Boot, applier: Applier, backend: Backend,
                 membership: Membership, metrics: Metrics | None = None, *,
                 on_fatal: Callable[[BaseException], None] | None = None,
                 on_removed: Callable[[], None] | None = None,
                 transport_config: TransportConfig | None = None,
                 transport_factory: Callable[..., PeerTransport] = PeerTransport) -> None:
        self.opts = opts
        self.id = boot.local_id
        self.cluster_id = boot.cluster_id
        self.storage = boot.storage
        self.mem = boot.raft_storage
        self.applier = applier
        self.backend = backend
        self.membership = membership
        self.metrics = metrics
        self._on_fatal = on_fatal
        self._on_removed = on_removed
        self.tick_s = opts.heartbeat_ms / 1000.0
        self.ops = OpsWatch(self.id, self.tick_s, metrics)  # operator warnings
        self.election_ticks = max(2, opts.election_ms // max(1, opts.heartbeat_ms))
        self.request_timeout = 5.0 + 2 * opts.election_ms / 1000.0
        self.raw = RawNode(Config(
            id=self.id, election_tick=self.election_ticks, heartbeat_tick=1,
            applied=boot.applied, max_size_per_msg=1 << 20, max_inflight_msgs=256,
            pre_vote=opts.pre_vote, check_quorum=True, defer_commit=COMMIT_DEFER > 0),
            self.mem)
        if boot.bootstrap_peers:
            self.raw.bootstrap(boot.bootstrap_peers)
        applier.register(CONF_CHANGE_KIND, lambda batch, cc: membership.write(batch, cc))

        self._stopping = False
        self._failed = False
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[Any]] = set()
        self._ticker: asyncio.TimerHandle | None = None
        # Set once our name and client URLs are in the member list (etcd's ReadyNotify).
        self.ready = asyncio.Event()

        self.leadership = Leadership(self)
        self.members = MemberOps(self)
        self.proposals = ProposalTracker(self.id)
        self.reads = LinearizableReads(self.raw, lambda: applier.applied_index, self.wake,
                                       lambda: self._stopping, self.request_timeout,
                                       ops=self.ops)
        self.apply_queue = ApplyQueue(self.id, applier, backend, metrics,
                                      opts.backend_batch_interval_ms / 1000.0,
                                      self._after_apply, self.fail, lambda: self._stopping,
                                      opts.compaction_sleep_interval)
        self.wal_thread = Worker("petcd-wal")
        self.wal_writer = WalWriter(self.storage, self.wal_thread)
        self.peers = Peers(self)
        # (tests run members in one process over an in-memory transport)
        self.transport = transport_factory(
            self.id, self.cluster_id, list(opts.listen_peer_urls), self.peers.on_messages,
            self.snapshots_receive, config=transport_config, server_ssl=boot.server_ssl,
            client_ssl=boot.client_ssl, server_gate=boot.peer_gate,
            on_peer_status=self.peers.on_peer_status,
            on_rejected=self.peers.on_rejected, on_request=self.members.on_request)
        self.members.sync_transport()
        self.snapshots = Snapshots(self, boot.applied)
        self.ready_loop = ReadyLoop(self)
        if metrics is not None:
            self.storage.wal.fsync_observer = _fsync_observer(metrics.wal_fsync.observe)
            metrics.watch_storage(self.storage.wal, self.storage.snapshotter)
            metrics.watch_proposals(lambda: applier.applied_index,
                                    lambda: self.ready_loop.committed,
                                    lambda: self.proposals.in_flight,
                                    lambda: int(applier.compaction_pending))
            if isinstance(self.transport, PeerTransport):
                PeerMetrics(self.id, self.transport, metrics.registry)

    # ------------------------------------------------------------------ the seam

    @property
    def term(self) -> int:
        return self.ready_loop.term

    @property
    def last_index(self) -> int:
        return self.raw.last_index

    @property
    def committed_index(self) -> int:
        return self.ready_loop.committed

    @property
    def applied_index(self) -> int:
        return self.applier.applied_index

    @property
    def stopped(self) -> bool:
        return self._stopping

    @property
    def leader_id(self) -> int:
        return self.leadership.lead

    @property
    def is_leader(self) -> bool:
        return self.leadership.role == Role.LEADER

    @property
    def is_learner(self) -> bool:
        return self.raw.is_learner

    def peer_traffic(self) -> tuple[dict[int, int], dict[int, int]]:
        """Bytes sent to and received from each peer (lifetime), for metrics."""
        sent = {pid: st.sent_bytes for pid, st in self.transport.statuses().items()}
        return sent, dict(self.transport.received_bytes)

    def add_leader_listener(self, listener: Callable[[int, int], None]) -> None:
        self.leadership.add_listener(listener)

    async def call_leader(self, here: Callable[[], Awaitable[T]],
                          there: Callable[[int], Awaitable[T]], deadline: float) -> T:
        """Run a call on the leader: here() if this member leads, else there(leader);
        retried with the next leader on LeaderUnreachable (see LeaderWatch)."""
        return await self.leadership.watch.call_leader(here, there, deadline)

    async def listen(self) -> None:
        """Bind the peer URLs (before start(), so that a taken port fails the start)."""
        await self.transport.start()

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        # (this thread runs the Ready loop: woken sooner on a busy machine, see slice.py)
        request_short_slice()
        self.wal_writer.start()
        self.leadership.notify(self.ready_loop.term)
        self._tasks = [loop.create_task(self.ready_loop.run(), name="raft-ready-loop"),
                       loop.create_task(self.apply_queue.run(), name="raft-apply-loop")]
        self._ticker = loop.call_later(self.tick_s, self._on_tick)
        if self.applier.compaction_pending:
            self.apply_queue.kick()
        self.ready_loop.wake()

    async def stop(self) -> None:
        """Hand leadership over (if we lead others), refuse new proposals, fail those
        waiting, finish what is handed out, close."""
        if self._stopping and not self._tasks:
            return
        if not self._stopping and self.leadership.role == Role.LEADER:
            await self.leadership.transfer_on_shutdown()
        self._stopping = True
        self.leadership.watch.close()
        if self._ticker is not None:
            self._ticker.cancel()
        # Not in the log yet: refused now. Reads too. What the current Ready hands out
        # is still applied and answered with its result.
        self.proposals.refuse_queued(errors.STOPPED())
        self._fail_reads(errors.STOPPED())
        self.ready_loop.wake()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        self._fail_all(errors.STOPPED())  # proposed, but not committed in time
        for task in list(self._background):
            task.cancel()
        with contextlib.suppress(Exception):
            await self.transport.stop()
        self.apply_queue.stop()
        self.wal_writer.close()
        self.wal_thread.shutdown()
        self.storage.close()

    def propose(self, kind: str, raw: bytes, request: PbMessage,
                stamp: Stamp = None) -> asyncio.Future[Result]:
        fut: asyncio.Future[Result]
        if self._stopping:
            err: EtcdError | None = errors.STOPPED()
        elif self.raw.is_learner:
            err = errors.NOT_SUPPORTED_FOR_LEARNER()
        elif self.ready_loop.committed - self.applier.applied_index > MAX_APPLY_GAP:
            err = errors.TOO_MANY_REQUESTS()
        else:
            fut = self.proposals.add(kind, raw, request, stamp,
                                     time.monotonic() + self.request_timeout)
            self.ready_loop.proposed()
            return fut
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(err)
        return fut

    def read_barrier(self) -> Awaitable[None] | None:
        raw = self.raw
        if self.leadership.role == Role.LEADER and raw.voters == (self.id,):
            # A lone voter cannot be deposed without its own vote, and every write it
            # acknowledged is applied: nothing to wait for.
            return None
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._stopping:
            fut.set_exception(errors.STOPPED())
        elif raw.is_learner:
            fut.set_exception(errors.NOT_SUPPORTED_FOR_LEARNER())
        else:
            self.reads.wait(fut)
        return fut

    async def conf_change(self, cc: Any, *, timeout: float | None = None) -> EtcdError | None:
        return await self.members.conf_change(cc, timeout=timeout)

    async def member_op(self, op: str, **args: Any) -> tuple[Member | None, list[Member]]:
        return await self.members.member_op(op, **args)

    async def move_leader(self, target: int) -> None:
        await self.leadership.move_leader(target)

    def raft_status(self, tail: int) -> tuple[RaftStatus, list[Entry]]:
        """Raft's state and the last `tail` entries of the in-memory log, computed on
        request from what is already in memory (for the read-only status endpoint)."""
        mem = self.mem
        hi = mem.last_index() + 1
        lo = max(mem.first_index(), hi - max(0, tail))
        return self.raw.status(), (mem.entries(lo, hi) if lo < hi else [])

    def progress(self) -> dict[int, int]:
        """The leader's view of each member's log (member id -> match index); empty on
        followers."""
        return {mid: pr.match for mid, pr in self.raw.status().progress.items()}

    # ------------------------------------------------------------------ Ready loop

    def wake(self) -> None:
        self.ready_loop.wake()

    async def snapshots_receive(self, from_id: int, metadata: bytes,
                                chunks: SnapshotStream) -> None:
        await self.snapshots.receive(from_id, metadata, chunks)

    def step(self, m: Message) -> None:
        try:
            self.raw.step(m)
        except ValueError as e:
            log.warning("dropping a peer message: %s", e)
        except RaftError as e:
            self.fail(e, "the Raft core refused a message")

    def removed(self) -> None:
        if self._on_removed is not None:
            log.warning("the member has been permanently removed from the cluster")
            cb, self._on_removed = self._on_removed, None
            cb()

    # ------------------------------------------------------------------ after applying

    def _after_apply(self, entries: list[Committed], results: list[Result],
                     local: list[tuple[int, Pending]],
                     forwarded: list[tuple[int, int]]) -> None:
        failed = self.proposals.answer(results, local, forwarded,
                                       self.apply_queue.wait_physical)
        members = self.members
        if not self.ready.is_set() and members.published():
            self.ready.set()
        if members.waiting:
            members.conf_changes_applied(
                [c.request.id for c in entries if c.kind == CONF_CHANGE_KIND])
        metrics = self.metrics
        applied = self.applier.applied_index
        if failed and metrics is not None:
            metrics.proposals_failed.inc(failed)
        self.reads.release(applied)
        self.snapshots.maybe_take(applied)

    # ------------------------------------------------------------------ ticks

    def _on_tick(self) -> None:
        if self._stopping:
            return
        loop = asyncio.get_running_loop()
        self._ticker = loop.call_later(self.tick_s, self._on_tick)
        raw = self.raw
        raw.tick()
        for peer in self.transport.drain_unreachable():
            raw.report_unreachable(peer)
        now = time.monotonic()
        self.proposals.expire(now, self.leadership.timeout_error)
        self.reads.on_tick(now)
        self.members.on_tick(now, self.leadership.lead)
        self.ops.watch_followers(now, raw.status, self.opts.election_ms / 1000.0)
        self.ready_loop.wake()

    # ------------------------------------------------------------------ failures

    def _fail_all(self, err: EtcdError) -> None:
        self.proposals.fail_all(err)
        self._fail_reads(err)

    def _fail_reads(self, err: EtcdError) -> None:
        self.members.fail(err)
        self.reads.fail(err)

    def fail(self, e: BaseException, what: str) -> None:
        if self._failed:
            return
        self._failed = True
        log.critical("%s; stopping", what, exc_info=e)
        self._stopping = True
        self.leadership.watch.close()
        self._fail_all(errors.STOPPED())
        if self._on_fatal is not None:
            self._on_fatal(e)

    def spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


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
