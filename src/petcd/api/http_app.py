"""The HTTP/1.1 application on etcd's client URLs: routes (api/observe.py: /metrics,
/health, /livez, /readyz; api/gateway: the JSON gateway), /version and /debug/raft,
with etcd's CORS and host checks; and the types a route answers with (a reply, or a
response streamed over time). api/http.py is the connection that carries it."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol, cast

from petcd import ETCD_API_VERSION
from petcd.api import raft_status
from petcd.api.http_access import AccessControl
from petcd.api.http_wire import RequestBody
from petcd.server.node import Node

log = logging.getLogger("petcd.http")

Reply = tuple[int, list[tuple[bytes, bytes]], bytes]


class ResponseStream(Protocol):
    """A response sent as it is produced (chunked): start() once, then write()s, each
    flushed; write() waits while the client is not reading."""

    @property
    def started(self) -> bool: ...

    def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None: ...

    async def write(self, data: bytes) -> None: ...


Streamer = Callable[[ResponseStream], Awaitable[None]]
# The body is bytes, or a RequestBody read as it arrives for paths whose calls stream
# their requests (HttpApp.streams_body).
Body = bytes | RequestBody
Handler = Callable[[str, str, list[tuple[bytes, bytes]], Body], Awaitable[Reply | Streamer]]
# A handler of paths whose bodies always come whole (all but streaming calls).
BytesHandler = Callable[[str, str, list[tuple[bytes, bytes]], bytes],
                        Awaitable[Reply | Streamer]]
# A handler for a set of paths (the JSON gateway), tried before the built-in endpoints.
Route = tuple[Callable[[str], bool], Handler]

_TEXT = (b"Content-Type", b"text/plain; charset=utf-8")
_JSON = (b"Content-Type", b"application/json")
_NOSNIFF = (b"X-Content-Type-Options", b"nosniff")


def _version_body() -> bytes:
    major, minor = ETCD_API_VERSION.split(".")[:2]
    return json.dumps({"etcdserver": ETCD_API_VERSION,
                       "etcdcluster": f"{major}.{minor}.0"}, separators=(",", ":")).encode()


class HttpApp:
    def __init__(self, node: Node, *, routes: tuple[Route, ...] = (),
                 cors: tuple[str, ...] = ("*",), host_whitelist: tuple[str, ...] = ("*",),
                 tls: bool = False, metrics_only: bool = False) -> None:
        self._node = node
        self._metrics_only = metrics_only  # a --listen-metrics-urls listener
        self._version = _version_body()
        self._routes = routes
        self._access = AccessControl(cors, host_whitelist, tls)
        self._body_streams: tuple[Callable[[str], bool], ...] = ()

    def add_route(self, serves: Callable[[str], bool], handler: BytesHandler) -> None:
        # (given bytes only: a RequestBody goes to paths a streaming route names)
        self._routes = (*self._routes, (serves, cast(Handler, handler)))

    def add_streaming_route(self, serves: Callable[[str], bool], handler: Handler,
                            streams_body: Callable[[str], bool]) -> None:
        """streams_body(path): the handler takes that path's body as a RequestBody."""
        self._routes = (*self._routes, (serves, handler))
        self._body_streams = (*self._body_streams, streams_body)

    def streams_body(self, method: str, target: str) -> bool:
        if method != "POST" or not self._body_streams:
            return False
        path = target.split("?", 1)[0]
        return any(streams(path) for streams in self._body_streams)

    async def handle(self, method: str, target: str, headers: list[tuple[bytes, bytes]],
                     body: Body) -> Reply | Streamer:
        refused = self._access.refuse(headers)
        if refused is not None:
            return refused
        reply = await self._route(method, target, headers, body)
        cors = self._access.cors_headers(headers)
        if not cors:
            return reply
        if isinstance(reply, tuple):
            return reply[0], [*cors, *reply[1]], reply[2]
        return _with_headers(reply, cors)

    async def _route(self, method: str, target: str, headers: list[tuple[bytes, bytes]],
                     body: Body) -> Reply | Streamer:
        if method == "OPTIONS":  # a CORS preflight: etcd answers any path with 200
            return 200, [], b""
        path = target.split("?", 1)[0]
        for serves, handler in self._routes:
            if serves(path):
                return await handler(method, target, headers, body)
        if self._metrics_only:
            return 404, [_TEXT, _NOSNIFF], b"404 page not found\n"
        if path == raft_status.PATH:
            if method != "GET":
                return _not_allowed()
            if not raft_status.authorized(self._node, headers):
                return 401, [_TEXT, _NOSNIFF], b"unauthorized\n"
            return 200, [_JSON], raft_status.render(self._node, raft_status.tail_from(target))
        if path == "/version":
            if method != "GET":
                return _not_allowed()
            return 200, [_JSON], self._version
        return 404, [_TEXT, _NOSNIFF], b"404 page not found\n"


def _with_headers(streamer: Streamer, extra: list[tuple[bytes, bytes]]) -> Streamer:
    async def run(out: ResponseStream) -> None:
        class _Out:
            @property
            def started(self) -> bool:
                return out.started

            def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
                out.start(status, [*extra, *headers])

            async def write(self, data: bytes) -> None:
                await out.write(data)
        await streamer(_Out())
    return run


def _not_allowed() -> Reply:
    return 405, [(b"Allow", b"GET"), _TEXT, _NOSNIFF], b"Method Not Allowed\n"
