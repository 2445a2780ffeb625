"""etcdserverpb.Watch over grpc.aio: one bidirectional stream carries many watchers.
The work is petcd.server.watch's (the hub); here a task reads the client's requests
while the handler yields the stream's queued responses (raw bytes) in order. As in
etcd, a client that half-closes its side keeps receiving events until it cancels."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any, NamedTuple

import grpc
from google.protobuf.message import DecodeError

from petcd import errors
from petcd.api.authz import Authorizer
from petcd.api.h2.context import ServerContext
from petcd.auth import checks
from petcd.auth.store import AuthStore
from petcd.errors import EtcdError
from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.server.node import Node
from petcd.server.watch import INVALID_WATCH_ID, WatchStream

log = logging.getLogger("petcd.api.watch")


class ByteRange(NamedTuple):
    key: bytes
    range_end: bytes


def _check_watch(store: AuthStore, user: str, rev: int, r: ByteRange) -> EtcdError | None:
    return checks.permitted(store, user, rev, r.key, r.range_end, False)


class WatchService:
    def __init__(self, node: Node, *, response_limit: int,
                 progress_interval: float = 600.0) -> None:
        self._node = node
        self.hub = node.watch_hub(response_limit=response_limit,
                                  progress_interval=progress_interval)
        self._stopping = False
        self._auth = node.auth
        self._authz = Authorizer(node)

    def start(self) -> None:
        """Call on the event loop before the node applies anything: every commit from
        here on reaches the hub."""
        self._node.feed_watch_hub(self.hub)

    def close(self) -> None:
        """End every stream with etcd's "server stopped" (Unavailable: clients retry on
        another member and resume there)."""
        self._stopping = True
        for stream in list(self.hub.streams):
            stream.close()

    async def Watch(self, requests: AsyncIterator[bytes],
                    context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[bytes]:
        stream = self.hub.open_stream()
        if isinstance(context, ServerContext):  # petcd's h2 server: events go out directly
            stream.outlet = context.outlet()
        failure: list[str] = []
        reader = asyncio.get_running_loop().create_task(
            self._read(requests, stream, failure, context), name="watch-reader")
        try:
            async for msg in stream.messages():
                yield msg
            if failure:
                await context.abort(grpc.StatusCode.INTERNAL, failure[0])
            if self._stopping:
                await context.abort(errors.STOPPED.code, errors.STOPPED.message)
        finally:
            reader.cancel()
            stream.close()

    async def _refused(self, req: rpc.WatchCreateRequest,
                       context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
        """With auth enabled: why this watch may not be created (READ on its range at
        creation, as etcd checks; a from-key watch needs the whole range from its key,
        where etcd 3.4 checks only the key itself), or None."""
        end = req.range_end
        check = ByteRange(req.key or b"\x00", end)
        try:
            await self._authz.check(context, _check_watch, check)
        except EtcdError as e:
            # etcd sends its gRPC error's Go string as the reason.
            code = "".join(w.capitalize() for w in e.code.name.split("_"))
            return f"rpc error: code = {code} desc = {e.message}"
        return None

    async def _read(self, requests: AsyncIterator[bytes], stream: WatchStream,
                    failure: list[str], context: grpc.aio.ServicerContext[Any, Any]) -> None:
        parse = rpc.WatchRequest.FromString
        try:
            async for raw in requests:
                try:
                    req = parse(raw)
                except DecodeError as e:
                    # What gRPC-Go answers for a request it cannot decode.
                    failure.append(f"grpc: error unmarshalling request: {e}")
                    stream.close()
                    return
                kind = req.WhichOneof("request_union")
                if kind == "create_request":
                    if self._auth.enabled:
                        reason = await self._refused(req.create_request, context)
                        if reason is not None:
                            hub = stream.hub
                            stream.push(hub.control(
                                hub.revision, watch_id=INVALID_WATCH_ID, created=True,
                                canceled=True, cancel_reason=reason))
                            continue
                    stream.create(req.create_request)
                elif kind == "cancel_request":
                    stream.cancel(req.cancel_request.watch_id)
                elif kind == "progress_request":
                    stream.request_progress()
                # anything else is ignored, as etcd does
        except asyncio.CancelledError:
            raise
        except Exception as e:  # the client went away mid-read: the handler ends too
            log.debug("watch stream read ended: %r", e)
            with contextlib.suppress(Exception):
                stream.close()

    def handler(self) -> grpc.GenericRpcHandler[Any, Any]:
        return grpc.method_handlers_generic_handler("etcdserverpb.Watch", {
            "Watch": grpc.stream_stream_rpc_method_handler(self.Watch)})
