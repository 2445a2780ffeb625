"""One HTTP/1.1 connection on etcd's client URLs, carrying api/http_app.py's HttpApp:
plain keep-alive requests by a fast path (api/http_wire.py), anything else parsed by
h11; streamed responses chunked with backpressure, and streamed request bodies fed to
their calls as they arrive."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from http import HTTPStatus
from typing import cast

import h11

from petcd.api.http_app import (
    Body,
    Handler,
    HttpApp,
    Reply,
    ResponseStream,
    Route,
    Streamer,
)
from petcd.api.http_wire import (
    INCOMPLETE,
    LAST_CHUNK,
    RequestBody,
    chunk,
    content_length,
    date,
    parse_simple,
    response_head,
)

log = logging.getLogger("petcd.http")

# (imported from here by the gateway, the server and tests)
__all__ = ["Body", "Handler", "HttpApp", "HttpProtocol", "Reply", "ResponseStream", "Route",
           "Streamer"]

_TEXT = (b"Content-Type", b"text/plain; charset=utf-8")

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
                 idle_timeout: float = IDLE_TIMEOUT,
                 streams_body: Callable[[str, str], bool] | None = None) -> None:
        self._handler = handler
        self._streams_body = streams_body
        # The request being answered came by the fast path (http_wire.parse_simple):
        # h11 never saw it, so the answer is written here too and h11 stays IDLE.
        self._fast = False
        # h11 has been given bytes (or EOF) on this connection: until then its buffer is
        # known empty without asking it (trailing_data copies the buffer).
        self._h11_fed = False
        self._body_in: RequestBody | None = None  # a body being streamed to its call
        self._pre = b""  # the start of what may be a plain request (the fast path's)
        self._pre_reads = 0  # reads joined in _pre so far
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
        # The request or idle timeout: _deadline is when it is due (None while a request
        # is answered); the timer, once set, is moved only when it fires early or is due
        # later than the deadline (no timer made and cancelled per request).
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._deadline: float | None = None
        self._loop: asyncio.AbstractEventLoop  # (set by connection_made)
        self._receiving = False  # a request has started arriving
        self._write_paused = False  # the client does not read our answers
        # Set by the listener's connection accounting: called once when the connection ends.
        self.on_lost: Callable[[], None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self._loop = asyncio.get_running_loop()
        self._arm(self._request_timeout)

    def _arm(self, seconds: float) -> None:
        deadline = self._deadline = self._loop.time() + seconds
        if self._timer is None or self._timer_at > deadline:
            self._set_timer(deadline)

    def _set_timer(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(when, self._timed_out)
        self._timer_at = when

    def _timed_out(self) -> None:
        self._timer = None
        deadline = self._deadline
        if self._transport is None or self._busy or deadline is None:
            return
        if self._loop.time() < deadline:  # pushed back since the timer was set
            self._set_timer(deadline)
            return
        if self._receiving:
            self._send_error(408, b"request timeout\n")
        else:
            self._transport.close()  # idle keep-alive connection

    def data_received(self, data: bytes) -> None:
        if not self._receiving or self._pre:
            if not self._busy:
                if self._pre:
                    data, self._pre = self._pre + data, b""
                    self._pre_reads += 1
                if self._fast_path(data):
                    return
            if self._pre:  # the start of a plain request: wait for the rest
                if not self._receiving:
                    self._receiving = True
                    self._arm(self._request_timeout)
                return
            self._pre_reads = 0
            self._receiving = True
            self._arm(self._request_timeout)
        self._h11_fed = True
        self._conn.receive_data(data)
        self._process()
        if not self._busy or self._body_in is not None:
            return
        # (counted here: h11's trailing_data copies its whole buffer on every call)
        self._held += len(data)
        if self._transport is not None and self._held > INPUT_HOLD_BYTES:
            # Bytes sent ahead while a response (a watch: maybe for hours) is running
            # wait in h11's buffer: stop reading past this much.
            self._transport.pause_reading()
            self._reading_paused = True

    def _fast_path(self, data: bytes) -> bool:
        """Answers a plain keep-alive request that came whole in this read without h11
        (its parse and send cost ~1 ms per request under load); False: h11 takes it."""
        conn = self._conn
        if (conn.our_state is not h11.IDLE or conn.their_state is not h11.IDLE
                or self._write_paused or (self._h11_fed and conn.trailing_data[0])):
            return False
        parsed = parse_simple(data, MAX_HEADER_BYTES, self._max_body)
        if parsed is INCOMPLETE:
            # Held for a few reads at most (each joins and parses again): a request
            # trickling in, or a streaming call's body, is h11's to take as it comes.
            if self._pre_reads < FAST_PATH_READS and not self._streamed_call(data):
                self._pre = data
            else:
                self._pre_reads = 0
            return False
        self._pre_reads = 0
        if parsed is None or self._transport is None:
            return False
        self._fast = True
        self._start(*parsed)
        return True

    def _streamed_call(self, data: bytes) -> bool:
        """The head has come and names a call that reads its body as it arrives."""
        if self._streams_body is None or data.find(b"\r\n\r\n") < 0:
            return False
        parts = data[:data.find(b"\r\n")].split(b" ")
        return len(parts) == 3 and self._streams_body(parts[0].decode("latin-1"),
                                                      parts[1].decode("latin-1"))

    def _start(self, method: str, target: str, headers: list[tuple[bytes, bytes]],
               body: Body) -> None:
        """The handler runs from here; reading pauses while it does (a streamed
        response or a streamed request body reads on, each bounded)."""
        self._busy = True
        self._held = 0
        self._deadline = None  # (no timeout while the request is answered)
        assert self._transport is not None
        if not isinstance(body, RequestBody):
            self._transport.pause_reading()
            self._reading_paused = True
        self._loop.create_task(self._respond(method, target, headers, body))

    def eof_received(self) -> bool | None:
        self._h11_fed = True
        if self._pre:  # a request cut short: h11 says what it is
            self._conn.receive_data(self._pre)
            self._pre = b""
        self._conn.receive_data(b"")
        self._process()
        return None

    def _process(self) -> None:
        while ((not self._busy or self._body_in is not None) and not self._write_paused
               and self._transport is not None):
            try:
                event = self._conn.next_event()
            except h11.RemoteProtocolError as e:
                self._end_body_in()
                self._send_error(e.error_status_hint)
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            body_in = self._body_in
            if body_in is not None:
                if isinstance(event, h11.Data):
                    body_in.feed(bytes(event.data))
                    if body_in.paused:
                        return
                    continue
                self._end_body_in()  # EndOfMessage (or the connection closed)
                if isinstance(event, h11.ConnectionClosed):
                    self._transport.close()
                return
            if isinstance(event, h11.Request):
                self._request = event
                self._body.clear()
                length = content_length(event.headers)
                if length is not None and length > self._max_body:
                    self._send_error(413, b"request body too large\n")
                    return
                method, target = event.method.decode("latin-1"), event.target.decode("latin-1")
                if (length != 0 and self._streams_body is not None
                        and self._streams_body(method, target)):
                    # A streaming call starts now and reads its requests as they come.
                    body_in = RequestBody(INPUT_HOLD_BYTES, self._pause_body, self._resume_body)
                    self._body_in = body_in
                    self._start(method, target, list(event.headers), body_in)
            elif isinstance(event, h11.Data):
                self._body += event.data
                if len(self._body) > self._max_body:
                    self._send_error(413, b"request body too large\n")
                    return
            elif isinstance(event, h11.EndOfMessage):
                req = self._request
                assert req is not None
                # A streamed response reads on (so a client that goes away mid-stream
                # is seen), bounded by INPUT_HOLD_BYTES in data_received.
                self._start(req.method.decode("latin-1"), req.target.decode("latin-1"),
                            list(req.headers), bytes(self._body))
                return
            elif isinstance(event, h11.ConnectionClosed):
                self._transport.close()
                return

    def _end_body_in(self) -> None:
        body_in, self._body_in = self._body_in, None
        if body_in is not None:
            body_in.end()

    def _pause_body(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.pause_reading()

    def _resume_body(self) -> None:
        if self._transport is None or self._transport.is_closing() or self._write_paused:
            return
        self._transport.resume_reading()
        self._process()  # events h11 parsed before the pause

    async def _respond(self, method: str, target: str, headers: list[tuple[bytes, bytes]],
                       body: Body) -> None:
        try:
            reply = await self._handler(method, target, headers, body)
        except Exception:
            log.exception("HTTP handler failed")
            reply = 500, [_TEXT], b"internal server error\n"
        if isinstance(reply, tuple):
            self._send(*reply)
        else:
            if (self._transport is not None and not self._write_paused
                    and (self._body_in is None or not self._body_in.paused)):
                self._reading_paused = False
                self._transport.resume_reading()
            if not await self._stream(reply):
                return
        if self._transport is None:
            return
        fast = self._fast
        if fast:
            self._fast = False  # h11 never left IDLE
        elif (self._conn.our_state is h11.MUST_CLOSE
              or self._conn.their_state is h11.MUST_CLOSE):
            self._transport.close()
            return
        else:
            try:
                # (fails while the client still sends the body of a streamed call
                # that has ended: the connection closes)
                self._conn.start_next_cycle()
            except h11.LocalProtocolError:
                self._end_body_in()
                self._transport.close()
                return
        self._busy = False
        self._receiving = False
        self._arm(self._idle_timeout)
        if not self._write_paused:  # else resume_writing goes on
            self._reading_paused = False
            self._transport.resume_reading()
            if not fast or self._h11_fed:
                self._process()  # (h11 may hold bytes, or the end, that came meanwhile)

    def _send(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        if self._transport is None or self._transport.is_closing():
            return
        all_headers = [*headers,
                       (b"Date", date()),
                       (b"Content-Length", str(len(body)).encode())]
        if self._fast:  # (never HEAD: its answer has no body)
            self._transport.write(response_head(status, all_headers) + b"\r\n" + body)
            return
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
        if self._fast:
            self._transport.write(LAST_CHUNK)
            return True
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
            if self._body_in is not None:
                self._process()  # body events h11 parsed meanwhile

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
        self._end_body_in()
        if self._streaming is not None:
            self._streaming.cancel()  # the client went away: end its stream
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        on_lost, self.on_lost = self.on_lost, None
        if on_lost is not None:
            on_lost()


# Reads of one request the fast path joins before leaving it to h11.
FAST_PATH_READS = 4
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
        all_headers = [*headers, (b"Date", date())]
        if p._fast:
            p._transport.write(response_head(
                status, [*all_headers, (b"Transfer-Encoding", b"chunked")]) + b"\r\n")
            return
        p._transport.write(p._conn.send(h11.Response(
            status_code=status, headers=all_headers,
            reason=HTTPStatus(status).phrase.encode())) or b"")

    async def write(self, data: bytes) -> None:
        p = self._proto
        if p._transport is None:
            raise asyncio.CancelledError()
        if data:
            p._transport.write(chunk(data) if p._fast else
                               p._conn.send(h11.Data(data=data)) or b"")
        if p._write_paused:
            await p.drain()
