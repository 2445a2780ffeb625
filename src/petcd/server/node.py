"""The member as the API layer sees it: propose a mutation, wait for a read barrier,
read from the store, report status and membership. The API never touches storage
or the log directly, so the Raft driver can replace the local log behind `Node`."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable

from google.protobuf.message import Message

from petcd import ETCD_API_VERSION
from petcd.lease import metrics as lease_metrics
from petcd.lease.apply import LeaseApplier
from petcd.lease.driver import LeaseDriver
from petcd.lease.lessor import Lessor, min_lease_ttl
from petcd.mvcc.backend import Backend
from petcd.mvcc.kvstore import KVStore
from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.server.apply import Applier
from petcd.server.cluster import ClusterInfo, load_or_bootstrap
from petcd.server.kv_apply import KVApplier
from petcd.server.local_log import LocalLog
from petcd.server.metrics import Metrics
from petcd.server.options import ServerOptions
from petcd.server.proposal import Result
from petcd.server.replication import ReplicatedLog

log = logging.getLogger("petcd.server")


class Node:
    def __init__(self, opts: ServerOptions,
                 on_fatal: Callable[[BaseException], None] | None = None) -> None:
        self.opts = opts
        self._on_fatal = on_fatal
        self.member_dir = os.path.join(opts.data_dir, "member")
        os.makedirs(os.path.join(self.member_dir, "snap"), mode=0o700, exist_ok=True)
        os.chmod(opts.data_dir, 0o700)
        self.cluster: ClusterInfo = load_or_bootstrap(opts, self.member_dir)
        if len(self.cluster.members) > 1:
            # Until the Raft driver lands, a member can only be a cluster of one.
            raise SystemExit("petcd: clusters of more than one member need Raft, which is not "
                             "wired in yet; start a single member")
        self.backend = Backend(os.path.join(self.member_dir, "snap", "db"),
                               sync=not opts.unsafe_no_fsync)
        self.store = KVStore(self.backend)
        self.kv = KVApplier(self.store, compact_budget=max(1, opts.compaction_batch_limit))
        self.metrics = Metrics()
        self.metrics.watch_sizes(self.backend.size, self.backend.size_in_use)
        self.metrics.has_leader.set(1)
        self.metrics.is_leader.set(1)
        self.cluster_id = self.cluster.cluster_id
        self.member_id = self.cluster.local_id
        self._applier = Applier(self.backend, self.kv, self.metrics)
        self._log: ReplicatedLog = LocalLog(self._applier, self.member_id,
                                            max_batch=opts.max_batch_entries,
                                            on_fatal=on_fatal, metrics=self.metrics)
        self._init_leases(opts)

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

    # -- lifecycle
    def start(self) -> None:
        self._log.start()
        self.leases.start()
        log.info("member %x of cluster %x started (applied index %d, revision %d)",
                 self.member_id, self.cluster_id, self._log.applied_index,
                 self.store.current_revision)

    async def stop(self) -> None:
        await self.leases.stop()
        await self._log.stop()
        self.backend.close()

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

    def propose(self, kind: str, raw: bytes, request: Message) -> asyncio.Future[Result]:
        """Queue a mutation (kind: a petcd.server.proposal constant; raw: the client's
        request bytes; request: the same, parsed). Resolves to the response message or
        the EtcdError to answer, once the write is durable and applied."""
        return self._log.propose(kind, raw, request)

    def read_barrier(self) -> Awaitable[None] | None:
        """For a linearizable read: None if it may run now, else an awaitable that
        completes when this member has applied everything committed before the call."""
        return self._log.read_barrier()

    def range(self, request: rpc.RangeRequest) -> rpc.RangeResponse:
        """A read straight from the store (serializable; after a barrier, linearizable)."""
        return self.kv.range(request)

    def status(self) -> rpc.StatusResponse:
        resp = rpc.StatusResponse(
            version=ETCD_API_VERSION,
            dbSize=self.backend.size(),
            dbSizeInUse=self.backend.size_in_use(),
            leader=self.member_id,
            raftIndex=self._log.last_index,
            raftTerm=self.term,
            raftAppliedIndex=self._log.applied_index,
            isLearner=self.cluster.local.is_learner,
        )
        h = resp.header
        h.cluster_id, h.member_id, h.raft_term = self.cluster_id, self.member_id, self.term
        h.revision = self.store.current_revision
        return resp

    def members(self) -> list[rpc.Member]:
        return [rpc.Member(ID=m.id, name=m.name, peerURLs=m.peer_urls, clientURLs=m.client_urls,
                           isLearner=m.is_learner)
                for m in self.cluster.members.values()]

    def healthy(self) -> bool:
        return not self._log.stopped
