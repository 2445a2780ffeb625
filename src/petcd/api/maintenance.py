"""etcdserverpb.Maintenance: Status, Alarm, Hash, HashKV, Defragment, Snapshot, MoveLeader.
Handlers are thin: the work is `node.maintenance`'s (petcd.server.maintenance), and the
Raft driver's for MoveLeader."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Any

import grpc

from petcd import errors
from petcd.api.authz import Authorizer, require_admin
from petcd.api.grpc_call import abort, parse_request
from petcd.errors import EtcdError
from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.server.alarm import ALARM
from petcd.server.node import Node
from petcd.server.proposal import varint

# Blob bytes per SnapshotResponse. etcd sends 32 KiB; clients only concatenate the
# blobs, and larger chunks cost far fewer Python-level messages.
SNAPSHOT_CHUNK = 1 << 20
_ACTIONS = (rpc.AlarmRequest.GET, rpc.AlarmRequest.ACTIVATE, rpc.AlarmRequest.DEACTIVATE)

Context = grpc.aio.ServicerContext[Any, Any]


def snapshot_message(remaining: int, blob: bytes) -> bytes:
    """A serialized SnapshotResponse{remaining_bytes, blob}, built without copying the
    blob into a message first."""
    out = b"\x10" + varint(remaining) if remaining else b""
    return out + b"\x1a" + varint(len(blob)) + blob


class MaintenanceService:
    """With auth enabled, Hash, HashKV, Defragment, Snapshot (etcd's authMaintenanceServer)
    and MoveLeader (petcd's addition: etcd 3.4 does not check it) need the root role."""

    def __init__(self, node: Node) -> None:
        self._node = node
        self._authz = Authorizer(node)

    def _header(self, h: rpc.ResponseHeader, revision: int) -> None:
        node = self._node
        h.cluster_id, h.member_id, h.raft_term = node.cluster_id, node.member_id, node.term
        h.revision = revision

    async def Status(self, raw: bytes, context: Context) -> bytes:
        node = self._node
        resp = node.status()
        if resp.leader == 0:
            resp.errors.append(errors.NO_LEADER.message)
        resp.errors.extend(node.maintenance.errors())
        return resp.SerializeToString()

    async def Alarm(self, raw: bytes, context: Context) -> bytes:
        req = await parse_request(rpc.AlarmRequest, raw, context)
        if req.action not in _ACTIONS:
            return b""  # etcd answers an unknown action with an empty response
        # Every action (GET too) goes through the log, as in etcd: all members agree.
        result = await self._node.propose(ALARM, raw, req)
        if type(result) is EtcdError:
            await abort(context, result)
        out: bytes = result.SerializeToString()
        return out

    async def Hash(self, raw: bytes, context: Context) -> bytes:
        await require_admin(self._authz, context, unconverted=True)
        h, rev = await self._node.maintenance.hash()
        resp = rpc.HashResponse(hash=h)
        self._header(resp.header, rev)
        return resp.SerializeToString()

    async def HashKV(self, raw: bytes, context: Context) -> bytes:
        req = await parse_request(rpc.HashKVRequest, raw, context)
        await require_admin(self._authz, context, unconverted=True)
        try:
            h, current, compact, hashed = await self._node.maintenance.hash_kv(req.revision)
        except EtcdError as e:
            await abort(context, e)
        resp = rpc.HashKVResponse(hash=h, compact_revision=compact, hash_revision=hashed)
        self._header(resp.header, current)
        return resp.SerializeToString()

    async def Defragment(self, raw: bytes, context: Context) -> bytes:
        await require_admin(self._authz, context, unconverted=True)
        try:
            await self._node.maintenance.defragment()
        except EtcdError as e:
            await abort(context, e)
        return b""  # etcd answers an empty DefragmentResponse

    async def Snapshot(self, raw: bytes, context: Context) -> AsyncIterator[bytes]:
        """The backend in chunks (remaining_bytes counting down), then one last message
        whose blob is the sha256 of all the bytes before it: `etcdctl snapshot save`
        writes the blobs to the file and checks that its size is 32 more than a
        multiple of 512; restore checks the digest."""
        await require_admin(self._authz, context, unconverted=True)
        f, total = await self._node.maintenance.snapshot()
        try:
            digest = hashlib.sha256()
            sent = 0
            while sent < total:
                chunk = f.read(min(SNAPSHOT_CHUNK, total - sent))
                if not chunk:
                    raise RuntimeError(f"snapshot copy ended at {sent} of {total} bytes")
                sent += len(chunk)
                digest.update(chunk)
                yield snapshot_message(total - sent, chunk)
            yield snapshot_message(0, digest.digest())
        finally:
            f.close()

    async def MoveLeader(self, raw: bytes, context: Context) -> bytes:
        req = await parse_request(rpc.MoveLeaderRequest, raw, context)
        await require_admin(self._authz, context)
        node = self._node
        try:
            await node.move_leader(req.targetID)
        except EtcdError as e:
            await abort(context, e)
        resp = rpc.MoveLeaderResponse()
        self._header(resp.header, node.revision)
        return resp.SerializeToString()

    def handler(self) -> grpc.GenericRpcHandler[Any, Any]:
        unary = {"Status": self.Status, "Alarm": self.Alarm, "Hash": self.Hash,
                 "HashKV": self.HashKV, "Defragment": self.Defragment,
                 "MoveLeader": self.MoveLeader}
        methods: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
            m: grpc.unary_unary_rpc_method_handler(fn) for m, fn in unary.items()}
        methods["Snapshot"] = grpc.unary_stream_rpc_method_handler(self.Snapshot)
        return grpc.method_handlers_generic_handler("etcdserverpb.Maintenance", methods)
