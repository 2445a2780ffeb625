"""HTTP/JSON calls to the member's gRPC handlers, answered as etcd 3.4's grpc-gateway
answers them. The handlers are the ones the gRPC server serves (looked up by method
path in a Registry built from the same GenericRpcHandlers), so every service a branch
registers is on the gateway too, with the same validation and authentication."""

from __future__ import annotations

import asyncio
import codecs
import inspect
import logging
from collections.abc import AsyncIterator, Callable
from http import HTTPStatus
from typing import Any

import grpc
import grpc.aio
from google.protobuf.message import DecodeError, Message

from petcd.api.gateway import jsonpb
from petcd.api.gateway.context import GatewayContext, Metadata
from petcd.api.gateway.routes import ROUTES, Route, canonical
from petcd.api.h2.registry import Method
from petcd.api.http import Body, Reply, ResponseStream, Streamer
from petcd.api.http_wire import RequestBody

log = logging.getLogger("petcd.gateway")

_SC = grpc.StatusCode
_JSON = (b"Content-Type", b"application/json")
_TEXT = (b"Content-Type", b"text/plain; charset=utf-8")
_NOSNIFF = (b"X-Content-Type-Options", b"nosniff")
# What grpc-gateway copies from the gRPC response headers onto every success.
_GRPC_MD = (b"Grpc-Metadata-Content-Type", b"application/grpc")
_OK_HEADERS = [_JSON, _GRPC_MD]

# grpc-gateway's HTTPStatusFromCode.
HTTP_STATUS = {
    _SC.OK: 200, _SC.CANCELLED: 408, _SC.UNKNOWN: 500, _SC.INVALID_ARGUMENT: 400,
    _SC.DEADLINE_EXCEEDED: 504, _SC.NOT_FOUND: 404, _SC.ALREADY_EXISTS: 409,
    _SC.PERMISSION_DENIED: 403, _SC.UNAUTHENTICATED: 401, _SC.RESOURCE_EXHAUSTED: 429,
    _SC.FAILED_PRECONDITION: 412, _SC.ABORTED: 409, _SC.OUT_OF_RANGE: 400,
    _SC.UNIMPLEMENTED: 501, _SC.INTERNAL: 500, _SC.UNAVAILABLE: 503, _SC.DATA_LOSS: 500,
}

CallObserver = Callable[[str, grpc.StatusCode], None]


def error_reply(code: grpc.StatusCode, message: str) -> Reply:
    """grpc-gateway's error body: {"error", "message", "code"}."""
    text = jsonpb._go_string(message)
    body = f'{{"error":{text},"message":{text},"code":{code.value[0]}}}'
    return HTTP_STATUS.get(code, 500), [_JSON], body.encode()


def _stream_error(code: grpc.StatusCode, message: str) -> bytes:
    """An error after a stream's first message: grpc-gateway's StreamError chunk."""
    http = HTTP_STATUS.get(code, 500)
    return (f'{{"error":{{"grpc_code":{code.value[0]},"http_code":{http},"message":'
            f'{jsonpb._go_string(message)},"http_status":'
            f'"{HTTPStatus(http).phrase}"}}}}').encode()


_NOT_FOUND: Reply = (404, [_TEXT, _NOSNIFF], b"Not Found\n")
_NOT_ALLOWED: Reply = (405, [_TEXT, _NOSNIFF], b"Method Not Allowed\n")


def _metadata(headers: list[tuple[bytes, bytes]]) -> Metadata:
    """grpc-gateway's header forwarding: Authorization (etcd reads it as the token) and
    Grpc-Metadata-* headers."""
    md: list[tuple[str, str | bytes]] = []
    for k, v in headers:
        name = k.decode("latin-1").lower()
        if name == "authorization":
            value = v.decode("latin-1")
            md.append(("authorization", value))
            md.append(("token", value))
        elif name.startswith("grpc-metadata-"):
            md.append((name[len("grpc-metadata-"):], v.decode("latin-1")))
    return tuple(md)


