"""The HTTP/1.1 endpoints etcd serves on its client URLs: /health, /version (and,
later, /metrics and the JSON gateway). Parsing is h11's; this module routes and
answers with etcd's exact bodies and headers."""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import urllib.parse
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import cast

import h11
from prometheus_client import generate_latest

from petcd import ETCD_API_VERSION
from petcd.api import raft_status
from petcd.errors import EtcdError
from petcd.server.node import Node

log = logging.getLogger("petcd.http")

Reply = tuple[int, list[tuple[bytes, bytes]], bytes]
Handler = Callable[[str, str, list[tuple[bytes, bytes]], bytes], Awaitable[Reply]]

_CORS = [
    (b"Access-Control-Allow-Headers", b"accept, content-type, authorization"),
    (b"Access-Control-Allow-Methods", b"POST, GET, OPTIONS, PUT, DELETE"),
    (b"Access-Control-Allow-Origin", b"*"),
]
_TEXT = (b"Content-Type", b"text/plain; charset=utf-8")
_JSON = (b"Content-Type", b"application/json")
_METRICS_TYPE = (b"Content-Type", b"text/plain; version=0.0.4; charset=utf-8")  # as etcd
_NOSNIFF = (b"X-Content-Type-Options", b"nosniff")


def _version_body() -> bytes:
    major, minor = ETCD_API_VERSION.split(".")[:2]
    return json.dumps({"etcdserver": ETCD_API_VERSION,
                       "etcdcluster": f"{major}.{minor}.0"}, separators=(",", ":")).encode()


class HttpApp:
    def __init__(self, node: Node) -> None:
        self._node = node
        self._version = _version_body()

    async def handle(self, method: str, target: str, headers: list[tuple[bytes, bytes]],
                     body: bytes) -> Reply:
        path = target.split("?", 1)[0]
        if path == "/health":
            if method != "GET":
                return _not_allowed()
            ok = self._node.healthy() and not self._alarmed(target)
            if ok and not self._node.is_learner:  # (a learner serves no linearizable read)
                barrier = self._node.read_barrier()
                if barrier is not None:
                    try:
                        await barrier
                    except EtcdError:
                        ok = False
            if ok:
                return 200, [_TEXT], b'{"health":"true"}'
            # etcd answers with Go's http.Error: nosniff, and a newline after the body.
            return 503, [_TEXT, _NOSNIFF], b'{"health":"false"}\n'
        if path == "/metrics":
            if method != "GET":
                return _not_allowed()
            return 200, [_METRICS_TYPE], generate_latest(self._node.metrics.registry)
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


    def _alarmed(self, target: str) -> bool:
        """An active alarm makes /health false, unless ?exclude=NAME names its type."""
        query = urllib.parse.parse_qs(target.partition("?")[2])
        excluded = set(query.get("exclude", ()))
        return bool(self._node.maintenance.unhealthy_alarms(excluded))


def _not_allowed() -> Reply:
    return 405, [(b"Allow", b"GET"), _TEXT, _NOSNIFF], b"Method Not Allowed\n"


class HttpProtocol(asyncio.Protocol):
    """One HTTP/1.1 connection (keep-alive, one request at a time)."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._conn = h11.Connection(h11.SERVER)
        self._transport: asyncio.Transport | None = None
        self._request: h11.Request | None = None
        self._body = bytearray()
        self._busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        self._conn.receive_data(data)
        self._process()

    def eof_received(self) -> bool | None:
        self._conn.receive_data(b"")
        self._process()
        return None

    def _process(self) -> None:
        while not self._busy and self._transport is not None:
            try:
                event = self._conn.next_event()
            except h11.RemoteProtocolError:
                self._send_error(400)
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.Request):
                self._request = event
                self._body.clear()
            elif isinstance(event, h11.Data):
                self._body += event.data
            elif isinstance(event, h11.EndOfMessage):
                self._busy = True
                asyncio.get_running_loop().create_task(self._respond())
                return
            elif isinstance(event, h11.ConnectionClosed):
                self._transport.close()
                return

    async def _respond(self) -> None:
        req = self._request
        assert req is not None
        try:
            status, headers, body = await self._handler(
                req.method.decode("latin-1"), req.target.decode("latin-1"), list(req.headers),
                bytes(self._body))
        except Exception:
            log.exception("HTTP handler failed")
            status, headers, body = 500, [_TEXT], b"internal server error\n"
        self._send(status, headers, body)
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
        self._process()

    def _send(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        if self._transport is None or self._transport.is_closing():
            return
        all_headers = [*_CORS, *headers,
                       (b"Date", email.utils.formatdate(usegmt=True).encode()),
                       (b"Content-Length", str(len(body)).encode())]
        try:
            out = self._conn.send(h11.Response(status_code=status, headers=all_headers,
                                               reason=HTTPStatus(status).phrase.encode()))
            out = (out or b"") + (self._conn.send(h11.Data(data=body)) or b"")
            out += self._conn.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError:
            self._transport.close()
            return
        self._transport.write(out)

    def _send_error(self, status: int) -> None:
        if self._conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            self._send(status, [_TEXT], b"bad request\n")
        if self._transport is not None:
            self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
