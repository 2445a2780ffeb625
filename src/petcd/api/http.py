"""HTTP/1.1 on etcd's client URLs. Parsing is h11's; this module serves /version itself
and hands other paths to routes (api/observe.py: /metrics, /health, /livez, /readyz;
api/gateway: the JSON gateway), with etcd's CORS and host checks, and streams
responses that are produced over time (chunked, with backpressure)."""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence
from http import HTTPStatus
from typing import Protocol, cast

import h11

from petcd import ETCD_API_VERSION
from petcd.api import raft_status
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
Handler = Callable[[str, str, list[tuple[bytes, bytes]], bytes], Awaitable[Reply | Streamer]]
# A handler for a set of paths (the JSON gateway), tried before the built-in endpoints.
Route = tuple[Callable[[str], bool], Handler]

_CORS = [
    (b"Access-Control-Allow-Headers", b"accept, content-type, authorization"),
    (b"Access-Control-Allow-Methods", b"POST, GET, OPTIONS, PUT, DELETE"),
    (b"Access-Control-Allow-Origin", b"*"),
]
_TEXT = (b"Content-Type", b"text/plain; charset=utf-8")
_JSON = (b"Content-Type", b"application/json")
_NOSNIFF = (b"X-Content-Type-Options", b"nosniff")


_date_cache: tuple[int, bytes] = (0, b"")


def _date() -> bytes:
    """The Date header's value, formatted once per second (formatdate is slow)."""
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, email.utils.formatdate(now, usegmt=True).encode())
    return _date_cache[1]


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

    def add_route(self, serves: Callable[[str], bool], handler: Handler) -> None:
        self._routes = (*self._routes, (serves, handler))

    async def handle(self, method: str, target: str, headers: list[tuple[bytes, bytes]],
                     body: bytes) -> Reply | Streamer:
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
                     body: bytes) -> Reply | Streamer:
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


