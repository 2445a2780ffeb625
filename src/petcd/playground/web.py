"""The playground's web server (HTTP/1.1 by h11, loopback only): the page, its live state
and the controls. These control endpoints exist in this process only, never on a member.

    GET  /                       the page (static/index.html, app.js, style.css)
    GET  /api/state              everything the page shows, as JSON
    GET  /api/stream             the same as server-sent events, whenever it changes
    POST /api/members/NAME/ACTION  kill | restart | pause | resume | isolate | heal
    POST /api/heal-all
    POST /api/put                {"key", "value", "member" ("" = the leader or any)}

POSTs must carry Content-Type application/json (which a cross-site form cannot send
without a CORS preflight this server never grants) and a matching Origin when one is
sent; every request must name this server in Host, so a DNS-rebinding page is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import json
import logging
from typing import Any

import h11

from petcd.playground.observer import POLL_INTERVAL, Observer
from petcd.playground.runner import ACTIONS, ActionError, Cluster

log = logging.getLogger("petcd.playground")

MAX_BODY = 128 * 1024
_STATIC = {"/": ("index.html", "text/html; charset=utf-8"),
           "/app.js": ("app.js", "text/javascript; charset=utf-8"),
           "/style.css": ("style.css", "text/css; charset=utf-8")}
_SSE_KEEPALIVE = 5.0

Reply = tuple[int, str, bytes]


class WebServer:
    def __init__(self, cluster: Cluster, observer: Observer, port: int) -> None:
        self.cluster = cluster
        self.observer = observer
        self.port = port
        self._server: asyncio.Server | None = None
        self._conns: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self._closing = asyncio.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        self._closing.set()
        if self._server is not None:
            self._server.close()
        for w in list(self._conns.values()):
            w.close()  # its handler sees the end of its stream and returns
        await _settle(set(self._conns))

    # -- one connection
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns[task] = writer
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=16 * 1024)
        try:
            while True:
                request, body = await _read_request(conn, reader)
                if request is None:
                    break
                target = request.target.decode("latin-1")
                headers = {k.decode().lower(): v.decode("latin-1") for k, v in request.headers}
                if not self._local(headers.get("host", "")):
                    await _send(conn, writer, 403, "text/plain", b"unknown host\n")
                elif target == "/api/stream" and request.method == b"GET":
                    await self._stream(conn, writer)
                    break
                else:
                    status, ctype, data = await self._handle(
                        request.method.decode(), target, headers, body)
                    await _send(conn, writer, status, ctype, data)
                if conn.our_state is h11.MUST_CLOSE:
                    break
                conn.start_next_cycle()
        except (h11.ProtocolError, ConnectionError, OSError, asyncio.IncompleteReadError):
            pass
        finally:
            with contextlib.suppress(OSError, RuntimeError):
                writer.close()
            self._conns.pop(task, None)

    def _local(self, host: str) -> bool:
        return host in (f"127.0.0.1:{self.port}", f"localhost:{self.port}")

    async def _handle(self, method: str, target: str, headers: dict[str, str],
                      body: bytes) -> Reply:
        path = target.split("?", 1)[0]
        if method == "GET":
            if path in _STATIC:
                name, ctype = _STATIC[path]
                data = importlib.resources.files("petcd.playground").joinpath(
                    "static", name).read_bytes()
                return 200, ctype, data
            if path == "/api/state":
                return _json(200, self.observer.snapshot())
            return 404, "text/plain", b"not found\n"
        if method != "POST":
            return 405, "text/plain", b"method not allowed\n"
        if headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return 415, "text/plain", b"POST application/json\n"
        origin = headers.get("origin")
        if origin is not None and not self._local(origin.removeprefix("http://")):
            return 403, "text/plain", b"cross-origin request refused\n"
        try:
            args = json.loads(body or b"{}")
        except ValueError:
            return _json(400, {"ok": False, "error": "the body is not JSON"})
        if not isinstance(args, dict):
            return _json(400, {"ok": False, "error": "the body is not a JSON object"})
        return await self._post(path, args)

    async def _post(self, path: str, args: dict[str, Any]) -> Reply:
        parts = path.strip("/").split("/")
        obs = self.observer
        try:
            if len(parts) == 4 and parts[:2] == ["api", "members"] and parts[3] in ACTIONS:
                kind = {"kill": "down", "restart": "up", "isolate": "partition",
                        "heal": "partition"}.get(parts[3], "fault")
                obs.event(kind, self.cluster.act(parts[2], parts[3]))
                return _json(200, {"ok": True})
            if parts == ["api", "heal-all"]:
                obs.event("partition", self.cluster.heal_all())
                return _json(200, {"ok": True})
            if parts == ["api", "put"]:
                result = await obs.put(str(args.get("key", "")), str(args.get("value", "")),
                                       str(args.get("member", "") or ""))
                return _json(200, result)
        except ActionError as e:
            return _json(409, {"ok": False, "error": str(e)})
        return _json(404, {"ok": False, "error": "no such control"})

    async def _stream(self, conn: h11.Connection, writer: asyncio.StreamWriter) -> None:
        """Server-sent events: the state whenever it changed (checked 5 times a second)."""
        writer.write(conn.send(h11.Response(status_code=200, headers=[
            ("Content-Type", "text/event-stream"), ("Cache-Control", "no-store")])) or b"")
        last = b""
        quiet = 0.0
        while not self._closing.is_set():
            data = json.dumps(self.observer.snapshot(), separators=(",", ":")).encode()
            if data != last:
                writer.write(conn.send(h11.Data(data=b"data: " + data + b"\n\n")) or b"")
                last, quiet = data, 0.0
            elif quiet >= _SSE_KEEPALIVE:
                writer.write(conn.send(h11.Data(data=b": keep-alive\n\n")) or b"")
                quiet = 0.0
            await writer.drain()
            if writer.is_closing():
                return
            await asyncio.sleep(POLL_INTERVAL)
            quiet += POLL_INTERVAL


async def _settle(tasks: set[asyncio.Task[None]]) -> None:
    """Waits a little for connection handlers to return, then cancels the rest (a handler
    of asyncio.start_server is best left to end by itself: cancelling it is logged)."""
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=2)
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


async def _read_request(conn: h11.Connection, reader: asyncio.StreamReader
                        ) -> tuple[h11.Request | None, bytes]:
    request: h11.Request | None = None
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await reader.read(65536)
            conn.receive_data(data)
            if not data and conn.their_state is not h11.DONE:
                return None, b""
            continue
        if isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_BODY:
                raise ConnectionError("request body too large")
        elif isinstance(event, h11.EndOfMessage):
            return request, bytes(body)
        elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
            return None, b""


async def _send(conn: h11.Connection, writer: asyncio.StreamWriter, status: int, ctype: str,
                body: bytes) -> None:
    out = conn.send(h11.Response(status_code=status, headers=[
        ("Content-Type", ctype), ("Content-Length", str(len(body))),
        ("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff")])) or b""
    out += conn.send(h11.Data(data=body)) or b""
    out += conn.send(h11.EndOfMessage()) or b""
    writer.write(out)
    await writer.drain()


def _json(status: int, doc: Any) -> Reply:
    return status, "application/json", json.dumps(doc, separators=(",", ":")).encode()
