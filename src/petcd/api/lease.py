"""etcdserverpb.Lease over grpc.aio, raw bytes in and out (see api/kv.py).

Grant and Revoke are proposals (applied by every member in log order). KeepAlive,
TimeToLive and Leases are answered from the lessor through the node's lease driver:
keep-alives renew on the leader only, one in-memory renewal per message, never a
log entry. Requests a follower forwarded carry the `petcd-lease-forwarded` metadata
and must not be forwarded again."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from petcd import errors
from petcd.api.authz import Authorizer
from petcd.api.grpc_call import HeaderSuffix, abort, undecodable
from petcd.api.quota import LEASE_OVERHEAD, check_quota
from petcd.auth import checks
from petcd.auth.store import AuthStore
from petcd.errors import EtcdError
from petcd.lease.apply import LEASE_GRANT, LEASE_REVOKE
from petcd.lease.driver import FORWARDED
from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.server.node import Node
from petcd.server.proposal import ANON, entry_size, varint

_EtcdError = EtcdError
Context = grpc.aio.ServicerContext[Any, Any]


def _forwarded(context: Context) -> bool:
    md = context.invocation_metadata()
    return md is not None and any(k == FORWARDED for k, _ in md)


def _nothing(store: AuthStore, user: str, rev: int, arg: Any) -> EtcdError | None:
    return None


def _readable(store: AuthStore, user: str, rev: int, keys: list[bytes]) -> EtcdError | None:
    for key in keys:
        err = checks.permitted(store, user, rev, key, b"", False)
        if err is not None:
            return err
    return None


def _int64(n: int) -> bytes:
    return varint(n & 0xFFFF_FFFF_FFFF_FFFF)


def _revision_header(revision: int) -> bytes:
    """`header {revision}`: merged by the client with the constant header suffix."""
    body = b"\x18" + varint(revision)
    return b"\x0a" + varint(len(body)) + body


# Per keep-alive stream: request bytes -> (lease ID, the response's ID field). A client
# renews the same few leases over and over: the same bytes parse to the same ID, so a
# renewal skips decoding and encoding. Bounded (emptied when full).
_MAX_STREAM_IDS = 1024


class LeaseService:
    def __init__(self, node: Node, *, max_request_bytes: int) -> None:
        self._node = node
        self._leases = node.leases  # the lease driver: renewals, TTLs, lease IDs
        self._new_id = self._leases.new_id
        self._max_request_bytes = max_request_bytes
        self.header = HeaderSuffix(node)
        self._auth = node.auth
        self._authz = Authorizer(node)
        self._quota_available = node.maintenance.quota_available
        self._rev_header: tuple[int, bytes] = (-1, b"")

    async def _check(self, context: Context, check: Any, arg: Any) -> tuple[str, int]:
        """With auth enabled: the stamp, or the call ends with the refusal."""
        try:
            return await self._authz.check(context, check, arg)
        except EtcdError as e:
            await abort(context, e)

    def _revision_header(self) -> bytes:
        """`header {revision}` at the current revision (made again only when it moved)."""
        revision = self._node.revision
        cached = self._rev_header
        if cached[0] != revision:
            cached = self._rev_header = (revision, _revision_header(revision))
        return cached[1]

    async def LeaseGrant(self, raw: bytes, context: Context) -> bytes:
        # The hot path inlined (no coroutine per step), as the KV handlers.
        try:
            req = rpc.LeaseGrantRequest.FromString(raw)
        except DecodeError as e:
            await undecodable(context, e)
        node = self._node
        # etcd's quota check before proposing: a grant near the quota raises NOSPACE.
        if not self._quota_available(LEASE_OVERHEAD):
            await check_quota(node, LEASE_OVERHEAD, context)
        if req.ID == 0:  # the server chooses; the log entry carries the choice
            req.ID = self._new_id()
            raw = req.SerializeToString()  # (upb: cheaper than appending a varint here)
        # etcd checks no permission for a grant, but an invalid token is refused.
        stamp = await self._check(context, _nothing, None) if self._auth.enabled else ANON
        # (entry_size adds at most 24 bytes: computed only near the limit)
        n = len(raw)
        if n + 24 > self._max_request_bytes and entry_size(n) > self._max_request_bytes:
            await abort(context, errors.REQUEST_TOO_LARGE)
        result = await node.propose(LEASE_GRANT, raw, req, stamp)
        if type(result) is _EtcdError:
            await abort(context, result)
        out: bytes = result.SerializeToString() + self.header.get()
        return out

    async def LeaseRevoke(self, raw: bytes, context: Context) -> bytes:
        try:
            req = rpc.LeaseRevokeRequest.FromString(raw)
        except DecodeError as e:
            await undecodable(context, e)
        node = self._node
        stamp = ANON
        if self._auth.enabled:  # WRITE on every attached key (checked again at apply)
            stamp = await self._check(context, checks.check_keys_writable,
                                      node.lease_keys(req.ID))
        if entry_size(len(raw)) > self._max_request_bytes:
            await abort(context, errors.REQUEST_TOO_LARGE)
        result = await node.propose(LEASE_REVOKE, raw, req, stamp)
        if type(result) is _EtcdError:
            await abort(context, result)
        out: bytes = result.SerializeToString() + self.header.get()
        return out

    async def LeaseKeepAlive(self, requests: AsyncIterator[bytes],
                             context: Context) -> AsyncIterator[bytes]:
        if self._node.is_learner:  # as etcd: a learner serves no stream
            await abort(context, errors.NOT_SUPPORTED_FOR_LEARNER)
        node = self._node
        forwarded = _forwarded(context)
        header = self.header
        revision_header = self._revision_header
        renew_now = self._leases.renew_now
        parse = rpc.LeaseKeepAliveRequest.FromString
        known: dict[bytes, tuple[int, bytes]] = {}
        async for raw in requests:
            seen = known.get(raw)
            if seen is None:
                try:
                    lease_id = parse(raw).ID
                except DecodeError as e:
                    await undecodable(context, e)
                if len(known) >= _MAX_STREAM_IDS:
                    known.clear()
                seen = known[raw] = (lease_id, b"\x10" + _int64(lease_id) if lease_id else b"")
            lease_id, id_field = seen
            # The revision is read before renewing (as etcd): a client never sees a
            # keep-alive succeed at a revision after the one revoking the lease.
            rev_header = revision_header()
            ttl = renew_now(lease_id)
            if ttl is None:
                try:
                    ttl = await node.renew_lease(lease_id, forwarded=forwarded)
                except EtcdError as e:
                    await abort(context, e)
            if ttl:
                yield rev_header + id_field + b"\x18" + _int64(ttl) + header.get()
            else:
                yield rev_header + id_field + header.get()

    async def LeaseTimeToLive(self, raw: bytes, context: Context) -> bytes:
        try:
            req = rpc.LeaseTimeToLiveRequest.FromString(raw)
        except DecodeError as e:
            await undecodable(context, e)
        if self._node.is_learner:
            await abort(context, errors.NOT_SUPPORTED_FOR_LEARNER)
        forwarded = _forwarded(context)
        # READ on every attached key (etcd 3.4.26/3.5.9 on), checked by the member the
        # client called (a follower's forwarded call carries no token).
        if self._auth.enabled and not forwarded:
            await self._check(context, _readable, self._node.lease_keys(req.ID))
        # On the leader: answered at once from its lessor; elsewhere asked of the leader.
        resp = self._leases.time_to_live_now(req.ID, req.keys)
        if resp is None:
            try:
                resp = await self._node.lease_time_to_live(req.ID, req.keys,
                                                            forwarded=forwarded)
            except EtcdError as e:
                await abort(context, e)
        return self._revision_header() + resp.SerializeToString() + self.header.get()

    async def LeaseLeases(self, raw: bytes, context: Context) -> bytes:
        if self._node.is_learner:
            await abort(context, errors.NOT_SUPPORTED_FOR_LEARNER)
        if self._auth.enabled:  # no permission needed (etcd), but a valid token if any
            await self._check(context, _nothing, None)
        resp = rpc.LeaseLeasesResponse()
        resp.header.revision = self._node.revision
        out = resp.leases
        for lease_id in self._node.lease_ids():
            out.add().ID = lease_id
        return resp.SerializeToString() + self.header.get()

    def handler(self) -> grpc.GenericRpcHandler[Any, Any]:
        unary = grpc.unary_unary_rpc_method_handler
        return grpc.method_handlers_generic_handler("etcdserverpb.Lease", {
            "LeaseGrant": unary(self.LeaseGrant),
            "LeaseRevoke": unary(self.LeaseRevoke),
            "LeaseKeepAlive": grpc.stream_stream_rpc_method_handler(self.LeaseKeepAlive),
            "LeaseTimeToLive": unary(self.LeaseTimeToLive),
            "LeaseLeases": unary(self.LeaseLeases),
        })
