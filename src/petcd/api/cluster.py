"""etcdserverpb.Cluster (membership) and grpc.health.v1.Health. Membership changes run
on the leader: Node forwards them there from other members. Maintenance (MoveLeader
included): api/maintenance.py."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import grpc

from petcd import errors
from petcd.api.authz import Authorizer, require_admin
from petcd.api.grpc_call import abort, parse_request, raw_service, read_barrier
from petcd.errors import EtcdError
from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.server.membership import Member
from petcd.server.node import Node

Context = grpc.aio.ServicerContext[Any, Any]


def _peer_urls(urls: Any) -> list[str]:
    """Peer URLs as etcd's types.NewURLs accepts them: http(s)://host:port, no path."""
    out = []
    for text in urls:
        u = urlsplit(text)
        try:
            port = u.port
        except ValueError:
            port = None
        if u.scheme not in ("http", "https", "unix", "unixs") or not u.hostname or \
                port is None or u.path not in ("", "/") or u.query or u.fragment:
            raise errors.MEMBER_BAD_URLS()
        out.append(text)
    return sorted(out)


class ClusterService:
    """With auth enabled, membership changes need the root role (as etcd's)."""

    def __init__(self, node: Node) -> None:
        self._node = node
        self._authz = Authorizer(node)

    def _header(self, resp: Any) -> None:
        node = self._node
        h = resp.header
        h.cluster_id, h.member_id, h.raft_term = node.cluster_id, node.member_id, node.term

    async def _change(self, context: Context,
                      op: Callable[[], Awaitable[tuple[Member | None, list[Member]]]]
                      ) -> tuple[Member | None, list[Member]]:
        """A membership change: root only (with auth on), run on the leader; its error
        ends the call."""
        await require_admin(self._authz, context)
        try:
            return await op()
        except EtcdError as e:
            await abort(context, e)

    def _members(self, resp: Any, members: list[Member]) -> bytes:
        self._header(resp)
        resp.members.extend(m.to_pb() for m in members)
        out: bytes = resp.SerializeToString()
        return out

    async def MemberList(self, raw: bytes, context: Context) -> bytes:
        req = await parse_request(rpc.MemberListRequest, raw, context)
        node = self._node
        if req.linearizable:  # (etcd 3.5) served after a read barrier
            await read_barrier(node, context)
        resp = rpc.MemberListResponse(members=node.members())
        self._header(resp)
        return resp.SerializeToString()

    async def MemberAdd(self, raw: bytes, context: Context) -> bytes:
        req = await parse_request(rpc.MemberAddRequest, raw, context)
        member, members = await self._change(context, lambda: self._node.add_member(
            _peer_urls(req.peerURLs), req.isLearner))
        assert member is not None
        resp = rpc.MemberAddResponse(member=rpc.Member(ID=member.id, peerURLs=member.peer_urls,
                                                       isLearner=member.is_learner))
        return self._members(resp, members)

    async def MemberRemove(self, raw: bytes, context: Context) -> bytes:
        req = await parse_request(rpc.MemberRemoveRequest, raw, context)
        _, members = await self._change(context, lambda: self._node.remove_member(req.ID))
        return self._members(rpc.MemberRemoveResponse(), members)

    async def MemberUpdate(self, raw: bytes, context: Context) -> bytes:
        req = await parse_request(rpc.MemberUpdateRequest, raw, context)
        _, members = await self._change(context, lambda: self._node.update_member(
            req.ID, _peer_urls(req.peerURLs)))
        return self._members(rpc.MemberUpdateResponse(), members)

    async def MemberPromote(self, raw: bytes, context: Context) -> bytes:
        req = await parse_request(rpc.MemberPromoteRequest, raw, context)
        _, members = await self._change(context, lambda: self._node.promote_member(req.ID))
        return self._members(rpc.MemberPromoteResponse(), members)

    def handler(self) -> grpc.GenericRpcHandler[Any, Any]:
        return raw_service("etcdserverpb.Cluster", {
            "MemberList": self.MemberList, "MemberAdd": self.MemberAdd,
            "MemberRemove": self.MemberRemove, "MemberUpdate": self.MemberUpdate,
            "MemberPromote": self.MemberPromote})


class HealthService:
    """grpc.health.v1.Health/Check, as etcd registers it: the empty service name (all of
    etcd's services) is SERVING. Messages are tiny, so they are encoded by hand."""

    _SERVING = b"\x08\x01"  # HealthCheckResponse{status: SERVING}

    def __init__(self, node: Node) -> None:
        self._node = node

    async def Check(self, raw: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        if raw:  # a non-empty service name (field 1): none is registered by name
            await context.abort(grpc.StatusCode.NOT_FOUND, "unknown service")
        node = self._node
        if not node.healthy() or (node.opts.stop_grpc_service_on_defrag
                                  and node.maintenance.defragmenting):
            return b"\x08\x02"  # NOT_SERVING (--experimental-stop-grpc-service-on-defrag)
        return self._SERVING

    def handler(self) -> grpc.GenericRpcHandler[Any, Any]:
        return raw_service("grpc.health.v1.Health", {"Check": self.Check})
