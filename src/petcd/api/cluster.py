"""etcdserverpb.Cluster and etcdserverpb.Maintenance: what tools need today
(MemberList, Status, Alarm list); the rest answers UNIMPLEMENTED until built."""

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


class MaintenanceService:
    def __init__(self, node: Node) -> None:
        self._node = node

    async def Status(self, raw: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        return self._node.status().SerializeToString()

    async def Alarm(self, raw: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        # No alarms exist yet (NOSPACE/CORRUPT come with quotas and corruption checks):
        # GET lists none; ACTIVATE/DEACTIVATE change nothing.
        node = self._node
        resp = rpc.AlarmResponse()
        h = resp.header
        h.cluster_id, h.member_id, h.raft_term = node.cluster_id, node.member_id, node.term
        h.revision = node.store.current_revision
        return resp.SerializeToString()

    def handler(self) -> grpc.GenericRpcHandler[Any, Any]:
        return raw_service("etcdserverpb.Maintenance", {"Status": self.Status,
                                                        "Alarm": self.Alarm})


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
