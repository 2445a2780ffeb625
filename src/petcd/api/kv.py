"""etcdserverpb.KV over grpc.aio. Handlers take and return raw bytes: the request
size is checked from its length, the request is parsed once, and the constant part
of the response header (cluster_id, member_id, raft_term) is appended as bytes, not
re-encoded per call (protobuf merges a repeated embedded message field)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError
from google.protobuf.message import Message as PbMessage

from petcd import errors
from petcd.api import validate
from petcd.api.authz import Authorizer
from petcd.api.grpc_call import HeaderSuffix, abort, raw_service, starts_inline, undecodable
from petcd.auth import checks
from petcd.errors import EtcdError
from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.pb.wire import LazyMessage
from petcd.server import proposal as P
from petcd.server.node import Node
from petcd.server.proposal import ANON, entry_size

M = TypeVar("M", bound=PbMessage)
Q = TypeVar("Q", bound=PbMessage)

_EtcdError = EtcdError


class KVService:
    def __init__(self, node: Node, *, max_request_bytes: int, max_txn_ops: int) -> None:
        self._node = node
        self._max_request_bytes = max_request_bytes
        self._max_txn_ops = max_txn_ops
        self.header = HeaderSuffix(node)
        self._auth = node.auth
        self._authz = Authorizer(node)
        # grpc.aio (the grpcio fallback server) sends only bytes objects; ours takes any
        # buffer, so a large range is not copied once more.
        self.bytes_only = False

    async def _authorize(self, context: grpc.aio.ServicerContext[Any, Any], check: Any,
                         req: Any) -> tuple[str, int]:
        """(Auth enabled) the stamp of a permitted request; else the call ends."""
        try:
            if check is None:
                return await self._authz.admin(context)
            return await self._authz.check(context, check, req)
        except EtcdError as e:
            await abort(context, e)

    async def _authorized_read(self, context: grpc.aio.ServicerContext[Any, Any], check: Any,
                               req: Q, read: Callable[[Q], M]) -> M:
        """Read with auth enabled: permitted first, and refused if the auth state moved
        while it ran (etcd's doSerialize)."""
        _, rev = await self._authorize(context, check, req)
        resp = read(req)
        if self._auth.revision != rev:
            await abort(context, errors.AUTH_OLD_REVISION)
        return resp

    @starts_inline
    async def Range(self, raw: bytes,
                    context: grpc.aio.ServicerContext[Any, Any]
                    ) -> bytes | bytearray | LazyMessage:
        try:
            req = rpc.RangeRequest.FromString(raw)
        except DecodeError as e:
            await undecodable(context, e)
        if not req.key:
            await abort(context, errors.EMPTY_KEY)
        node = self._node
        if not req.serializable:
            # grpc_call.read_barrier inlined: no coroutine per read on the hottest call.
            barrier = node.read_barrier()
            if barrier is not None:
                try:
                    await barrier
                except EtcdError as e:
                    await abort(context, e)
        auth_rev = -1
        try:
            if self._auth.enabled:
                _, auth_rev = await self._authorize(context, checks.check_range, req)
            # Plain ranges are encoded straight from the store (one buffer, or pieces
            # made as they are sent for a large one); the rest go through the message.
            out: bytes | bytearray | LazyMessage | None = node.kv.range_bytes(
                req, self.header.get())
            if out is None:
                out = node.range(req).SerializeToString() + self.header.get()
            if auth_rev >= 0 and self._auth.revision != auth_rev:
                # The auth state moved while it ran (etcd's doSerialize).
                await abort(context, errors.AUTH_OLD_REVISION)
        except EtcdError as e:
            await abort(context, e)
        if not isinstance(out, LazyMessage):
            return bytes(out) if self.bytes_only and type(out) is bytearray else out
        # A RangeStream: pieces only where the server sends them (our HTTP/2 server).
        if self.bytes_only or not getattr(context, "lazy_messages", False):
            whole = out.read_all()
            return bytes(whole) if self.bytes_only else whole
        return out

    async def _propose(self, kind: str, raw: bytes, req: Any,
                       context: grpc.aio.ServicerContext[Any, Any], check: Any) -> bytes:
        n = len(raw)
        # (entry_size adds at most 24 bytes: computed only near the limit)
        if n + 24 > self._max_request_bytes and entry_size(n) > self._max_request_bytes:
            await abort(context, errors.REQUEST_TOO_LARGE)
        stamp = await self._authorize(context, check, req) if self._auth.enabled else ANON
        result = await self._node.propose(kind, raw, req, stamp)
        if type(result) is _EtcdError:
            await abort(context, result)
        out: bytes = result.SerializeToString() + self.header.get()
        return out

    @starts_inline
    def Put(self, raw: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> Awaitable[bytes]:
        # Not a coroutine itself: the checks need no await, so the call's one coroutine
        # is _propose's (or the abort's). Each layer of coroutines costs every call.
        try:
            req = rpc.PutRequest.FromString(raw)
        except DecodeError as e:
            return undecodable(context, e)
        try:
            validate.check_put(req)
        except EtcdError as e:
            return abort(context, e)
        return self._propose(P.PUT, raw, req, context, checks.check_put)

    @starts_inline
    async def DeleteRange(self, raw: bytes,
                          context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        try:
            req = rpc.DeleteRangeRequest.FromString(raw)
        except DecodeError as e:
            await undecodable(context, e)
        if not req.key:
            await abort(context, errors.EMPTY_KEY)
        return await self._propose(P.DELETE_RANGE, raw, req, context, checks.check_delete)

    @starts_inline
    def Txn(self, raw: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> Awaitable[bytes]:
        # (not a coroutine itself, as Put)
        try:
            req = rpc.TxnRequest.FromString(raw)
        except DecodeError as e:
            return undecodable(context, e)
        try:
            reads_only = validate.check_txn(req, self._max_txn_ops)
        except EtcdError as e:
            return abort(context, e)
        if not reads_only:
            return self._propose(P.TXN, raw, req, context, checks.check_txn)
        return self._read_txn(req, context)

    async def _read_txn(self, req: rpc.TxnRequest,
                        context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        """A txn of ranges only: a read, as in etcd (no log entry; a barrier unless all
        are serializable)."""
        node = self._node
        if not all(op.request_range.serializable for op in (*req.success, *req.failure)):
            barrier = node.read_barrier()
            if barrier is not None:
                try:
                    await barrier
                except EtcdError as e:
                    await abort(context, e)
        try:
            if self._auth.enabled:
                resp = await self._authorized_read(context, checks.check_txn, req,
                                                   node.read_txn)
            else:
                resp = node.read_txn(req)
        except EtcdError as e:
            await abort(context, e)
        return resp.SerializeToString() + self.header.get()

    @starts_inline
    async def Compact(self, raw: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        try:
            req = rpc.CompactionRequest.FromString(raw)
        except DecodeError as e:
            await undecodable(context, e)
        return await self._propose(P.COMPACTION, raw, req, context, None)

    def handler(self) -> grpc.GenericRpcHandler[Any, Any]:
        return raw_service("etcdserverpb.KV", {
            "Range": self.Range, "Put": self.Put, "DeleteRange": self.DeleteRange,
            "Txn": self.Txn, "Compact": self.Compact})

