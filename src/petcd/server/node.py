"""The member as the API layer sees it: propose a mutation, wait for a read barrier,
read from the store, report status and membership, change membership. The API never
touches storage or the log directly: everything goes through the Raft driver
(server/raftnode/), a cluster of one included."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc
from google.protobuf.message import Message
from prometheus_client import CollectorRegistry

from petcd import ETCD_API_VERSION
from petcd.auth import tokens
from petcd.auth.apply import AuthApplier
from petcd.auth.login import Passwords
from petcd.auth.store import AuthStore
from petcd.errors import EtcdError
from petcd.lease import metrics as lease_metrics
from petcd.lease.apply import LeaseApplier
from petcd.lease.driver import LeaseDriver
from petcd.lease.lessor import Lessor, min_lease_ttl
from petcd.mvcc.backend import Backend
from petcd.mvcc.kvstore import KVStore
from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.raft import Entry
from petcd.raft import Status as RaftStatus
from petcd.server import member_metrics
from petcd.server.alarm import ALARM
from petcd.server.apply import Applier
from petcd.server.bootstrap import boot
from petcd.server.compactor import AutoCompactor, make_policy
from petcd.server.corruption import CorruptionMonitor, initial_check
from petcd.server.kv_requests import KVRequests
from petcd.server.maintenance import Maintenance
from petcd.server.member_client import MemberChannels
from petcd.server.membership import Member, Membership
from petcd.server.metrics import Metrics
from petcd.server.options import ServerOptions
from petcd.server.promoter import LearnerPromoter
from petcd.server.proposal import COMPACTION, Result, Stamp
from petcd.server.raftnode import RaftDriver
from petcd.server.raftnode.appendstats import AppendStats
from petcd.server.v2 import V2Keys
from petcd.server.watch import WatchHub, WatchMetrics
from petcd.transport import PeerTransport

log = logging.getLogger("petcd.server")

T = TypeVar("T")


class Node:
    """The member, as the API layer uses it. Calls: propose, read_barrier, range/read_txn,
    revision, status and membership, the lease calls, the watch hub, metrics_registry.
    Services it hands out whole: `maintenance` (alarms, quota, hashes, defragment,
    snapshots), `auth` (read for permission checks; written only by applying), `tokens`,
    `passwords`, `opts`. The API never touches the backend, the store, the applier or
    the log itself."""

    def __init__(self, opts: ServerOptions,
                 on_fatal: Callable[[BaseException], None] | None = None,
                 on_removed: Callable[[], None] | None = None, *,
                 transport_factory: Callable[..., PeerTransport] = PeerTransport) -> None:
        self.opts = opts
        self._member_channels = MemberChannels(opts)
        self._on_fatal = on_fatal
        self.member_dir = os.path.join(opts.data_dir, "member")
        os.makedirs(os.path.join(self.member_dir, "snap"), mode=0o700, exist_ok=True)
        os.chmod(opts.data_dir, 0o700)
        # The WAL makes every applied entry durable before it is applied, so the backend
        # may lag it: it commits in batches (--backend-batch-interval/-limit), and an LMDB
        # commit needs one fsync, not two: a crash or power loss loses at most what was
        # not committed (never corrupting the file), and it is applied again from the WAL.
        self.backend = Backend(os.path.join(self.member_dir, "snap", "db"),
                               sync=not opts.unsafe_no_fsync, metasync=False,
                               batch_limit=opts.backend_batch_limit,
                               background_commit=opts.backend_batch_limit > 1)
        self.store = KVStore(self.backend)
        self.kv = KVRequests(self.store, compact_budget=max(1, opts.compaction_batch_limit))
        self.metrics = Metrics()
        self.metrics.watch_sizes(self.backend.size, self.backend.size_in_use)
        self.metrics.watch_store(self.store)
        self._applier = Applier(self.backend, self.kv, self.metrics,
                                warn_after=opts.warning_apply_duration)
        self.membership = Membership(0, 0)
        booted = boot(opts, self.backend, self.membership)
        # (the backend may have been replaced by a snapshot's file while booting)
        self.store.reload()
        self._applier.applied_index, self._applier.applied_term = \
            self.backend.consistent_index()
        self.cluster_id = booted.cluster_id
        self.member_id = booted.local_id
        self._log = RaftDriver(opts, booted, self._applier, self.backend, self.membership,
                               self.metrics, on_fatal=on_fatal, on_removed=on_removed,
                               transport_factory=transport_factory)
        # Alarms, quota, hashes, defragment, snapshots (registers the `alarm` kind).
        self.maintenance = Maintenance(self)
        self._init_leases(opts)
        policy = make_policy(opts.auto_compaction_mode, opts.auto_compaction_retention,
                             time.monotonic())
        self.compactor = None if policy is None else AutoCompactor(
            policy, current_revision=lambda: self.store.current_revision,
            is_leader=lambda: self._log.is_leader, compact=self._compact)
        self.promoter = None if not opts.learner_auto_promote else LearnerPromoter(
            status=lambda: self._log.raft_status(0)[0], is_leader=lambda: self._log.is_leader,
            promote=self.promote_member)
        self.corruption = None
        if opts.corrupt_check_time > 0 or opts.compact_hash_check:
            self.corruption = CorruptionMonitor(
                hash_kv=self.maintenance.hash_kv, peers=self._peer_client_urls,
                is_leader=lambda: self._log.is_leader, member_id=self.member_id,
                raise_alarm=self._raise_corrupt,
                compact_revision=lambda: self.store.compact_revision,
                channel=self.member_channel,
                interval=opts.corrupt_check_time,
                compact_interval=opts.compact_hash_check_time if opts.compact_hash_check
                else 0.0)
        self._init_auth(opts)
        # The v2 store is applied on every member; only --enable-v2 serves its API.
        self.v2 = V2Keys(self.backend, self._applier.register, lambda: self._log.is_leader,
                         self.propose)
        self.metrics.watch_v2_store(lambda: self.v2.store)
        member_metrics.register(self, self.metrics.registry)
        self._watch_hubs: list[WatchHub] = []  # fed by feed_watch_hub
        self.backend.restore_hooks.append(self._reload_after_restore)

    def _reload_after_restore(self) -> None:
        """A snapshot from the leader replaced the backend file (on the loop thread, the
        apply path paused): everything derived from it is read again, in this order, each
        step reading what the ones before restored. (The Raft driver, which swapped the
        file, then matches its transport's peers to the member list read here.)"""
        self.store.reload()  # revisions, compaction under way
        self.membership.load(self.backend)  # the members and the removed IDs
        self.lessor.recover(self.store)  # leases and the keys attached to them
        self.auth.load()  # users, roles, whether auth is on
        self.maintenance.alarms.reload()  # alarms, then the write gates they set
        self.v2.load()  # the v2 keys tree, its index and history
        # Last, the watch hubs: the new revisions came without events, so every watcher
        # catches up from the (now reloaded) store.
        for hub in self._watch_hubs:
            hub.notify([], self.store.current_revision)

    def _init_leases(self, opts: ServerOptions) -> None:
        """The lessor: KV lease hook, apply handlers, and its driver on the event loop
        (renewals, expiry, forwarding; `self.leases` is what the API calls)."""
        self.lessor = Lessor(self.backend,
                             min_ttl=min_lease_ttl(opts.heartbeat_ms, opts.election_ms),
                             persist_checkpoints=opts.lease_checkpoint_persist)
        self.lessor.recover(self.store)
        lease_metrics.register(self.lessor, self.metrics.registry)
        self.store.lessor = self.lessor
        LeaseApplier(self.lessor, self.store).register(self._applier.register)
        self.leases = LeaseDriver(
            self.lessor, self, election_timeout=opts.election_ms / 1000,
            checkpoint_interval=opts.lease_checkpoint_interval if opts.lease_checkpoint
            else None)

    def _init_auth(self, opts: ServerOptions) -> None:
        """Users, roles and permissions (applied from the log), this member's token
        provider, password hashing; the apply path's permission gate."""
        self.auth = AuthStore(self.backend)
        self.tokens = tokens.from_option(opts.auth_token, opts.auth_token_ttl)
        if isinstance(self.tokens, tokens.SimpleTokens):
            self.auth.invalidate_listeners.append(self.tokens.invalidate)
        self.passwords = Passwords(opts.bcrypt_cost)
        applier = self._applier
        auth_applier = AuthApplier(self.auth, self.tokens, lambda: applier.index,
                                   self.lease_keys)
        auth_applier.register(applier.register)
        applier.auth = auth_applier

    # -- lifecycle
    async def listen_peers(self) -> None:
        """Bind the peer URLs; call before start()."""
        await self._log.listen()

    async def wait_ready(self, timeout: float) -> bool:
        """Until this member has joined (its name and client URLs are in the member list),
        at most `timeout` seconds; etcd serves clients only then."""
        try:
            async with asyncio.timeout(timeout):
                await self._log.ready.wait()
            return True
        except TimeoutError:
            return False

    def start(self) -> None:
        self._log.start()
        self.leases.start()
        self.v2.start()
        if self.compactor is not None:
            self.compactor.start()
        if self.corruption is not None:
            self.corruption.start()
        if self.promoter is not None:
            self.promoter.start()
        log.info("member %x of cluster %x started (applied index %d, revision %d)",
                 self.member_id, self.cluster_id, self._log.applied_index,
                 self.store.current_revision)

    async def stop(self) -> None:
        if self.promoter is not None:
            await self.promoter.stop()
        if self.corruption is not None:
            await self.corruption.stop()
        if self.compactor is not None:
            await self.compactor.stop()
        await self.leases.stop()
        await self.v2.stop()
        await self._log.stop()
        self.maintenance.close()
        self.backend.close()

    def fatal(self, exc: BaseException) -> None:
        """The member cannot go on (a storage failure): stop it, as etcd panics."""
        log.critical("fatal: %s", exc)
        if self._on_fatal is not None:
            self._on_fatal(exc)

    # -- extension points for the layers built on the log (lease, watch, auth, alarms)
    @property
    def applier(self) -> Applier:
        """Register apply handlers for new request kinds and commit listeners here."""
        return self._applier

    def add_leader_listener(self, listener: Callable[[int, int], None]) -> None:
        self._log.add_leader_listener(listener)

    # -- the seam the API calls
    @property
    def term(self) -> int:
        return self._log.term

    @property
    def leader_id(self) -> int:
        """The leader this member knows of (0: none)."""
        return self._log.leader_id

    @property
    def is_leader(self) -> bool:
        return self._log.is_leader

    @property
    def append_stats(self) -> AppendStats:
        """Append messages sent and received (etcd's v2 server stats)."""
        return self._log.peers.append_stats

    @property
    def is_learner(self) -> bool:
        return self._log.is_learner

    @property
    def committed_index(self) -> int:
        return self._log.committed_index

    def peer_traffic(self) -> tuple[dict[int, int], dict[int, int]]:
        return self._log.peer_traffic()

    @property
    def applied_index(self) -> int:
        return self._log.applied_index

    @property
    def request_timeout(self) -> float:
        """etcd's request timeout: 5 s + 2 election timeouts."""
        return self._log.request_timeout

    def propose(self, kind: str, raw: bytes, request: Message,
                stamp: Stamp = None) -> asyncio.Future[Result]:
        """Queue a mutation (kind: a petcd.server.proposal constant; raw: the client's
        request bytes; request: the same, parsed; stamp: who asked and the auth revision
        their permissions were checked at, None for the member's own requests). Resolves
        to the response message or the EtcdError to answer, once the write is durable and
        applied."""
        return self._log.propose(kind, raw, request, stamp)

    async def call_leader(self, here: Callable[[], Awaitable[T]],
                          there: Callable[[int], Awaitable[T]], deadline: float) -> T:
        """here() on the leader, else there(leader id), retried on LeaderUnreachable
        until `deadline` (loop time); see raftnode.leadership.LeaderWatch."""
        return await self._log.call_leader(here, there, deadline)

    def member_channel(self, url: str) -> grpc.aio.Channel:
        """A gRPC channel to another member's client URL, with this member's TLS."""
        return self._member_channels.channel(url)

    def _peer_client_urls(self) -> list[tuple[int, list[str]]]:
        return [(m.id, list(m.client_urls)) for m in self.membership.sorted()
                if m.id != self.member_id]

    async def initial_corrupt_check(self) -> None:
        """--experimental-initial-corrupt-check: raises RuntimeError on a mismatch."""
        await initial_check(self.maintenance.hash_kv, self._peer_client_urls(),
                            self.member_channel)

    async def _raise_corrupt(self, member_id: int) -> None:
        req = rpc.AlarmRequest(action=rpc.AlarmRequest.ACTIVATE, memberID=member_id,
                               alarm=rpc.CORRUPT)
        result = await self.propose(ALARM, req.SerializeToString(), req)
        if isinstance(result, EtcdError):
            raise result()

    async def _compact(self, revision: int) -> None:
        """A Compact request through the log, as a client's would go (raises EtcdError)."""
        req = rpc.CompactionRequest(revision=revision)
        result = await self.propose(COMPACTION, req.SerializeToString(), req)
        if isinstance(result, EtcdError):
            raise result()

    def read_barrier(self) -> Awaitable[None] | None:
        """For a linearizable read: None if it may run now, else an awaitable that
        completes when this member has applied everything committed before the call."""
        return self._log.read_barrier()

    def range(self, request: rpc.RangeRequest) -> rpc.RangeResponse:
        """A read straight from the store (serializable; after a barrier, linearizable)."""
        return self.kv.range(request)

    def read_txn(self, request: rpc.TxnRequest) -> rpc.TxnResponse:
        """A txn made of ranges only, read straight from the store (as `range`)."""
        return self.kv.txn(None, request)

    @property
    def revision(self) -> int:
        """The store's current revision (what response headers carry)."""
        return self.store.current_revision

    @property
    def metrics_registry(self) -> CollectorRegistry:
        """Where the API layer registers its own metrics (served at /metrics)."""
        return self.metrics.registry

    # -- watch: the hub reads the store and is fed every applied batch
    def watch_hub(self, *, response_limit: int, progress_interval: float) -> WatchHub:
        hub = WatchHub(self.store, cluster_id=self.cluster_id, member_id=self.member_id,
                       term=lambda: self.term, response_limit=response_limit,
                       progress_interval=progress_interval)
        self.metrics.registry.register(WatchMetrics(hub))
        return hub

    def feed_watch_hub(self, hub: WatchHub) -> None:
        """Call on the event loop before start(): every commit from here on reaches the
        hub; after a snapshot install, _reload_after_restore tells it last."""
        hub.revision = self.store.current_revision
        self._applier.add_commit_listener(hub.commit_listener())
        self._watch_hubs.append(hub)

    # -- leases (renewals and TTLs are the lease driver's: no log entry)
    def new_lease_id(self) -> int:
        return self.leases.new_id()

    def renew_lease_now(self, lease_id: int) -> int | None:
        """Keep-alive fast path: the TTL, 0 for a missing lease, None: call renew_lease."""
        return self.leases.renew_now(lease_id)

    async def renew_lease(self, lease_id: int, *, forwarded: bool = False) -> int:
        return await self.leases.renew(lease_id, forwarded=forwarded)

    async def lease_time_to_live(self, lease_id: int, keys: bool, *,
                                 forwarded: bool = False) -> rpc.LeaseTimeToLiveResponse:
        return await self.leases.time_to_live(lease_id, keys, forwarded=forwarded)

    def lease_ids(self) -> list[int]:
        return self.leases.leases()

    def lease_keys(self, lease_id: int) -> list[bytes]:
        """The keys attached to a lease ([] if there is no such lease)."""
        lease = self.lessor.get(lease_id)
        return [] if lease is None else self.lessor.keys_of(lease)

    async def bootstrap_defrag(self, threshold_mb: int) -> None:
        """--experimental-bootstrap-defrag-threshold-megabytes: defragment before serving
        when at least that much of the backend file is free pages."""
        backend = self.backend
        free = backend.size() - backend.size_in_use()
        if threshold_mb <= 0 or free < threshold_mb * 1024 * 1024:
            return
        log.info("defragmenting at start: %d MB of %d MB free (threshold %d MB)",
                 free >> 20, backend.size() >> 20, threshold_mb)
        await self.maintenance.defragment()

    def status(self) -> rpc.StatusResponse:
        resp = rpc.StatusResponse(
            version=ETCD_API_VERSION,
            dbSize=self.backend.size(),
            dbSizeInUse=self.backend.size_in_use(),
            leader=self._log.leader_id,
            raftIndex=self._log.committed_index,
            raftTerm=self.term,
            raftAppliedIndex=self._log.applied_index,
            isLearner=self._log.is_learner,
        )
        h = resp.header
        h.cluster_id, h.member_id, h.raft_term = self.cluster_id, self.member_id, self.term
        h.revision = self.store.current_revision
        return resp

    def raft_status(self, tail: int) -> tuple[RaftStatus, list[Entry]]:
        """Raft's state and the last `tail` log entries (read-only; see api/raft_status)."""
        return self._log.raft_status(tail)

    def members(self) -> list[rpc.Member]:
        return [m.to_pb() for m in self.membership.sorted()]

    def member_list(self) -> list[Member]:
        """The members by ID (the v2 API renders them itself)."""
        return self.membership.sorted()

    def member(self, member_id: int) -> Member | None:
        return self.membership.members.get(member_id)

    def was_removed(self, member_id: int) -> bool:
        return member_id in self.membership.removed

    # -- membership changes (run by the leader; other members forward them). Each raises
    # EtcdError and returns (the member concerned or None, the member list after it).
    async def add_member(self, peer_urls: list[str], is_learner: bool
                         ) -> tuple[Member | None, list[Member]]:
        return await self._log.member_op("add", peerURLs=peer_urls, isLearner=is_learner)

    async def remove_member(self, member_id: int) -> tuple[Member | None, list[Member]]:
        return await self._log.member_op("remove", id=member_id)

    async def update_member(self, member_id: int, peer_urls: list[str]
                            ) -> tuple[Member | None, list[Member]]:
        return await self._log.member_op("update", id=member_id, peerURLs=peer_urls)

    async def promote_member(self, member_id: int) -> tuple[Member | None, list[Member]]:
        try:
            result = await self._log.member_op("promote", id=member_id)
        except EtcdError as e:
            self.metrics.learner_promote_failures.labels(e.message).inc()
            raise
        self.metrics.learner_promote_successes.inc()
        return result

    async def move_leader(self, target_id: int) -> None:
        """Hand leadership to a voter (only on the leader). Raises EtcdError."""
        await self._log.move_leader(target_id)

    def healthy(self) -> bool:
        """Serving, with a leader (etcd's /health also waits for a read to go through)."""
        return not self._log.stopped and self._log.leader_id != 0