class AccessControl:
    """etcd's --cors and --host-whitelist for HTTP requests on the client URLs."""

    def __init__(self, cors: tuple[str, ...], hosts: tuple[str, ...], tls: bool) -> None:
        self._any_origin = not cors or "*" in cors
        self._origins = frozenset(cors)
        self._any_host = tls or not hosts or "*" in hosts  # TLS requests: any host
        self._hosts = frozenset(hosts)

    def cors_headers(self, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        if self._any_origin:
            return _CORS
        origin = _header(headers, b"origin")
        if origin is not None and origin in self._origins:
            return [*_CORS[:2], (b"Access-Control-Allow-Origin", origin.encode("latin-1"))]
        return []

    def refuse(self, headers: list[tuple[bytes, bytes]]) -> Reply | None:
        if self._any_host:
            return None
        host = _header(headers, b"host") or ""
        name = urllib.parse.urlsplit("//" + host).hostname or host
        if name in self._hosts or host in self._hosts:
            return None
        log.warning("rejecting HTTP request to prevent DNS rebinding attacks (host %r)", name)
        # etcd's words (and Go's http.Error newline); 421 Misdirected Request.
        return 421, [_TEXT, _NOSNIFF], (
            "\netcd received your request, but the Host header was unrecognized.\n\n"
            "To fix this, choose one of the following options:\n"
            "- Enable TLS, then any HTTPS request will be allowed.\n"
            "- Add the hostname you want to use to the whitelist in settings.\n"
            f"  - e.g. etcd --host-whitelist {json.dumps(name)}\n\n"
            "This requirement has been added to help prevent \"DNS Rebinding\" attacks "
            "(CVE-2018-5702).\n\n").encode()


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for k, v in headers:
        if k == name:  # h11 lowercases names
            return v.decode("latin-1")
    return None


def _not_allowed() -> Reply:
    return 405, [(b"Allow", b"GET"), _TEXT, _NOSNIFF], b"Method Not Allowed\n"


# Bounds of one HTTP/1.1 connection (docs/ARCHITECTURE.md): request line + headers,
# body, the time a request may take to arrive, and the idle time between requests.
MAX_HEADER_BYTES = 16 * 1024
MAX_BODY_BYTES = 4 * 1024 * 1024
REQUEST_TIMEOUT = 30.0
IDLE_TIMEOUT = 120.0


class HttpProtocol(asyncio.Protocol):
    """One HTTP/1.1 connection (keep-alive, one request at a time; reading pauses
    while a request is answered, so pipelined data is never buffered unread)."""

    def __init__(self, handler: Handler, *, max_body: int = MAX_BODY_BYTES,
                 request_timeout: float = REQUEST_TIMEOUT,
                 idle_timeout: float = IDLE_TIMEOUT) -> None:
        self._handler = handler
        self._conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        self._transport: asyncio.Transport | None = None
        self._request: h11.Request | None = None
        self._body = bytearray()
        self._busy = False
        self._streaming: asyncio.Task[object] | None = None
        self._reading_paused = False  # held back: a response runs and input piled up
        self._held = 0  # bytes received while a response runs (h11 holds them unparsed)
        self._drain: asyncio.Future[None] | None = None
        self._max_body = max_body
        self._request_timeout = request_timeout
        self._idle_timeout = idle_timeout
        self._timer: asyncio.TimerHandle | None = None
        self._receiving = False  # a request has started arriving
        self._write_paused = False  # the client does not read our answers
        # Set by the listener's connection accounting: called once when the connection ends.
        self.on_lost: Callable[[], None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self._arm(self._request_timeout)

    def _arm(self, seconds: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(seconds, self._timed_out)

    def _timed_out(self) -> None:
        self._timer = None
        if self._transport is None or self._busy:
            return
        if self._receiving:
            self._send_error(408, b"request timeout\n")
        else:
            self._transport.close()  # idle keep-alive connection

    def data_received(self, data: bytes) -> None:
        if not self._receiving:
            self._receiving = True
            self._arm(self._request_timeout)
        self._conn.receive_data(data)
        self._process()
        if not self._busy:
            return
        # (counted here: h11's trailing_data copies its whole buffer on every call)
        self._held += len(data)
        if self._transport is not None and self._held > INPUT_HOLD_BYTES:
            # Bytes sent ahead while a response (a watch: maybe for hours) is running
            # wait in h11's buffer: stop reading past this much.
            self._transport.pause_reading()
            self._reading_paused = True

    def eof_received(self) -> bool | None:
        self._conn.receive_data(b"")
        self._process()
        return None

    def _process(self) -> None:
        while not self._busy and not self._write_paused and self._transport is not None:
            try:
                event = self._conn.next_event()
            except h11.RemoteProtocolError as e:
                self._send_error(e.error_status_hint)
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.Request):
                self._request = event
                self._body.clear()
                length = _content_length(event.headers)
                if length is not None and length > self._max_body:
                    self._send_error(413, b"request body too large\n")
                    return
            elif isinstance(event, h11.Data):
                self._body += event.data
                if len(self._body) > self._max_body:
                    self._send_error(413, b"request body too large\n")
                    return
            elif isinstance(event, h11.EndOfMessage):
                self._busy = True
                self._held = 0
                if self._timer is not None:
                    self._timer.cancel()
                    self._timer = None
                # Reading pauses while the handler runs; a streamed response reads on
                # (so a client that goes away mid-stream is seen), bounded by
                # INPUT_HOLD_BYTES in data_received.
                self._transport.pause_reading()
                self._reading_paused = True
                asyncio.get_running_loop().create_task(self._respond())
                return
            elif isinstance(event, h11.ConnectionClosed):
                self._transport.close()
                return

    async def _respond(self) -> None:
        req = self._request
        assert req is not None
        try:
            reply = await self._handler(
                req.method.decode("latin-1"), req.target.decode("latin-1"), list(req.headers),
                bytes(self._body))
        except Exception:
            log.exception("HTTP handler failed")
            reply = 500, [_TEXT], b"internal server error\n"
        if isinstance(reply, tuple):
            self._send(*reply)
        else:
            if self._transport is not None and not self._write_paused:
                self._reading_paused = False
                self._transport.resume_reading()
            if not await self._stream(reply):
                return
        if self._transport is None:
            return
        if self._conn.our_state is h11.MUST_CLOSE or self._conn.their_state is h11.MUST_CLOSE:
            self._transport.close()
            return
        try:
            self._conn.start_next_cycle()
        except h11.LocalProtocolError:
            self._transport.close()
            return
        self._busy = False
        self._receiving = False
        self._arm(self._idle_timeout)
        if not self._write_paused:  # else resume_writing goes on
            self._reading_paused = False
            self._transport.resume_reading()
            self._process()

    def _send(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        if self._transport is None or self._transport.is_closing():
            return
        all_headers = [*headers,
                       (b"Date", _date()),
                       (b"Content-Length", str(len(body)).encode())]
        if self._request is not None and self._request.method == b"HEAD":
            body = b""  # the length of what GET would send, no body (as Go's server)
        try:
            out = self._conn.send(h11.Response(status_code=status, headers=all_headers,
                                               reason=HTTPStatus(status).phrase.encode()))
            out = (out or b"") + (self._conn.send(h11.Data(data=body)) or b"")
            out += self._conn.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError:
            self._transport.close()
            return
        self._transport.write(out)

    def _send_error(self, status: int, body: bytes = b"bad request\n") -> None:
        if self._conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            self._send(status, [_TEXT, (b"Connection", b"close")], body)
        if self._transport is not None:
            self._transport.close()

    # -- streamed responses (the gateway's watch, keep-alive, snapshot, observe)
    async def _stream(self, streamer: Streamer) -> bool:
        """Runs a streamed response; False if the connection is gone. Its output waits
        while the transport's buffer is over its high-water mark (OUTPUT_HIGH_WATER), so a
        client that stops reading holds its stream back instead of growing memory."""
        out = _ChunkedOut(self)
        self._streaming = asyncio.current_task()
        try:
            await streamer(out)
        except asyncio.CancelledError:
            if self._transport is not None:
                raise
            return False  # cancelled by connection_lost: the client went away
        except Exception:
            log.exception("HTTP streamed response failed")
            if not out.started:
                self._send(500, [_TEXT], b"internal server error\n")
                return self._transport is not None
            self._transport_close()
            return False
        finally:
            self._streaming = None
        if self._transport is None:
            return False
        if not out.started:
            out.start(200, [])
        try:
            self._transport.write(self._conn.send(h11.EndOfMessage()) or b"")
        except h11.LocalProtocolError:
            self._transport_close()
            return False
        return True

    def _transport_close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def pause_writing(self) -> None:
        # The client does not read our answers: stop reading its requests too (no pile
        # of answers), and streamed responses wait in drain().
        self._write_paused = True
        if self._transport is not None and not self._transport.is_closing():
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        waiter, self._drain = self._drain, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if self._transport is None or self._transport.is_closing():
            return
        if not self._busy:
            self._reading_paused = False
            self._transport.resume_reading()
            self._process()
        elif not self._reading_paused:
            self._transport.resume_reading()

    async def drain(self) -> None:
        while self._write_paused and self._transport is not None:
            if self._drain is None:
                self._drain = asyncio.get_running_loop().create_future()
            await self._drain

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        waiter, self._drain = self._drain, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if self._streaming is not None:
            self._streaming.cancel()  # the client went away: end its stream
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        on_lost, self.on_lost = self.on_lost, None
        if on_lost is not None:
            on_lost()


# Bytes a streamed response may hold in the transport before its producer waits.
OUTPUT_HIGH_WATER = 256 * 1024
# Bytes of a next request read ahead while a response is running.
INPUT_HOLD_BYTES = 1024 * 1024


class _ChunkedOut:
    __slots__ = ("_proto", "started")

    def __init__(self, proto: HttpProtocol) -> None:
        self._proto = proto
        self.started = False

    def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        p = self._proto
        self.started = True
        if p._transport is None:
            return
        p._transport.set_write_buffer_limits(high=OUTPUT_HIGH_WATER)
        all_headers = [*headers, (b"Date", _date())]
        p._transport.write(p._conn.send(h11.Response(
            status_code=status, headers=all_headers,
            reason=HTTPStatus(status).phrase.encode())) or b"")

    async def write(self, data: bytes) -> None:
        p = self._proto
        if p._transport is None:
            raise asyncio.CancelledError()
        if data:
            p._transport.write(p._conn.send(h11.Data(data=data)) or b"")
        if p._write_paused:
            await p.drain()


def _content_length(headers: Sequence[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