class Gateway:
    def __init__(self, lookup: Callable[[str], Method | None], *, max_receive: int,
                 observe: CallObserver | None = None) -> None:
        self._lookup = lookup
        self._max_receive = max_receive
        self._observe = observe

    @staticmethod
    def serves(path: str) -> bool:
        return canonical(path) is not None

    @staticmethod
    def streams_body(path: str) -> bool:
        """Watch and LeaseKeepAlive read their requests as the body arrives."""
        canon = canonical(path)
        route = ROUTES.get(canon) if canon is not None else None
        return route is not None and route.client_streaming

    async def handle(self, method: str, target: str, headers: list[tuple[bytes, bytes]],
                     body: Body) -> Reply | Streamer:
        canon = canonical(target.partition("?")[0])
        route = ROUTES.get(canon) if canon is not None else None
        if route is None:
            return _NOT_FOUND
        if method != "POST":
            return _NOT_ALLOWED
        m = self._lookup(route.grpc_path)
        if m is None:
            return self._finish(route, _SC.UNIMPLEMENTED,
                                f"unknown service {route.grpc_path.split('/')[1]}")
        md = _metadata(headers)
        if route.client_streaming:
            return await self._bidi(route, m, md, body)
        if isinstance(body, RequestBody):  # (only streaming calls are given one)
            body = await _read_all(body)
        try:
            req = jsonpb.parse(body, route.request)
        except jsonpb.JsonError as e:
            return error_reply(_SC.INVALID_ARGUMENT, str(e))
        raw = req.SerializeToString()
        if len(raw) > self._max_receive:
            return self._too_large(route, len(raw))
        if route.server_streaming:
            return self._server_stream(route, m, md, raw)
        return await self._unary(route, m, md, raw)

    def _too_large(self, route: Route, size: int) -> Reply:
        return self._finish(route, _SC.RESOURCE_EXHAUSTED,
                            f"grpc: received message larger than max ({size} vs. "
                            f"{self._max_receive})")

    def _finish(self, route: Route, code: grpc.StatusCode, details: str) -> Reply:
        if self._observe is not None:
            self._observe(route.grpc_path, code)
        return error_reply(code, details)

    async def _unary(self, route: Route, m: Method, md: Metadata, raw: bytes) -> Reply:
        ctx = GatewayContext(route.grpc_path, md)
        try:
            req = raw if m.deserialize is None else m.deserialize(raw)
            resp = await m.fn(req, ctx)
        except grpc.aio.AbortError:
            return self._finish(route, ctx.code(), ctx.details())
        except Exception as e:
            log.exception("gateway call %s failed", route.grpc_path)
            return self._finish(route, _SC.UNKNOWN, f"Unexpected {type(e)}: {e}")
        finally:
            ctx.finish()
        if ctx.code() is not _SC.OK:
            return self._finish(route, ctx.code(), ctx.details())
        try:
            out = _decode(route, resp if m.serialize is None else m.serialize(resp))
        except DecodeError as e:
            return self._finish(route, _SC.INTERNAL, f"grpc: failed to unmarshal: {e}")
        if self._observe is not None:
            self._observe(route.grpc_path, _SC.OK)
        return 200, _OK_HEADERS, jsonpb.to_json(out).encode()

    async def _bidi(self, route: Route, m: Method, md: Metadata,
                    body: Body) -> Reply | Streamer:
        """Watch and LeaseKeepAlive: the body is a sequence of JSON requests, handed to
        the call one by one as they arrive (the call starts at the first). As in etcd's
        gateway, a bad first one fails the call; a bad later one ends the requests (the
        stream stays open, as after the client's last request)."""
        values = _JsonValues(body, limit=2 * self._max_receive)
        try:
            first = await values.next()
            if first is not _END:
                first = jsonpb.from_value(first, route.request).SerializeToString()
        except jsonpb.JsonError as e:
            return error_reply(_SC.UNKNOWN, str(e))

        async def requests() -> AsyncIterator[Any]:
            value = first
            while value is not _END:
                raw = value if isinstance(value, bytes) else (
                    jsonpb.from_value(value, route.request).SerializeToString())
                if len(raw) > self._max_receive:
                    return
                yield raw if m.deserialize is None else m.deserialize(raw)
                try:
                    value = await values.next()
                except jsonpb.JsonError:
                    return

        return self._streamer(route, m, md, requests())

    def _server_stream(self, route: Route, m: Method, md: Metadata, raw: bytes) -> Streamer:
        req = raw if m.deserialize is None else m.deserialize(raw)
        return self._streamer(route, m, md, req)

    def _streamer(self, route: Route, m: Method, md: Metadata, arg: Any) -> Streamer:
        """The response side of a streaming call: headers at the first message (an error
        before it is an ordinary error reply), then one `{"result": ...}` line per
        message, flushed as it comes; the writer's backpressure reaches the handler."""

        async def run(out: ResponseStream) -> None:
            async def sink(message: Any) -> None:
                payload = message if m.serialize is None else m.serialize(message)
                line = b'{"result":' + jsonpb.to_json(_decode(route, payload)).encode() + b"}\n"
                if not out.started:
                    out.start(200, _OK_HEADERS)
                await out.write(line)

            streaming = route.client_streaming
            ctx = GatewayContext(route.grpc_path, md, requests=arg if streaming else None,
                                 sink=sink)
            code, details = _SC.OK, ""
            try:
                result = m.fn(arg, ctx)
                if inspect.isasyncgen(result):
                    try:
                        async for message in result:
                            await ctx.write(message)
                    finally:
                        await result.aclose()
                elif inspect.isawaitable(result):
                    await result
                code, details = ctx.code(), ctx.details()
            except grpc.aio.AbortError:
                code, details = ctx.code(), ctx.details()
            except asyncio.CancelledError:
                ctx.set_code(_SC.CANCELLED)
                if self._observe is not None:
                    self._observe(route.grpc_path, _SC.CANCELLED)
                raise
            except Exception as e:
                log.exception("gateway stream %s failed", route.grpc_path)
                code, details = _SC.UNKNOWN, f"Unexpected {type(e)}: {e}"
            finally:
                ctx.finish()
            if self._observe is not None:
                self._observe(route.grpc_path, code)
            if code is _SC.OK:
                if not out.started:
                    out.start(200, _OK_HEADERS)
                return
            if not out.started:
                status, headers, body = error_reply(code, details)
                out.start(status, headers)
                await out.write(body)
            else:
                await out.write(_stream_error(code, details))

        return run


