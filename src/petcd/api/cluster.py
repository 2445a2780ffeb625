"""etcdserverpb.Cluster (what tools need today: MemberList; the rest answers
UNIMPLEMENTED until built) and grpc.health.v1.Health. Maintenance: api/maintenance.py."""

from __future__ import annotations

from typing import Any

import grpc

from petcd.api.kv import raw_service
from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.server.node import Node


class ClusterService:
    def __init__(self, node: Node) -> None:
        self._node = node

    async def MemberList(self, raw: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        node = self._node
        resp = rpc.MemberListResponse(members=node.members())
        h = resp.header
        h.cluster_id, h.member_id, h.raft_term = node.cluster_id, node.member_id, node.term
        return resp.SerializeToString()

    def handler(self) -> grpc.GenericRpcHandler[Any, Any]:
        return raw_service("etcdserverpb.Cluster", {"MemberList": self.MemberList})


class HealthService:
    """grpc.health.v1.Health/Check, as etcd registers it: the empty service name (all of
    etcd's services) is SERVING. Messages are tiny, so they are encoded by hand."""

    _SERVING = b"\x08\x01"  # HealthCheckResponse{status: SERVING}

    def __init__(self, node: Node) -> None:
        self._node = node

    async def Check(self, raw: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        if raw:  # a non-empty service name (field 1): none is registered by name
            await context.abort(grpc.StatusCode.NOT_FOUND, "unknown service")
        if not self._node.healthy():
            return b"\x08\x02"  # NOT_SERVING
        return self._SERVING

    def handler(self) -> grpc.GenericRpcHandler[Any, Any]:
        return raw_service("grpc.health.v1.Health", {"Check": self.Check})
