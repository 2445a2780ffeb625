"""Locks and elections built on the member's own KV, Lease and Watch, as etcd builds
its v3lock / v3election services on its concurrency recipes.

The protocol (the same keys and transactions as etcd's, so petcd and etcd clients of
the raw keys interoperate):

- A lock or an election named N keeps its contenders under the prefix `N/`; a
  contender's key is `N/<lease ID in lower-case hex>`, attached to its lease. The
  contender whose key has the smallest create revision holds the lock (leads).
- Acquiring: one txn puts the key if it does not exist yet (else reads it: a session
  that already holds it re-enters) and reads the oldest key under the prefix. If that
  is not ours, wait: repeatedly find the newest key created before ours and watch it
  until it is deleted (by Unlock/Resign, or by its lease's revocation). Waiting is
  event-driven (a watcher on the member's hub), never polling.
- Ownership ends with the lease: an expired lease deletes the key, and the next
  contender in create-revision order is woken by that delete.

Every read is linearizable (a read barrier first) and every write is a proposal, so a
caller on a follower sees the same order as the leader. `Access.authorize` is the
hook for auth: it is called with the operations each step issues, as the KV service
would check them (api.authz.recipe_checker: as the caller, with auth enabled)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

from grpc import StatusCode

from petcd import errors
from petcd.errors import EtcdError
from petcd.lease.apply import LEASE_GRANT
from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.pb.mvccpb import kv_pb2
from petcd.server import proposal as P
from petcd.server.node import Node
from petcd.server.proposal import Stamp
from petcd.server.watch import WatchHub, prefix_end

# The TTL etcd's concurrency sessions grant when the caller gave no lease.
DEFAULT_SESSION_TTL = 60

# Not etcd errors: etcd returns these as plain Go errors (gRPC code Unknown).
NOT_LEADER = EtcdError(StatusCode.UNKNOWN, "election: not leader")
NO_LEADER = EtcdError(StatusCode.UNKNOWN, "election: no leader")
MISSING_LEADER_KEY = EtcdError(StatusCode.UNKNOWN, '"leader" field must be provided')
LOST_WATCHER = EtcdError(StatusCode.UNKNOWN, "lost watcher waiting for delete")



def as_plain(e: EtcdError) -> EtcdError:
    """etcd's lock and election servers call KV and Lease through an in-process client,
    which turns a status into a Go error: the client sees the same words with gRPC
    code Unknown."""
    return e if e.code == StatusCode.UNKNOWN else EtcdError(StatusCode.UNKNOWN, e.message)


_PUT = kv_pb2.Event.PUT
_DELETE = kv_pb2.Event.DELETE


def lease_key(prefix: bytes, lease: int) -> bytes:
    return prefix + format(lease, "x").encode()


def _first_created(prefix: bytes) -> rpc.RangeRequest:
    return rpc.RangeRequest(key=prefix, range_end=prefix_end(prefix), limit=1,
                            sort_order=rpc.RangeRequest.ASCEND,
                            sort_target=rpc.RangeRequest.CREATE)


def _last_created_before(prefix: bytes, max_create: int) -> rpc.RangeRequest:
    return rpc.RangeRequest(key=prefix, range_end=prefix_end(prefix), limit=1,
                            sort_order=rpc.RangeRequest.DESCEND,
                            sort_target=rpc.RangeRequest.CREATE,
                            max_create_revision=max_create)


def _create_rev_is(key: bytes, rev: int) -> rpc.Compare:
    return rpc.Compare(result=rpc.Compare.EQUAL, target=rpc.Compare.CREATE, key=key,
                       create_revision=rev)


class Access:
    """The member's KV, Lease and Watch as the recipes use them. Errors are raised as
    EtcdError, exactly as the services would answer them."""

    def __init__(self, node: Node, hub: WatchHub) -> None:
        self.node = node
        self.hub = hub
        # Auth hook: called with each request before it runs; raises the refusal or
        # returns the stamp its proposal carries (api.authz.recipe_checker, with the
        # caller's identity bound by the API layer).
        self.authorize: Callable[[object], Stamp] = lambda request: None

    def header(self, revision: int) -> rpc.ResponseHeader:
        n = self.node
        return rpc.ResponseHeader(cluster_id=n.cluster_id, member_id=n.member_id,
                                  raft_term=n.term, revision=revision)

    async def _propose(self, kind: str, req: rpc.TxnRequest | rpc.DeleteRangeRequest
                       | rpc.LeaseGrantRequest) -> object:
        stamp = self.authorize(req)
        result = await self.node.propose(kind, req.SerializeToString(), req, stamp)
        if isinstance(result, EtcdError):
            raise result()
        return result

    async def txn(self, req: rpc.TxnRequest) -> rpc.TxnResponse:
        resp = await self._propose(P.TXN, req)
        assert isinstance(resp, rpc.TxnResponse)
        return resp

    async def delete(self, key: bytes) -> rpc.DeleteRangeResponse:
        resp = await self._propose(P.DELETE_RANGE, rpc.DeleteRangeRequest(key=key))
        assert isinstance(resp, rpc.DeleteRangeResponse)
        return resp

    async def grant(self, ttl: int) -> int:
        req = rpc.LeaseGrantRequest(TTL=ttl, ID=self.node.new_lease_id())
        resp = await self._propose(LEASE_GRANT, req)
        assert isinstance(resp, rpc.LeaseGrantResponse)
        return resp.ID

    async def range(self, req: rpc.RangeRequest) -> rpc.RangeResponse:
        self.authorize(req)
        barrier = self.node.read_barrier()
        if barrier is not None:
            await barrier
        return self.node.range(req)

    async def watch(self, key: bytes, end: bytes, start: int
                    ) -> AsyncIterator[tuple[rpc.ResponseHeader, list[kv_pb2.Event]]]:
        """Event batches for [key, end) (end b"": the key alone) from revision `start`,
        until the caller stops iterating. Raises when the member stops or the start
        has been compacted (the caller re-reads and starts again)."""
        self.authorize(rpc.RangeRequest(key=key, range_end=end))
        stream = self.hub.open_stream()
        try:
            stream.create(rpc.WatchCreateRequest(key=key, range_end=end,
                                                 start_revision=start))
            async for raw in stream.messages():
                resp = rpc.WatchResponse.FromString(raw)
                if resp.canceled:
                    if resp.compact_revision:
                        raise errors.COMPACTED()
                    raise LOST_WATCHER()
                if resp.events:
                    yield resp.header, list(resp.events)
            raise errors.STOPPED()
        finally:
            stream.close()


class Recipes:
    """Lock, Unlock, Campaign, Proclaim, Leader, Observe and Resign over `Access`."""

    def __init__(self, access: Access) -> None:
        self.access = access
        self._cleanups: set[asyncio.Task[object]] = set()

    # -- waiting
    async def _wait_delete(self, key: bytes, rev: int) -> None:
        async for _, events in self.access.watch(key, b"", rev):
            if any(ev.type == _DELETE for ev in events):
                return

    async def _wait_older_gone(self, prefix: bytes, my_rev: int) -> rpc.ResponseHeader:
        """Until no key under `prefix` was created before `my_rev`: the header of the
        read that found none."""
        while True:
            resp = await self.access.range(_last_created_before(prefix, my_rev - 1))
            if not resp.kvs:
                return resp.header
            try:
                await self._wait_delete(resp.kvs[0].key, resp.header.revision)
            except EtcdError as e:
                if e.kind is not errors.COMPACTED:
                    raise
                # the watch start was compacted away: read again, from now

    def _in_background(self, work: Awaitable[object]) -> None:
        """Cleanup that must outlive a cancelled caller (its client went away)."""
        async def run() -> object:
            try:
                return await work
            except Exception:
                return None
        task: asyncio.Task[object] = asyncio.get_running_loop().create_task(run())
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    async def _session(self, lease: int) -> int:
        return lease if lease else await self.access.grant(DEFAULT_SESSION_TTL)

    # -- locks
    async def lock(self, name: bytes, lease: int) -> tuple[rpc.ResponseHeader, bytes]:
        """Blocks until `lease` holds the lock `name`; the header and the owner key."""
        lease = await self._session(lease)
        prefix = name + b"/"
        key = lease_key(prefix, lease)
        owner = rpc.RequestOp(request_range=_first_created(prefix))
        resp = await self.access.txn(rpc.TxnRequest(
            compare=[_create_rev_is(key, 0)],
            success=[rpc.RequestOp(request_put=rpc.PutRequest(key=key, lease=lease)), owner],
            failure=[rpc.RequestOp(request_range=rpc.RangeRequest(key=key)), owner]))
        my_rev = resp.header.revision
        if not resp.succeeded:
            my_rev = resp.responses[0].response_range.kvs[0].create_revision
        first = resp.responses[1].response_range.kvs
        if not first or first[0].create_revision == my_rev:
            return self.access.header(resp.header.revision), key
        try:
            hdr = await self._wait_older_gone(prefix, my_rev)
        except BaseException:
            # Given up (error, or the caller went away): leave the queue, as etcd does.
            self._in_background(self.access.delete(key))
            raise
        return self.access.header(hdr.revision), key

    async def unlock(self, key: bytes) -> rpc.ResponseHeader:
        resp = await self.access.delete(key)
        return self.access.header(resp.header.revision)

    # -- elections
    async def campaign(self, name: bytes, lease: int, value: bytes
                       ) -> tuple[rpc.ResponseHeader, bytes, int, int]:
        """Blocks until elected: (header, leader key, its create revision, lease)."""
        lease = await self._session(lease)
        prefix = name + b"/"
        key = lease_key(prefix, lease)
        resp = await self.access.txn(rpc.TxnRequest(
            compare=[_create_rev_is(key, 0)],
            success=[rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=value,
                                                              lease=lease))],
            failure=[rpc.RequestOp(request_range=rpc.RangeRequest(key=key))]))
        rev = resp.header.revision
        if not resp.succeeded:
            kv = resp.responses[0].response_range.kvs[0]
            rev = kv.create_revision
            if kv.value != value:
                try:
                    await self.proclaim(name, key, rev, lease, value)
                except BaseException:
                    self._in_background(self.resign(key, rev))
                    raise
        try:
            await self._wait_older_gone(prefix, rev)
        except asyncio.CancelledError:
            self._in_background(self.resign(key, rev))
            raise
        return self.access.header(resp.header.revision), key, rev, lease

    async def proclaim(self, name: bytes, key: bytes, rev: int, lease: int,
                       value: bytes) -> rpc.ResponseHeader:
        resp = await self.access.txn(rpc.TxnRequest(
            compare=[_create_rev_is(key, rev)],
            success=[rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=value,
                                                              lease=lease))]))
        if not resp.succeeded:
            raise NOT_LEADER()
        return self.access.header(resp.header.revision)

    async def resign(self, key: bytes, rev: int) -> rpc.ResponseHeader:
        resp = await self.access.txn(rpc.TxnRequest(
            compare=[_create_rev_is(key, rev)],
            success=[rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=key))]))
        return self.access.header(resp.header.revision)

    async def leader(self, name: bytes) -> tuple[rpc.ResponseHeader, kv_pb2.KeyValue]:
        resp = await self.access.range(_first_created(name + b"/"))
        if not resp.kvs:
            raise NO_LEADER()
        return self.access.header(resp.header.revision), resp.kvs[0]

    async def observe(self, name: bytes
                      ) -> AsyncIterator[tuple[rpc.ResponseHeader, kv_pb2.KeyValue]]:
        """Every leader in turn and every value it proclaims, in order, until the
        caller stops iterating."""
        prefix = name + b"/"
        while True:
            resp = await self.access.range(_first_created(prefix))
            if resp.kvs:
                hdr, kv = resp.header, resp.kvs[0]
            else:
                hdr, kv = await self._first_put(prefix, resp.header.revision)
            yield self.access.header(hdr.revision), kv
            # The leader's changes until its key goes.
            try:
                async for whdr, events in self.access.watch(kv.key, b"", hdr.revision + 1):
                    deleted = False
                    for ev in events:
                        if ev.type == _DELETE:
                            deleted = True
                            break
                        yield self.access.header(whdr.revision), ev.kv
                    if deleted:
                        break
            except EtcdError as e:
                if e.kind is not errors.COMPACTED:
                    raise

    async def _first_put(self, prefix: bytes, rev: int
                         ) -> tuple[rpc.ResponseHeader, kv_pb2.KeyValue]:
        async for whdr, events in self.access.watch(prefix, prefix_end(prefix), rev):
            for ev in events:
                if ev.type == _PUT:
                    hdr = rpc.ResponseHeader()
                    hdr.CopyFrom(whdr)
                    hdr.revision = ev.kv.mod_revision  # the batch may hold several puts
                    return hdr, ev.kv
        raise errors.STOPPED()  # unreachable: watch() raises when it ends