_END: Any = object()


class _JsonValues:
    """Successive JSON values of a request body as its bytes arrive (as Go's
    json.Decoder reads the body in etcd's gateway). At most `limit` characters of a
    value still arriving are held: past that the body counts as malformed."""

    def __init__(self, body: Body, *, limit: int) -> None:
        self._body: RequestBody | None = None
        self._text = ""
        if isinstance(body, RequestBody):
            self._body = body
        else:
            self._text = body.decode("utf-8", "replace")
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._limit = limit

    async def next(self) -> Any:
        """The next value, or _END after the last; JsonError if malformed."""
        while True:
            more = self._body is not None
            found = jsonpb.next_value(self._text, 0, more=more)
            if found is not None:
                value, end = found
                self._text = self._text[end:]
                return value
            if not more:
                return _END
            if len(self._text) > self._limit:
                raise jsonpb.JsonError("request message too large")
            assert self._body is not None
            data = await self._body.read()
            if data:
                self._text += self._decoder.decode(data)
            else:
                self._text += self._decoder.decode(b"", final=True)
                self._body = None


async def _read_all(body: RequestBody) -> bytes:
    parts = []
    while data := await body.read():
        parts.append(data)
    return b"".join(parts)


def _decode(route: Route, payload: bytes) -> Message:
    return route.response.FromString(payload)
