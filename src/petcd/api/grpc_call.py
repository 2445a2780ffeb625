"""What every gRPC service of the API does with a call: decode the request as gRPC-Go
would, end the call with an etcd error, append the constant response header, and serve
unary methods on raw bytes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import grpc
from google.protobuf.message import DecodeError
from google.protobuf.message import Message as PbMessage

from petcd.errors import EtcdError
from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.server.node import Node
from petcd.server.proposal import varint

M = TypeVar("M", bound=PbMessage)
F = TypeVar("F", bound=Callable[..., Any])


def starts_inline(fn: F) -> F:
    """Mark a unary handler whose first step (up to its first await that really waits)
    our h2 server may run right in the read callback that completed the request, with
    no task (h2.call.Call.start). The handler promises that step needs no current task
    (no asyncio.timeout, no current_task()) and sets no context variables."""
    fn.starts_inline = True  # type: ignore[attr-defined]
    return fn


class HeaderSuffix:
    """Serialized `header {cluster_id member_id raft_term}` as field 1 of a response;
    rebuilt when the term changes."""

    __slots__ = ("_node", "_term", "bytes")

    def __init__(self, node: Node) -> None:
        self._node = node
        self._term = -1
        self.bytes = b""
        self.get()

    def get(self) -> bytes:
        term = self._node.term
        if term != self._term:
            h = rpc.ResponseHeader(cluster_id=self._node.cluster_id,
                                   member_id=self._node.member_id, raft_term=term)
            body = h.SerializeToString()
            self.bytes = b"\x0a" + varint(len(body)) + body
            self._term = term
        return self.bytes


async def undecodable(context: grpc.aio.ServicerContext[Any, Any], e: DecodeError) -> NoReturn:
    # What gRPC-Go answers for a request it cannot decode.
    await context.abort(grpc.StatusCode.INTERNAL, f"grpc: error unmarshalling request: {e}")
    raise AssertionError("unreachable: abort raises")


async def parse_request(message_type: type[M], raw: bytes,
                        context: grpc.aio.ServicerContext[Any, Any]) -> M:
    """The request decoded, or the call ended as gRPC-Go ends it. (The hot KV handlers
    inline this: one coroutine less per call.)"""
    try:
        return message_type.FromString(raw)
    except DecodeError as e:
        await undecodable(context, e)


async def abort(context: grpc.aio.ServicerContext[Any, Any], err: EtcdError) -> NoReturn:
    await context.abort(err.code, err.message)
    raise AssertionError("unreachable: abort raises")


async def read_barrier(node: Node, context: grpc.aio.ServicerContext[Any, Any]) -> None:
    """Wait until this member has applied what a linearizable read must see; a failed
    barrier (no leader, timeout) ends the call with its error."""
    barrier = node.read_barrier()
    if barrier is not None:
        try:
            await barrier
        except EtcdError as e:
            await abort(context, e)


def raw_service(name: str, methods: dict[str, Any]) -> grpc.GenericRpcHandler[Any, Any]:
    """A generic handler whose unary methods see and return serialized bytes."""
    return grpc.method_handlers_generic_handler(
        name, {m: grpc.unary_unary_rpc_method_handler(fn) for m, fn in methods.items()})
