"""One client connection: HTTP/2 (RFC 9113, server side) carrying gRPC, as an asyncio
Protocol. HTTP/1.1 clients on the same listener are handed to the HTTP protocol as soon
as their first bytes differ from the HTTP/2 preface (no forwarding hop).

Hot path of a unary call: one data_received parses HEADERS (a cached HPACK decode) and
DATA, the handler runs in a task, and its response (HEADERS, DATA, trailers, with
pre-encoded header blocks) is appended to the connection's output, which is written
once per event loop iteration for all calls finished in it.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, cast

import grpc
import grpc.aio

from petcd.api.h2 import frames as F
from petcd.api.h2.context import ServerContext
from petcd.api.h2.hpack_codec import RESPONSE_HEADERS, Decoder, Header, HpackError
from petcd.api.h2.registry import Method
from petcd.api.h2.status import (
    OK_TRAILERS,
    metadata_block,
    status_block,
    trailers_only_block,
)
from petcd.tls.gate import auth_properties

if TYPE_CHECKING:
    from petcd.api.h2.server import GrpcServer

log = logging.getLogger("petcd.h2")

_AbortError = grpc.aio.AbortError
_EOF: Any = getattr(grpc.aio, "EOF")  # noqa: B009 - missing from the type stubs
_SC = grpc.StatusCode
_OK = _SC.OK
_CancelledError = asyncio.CancelledError

_TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}

# Pre-built frame header prefixes (length, type, flags) of the constant blocks.
_RESP_HEADERS_PREFIX = (len(RESPONSE_HEADERS).to_bytes(3, "big")
                        + bytes((F.HEADERS, F.END_HEADERS)))
_OK_TRAILERS_PREFIX = (len(OK_TRAILERS).to_bytes(3, "big")
                       + bytes((F.HEADERS, F.END_HEADERS | F.END_STREAM)))
_DATA_FLAGS = bytes((F.DATA, 0))
_KEEPALIVE_PING = b"petcd-ka"


def parse_timeout(value: str) -> float | None:
    """grpc-timeout (1-8 digits and a unit) in seconds; None if malformed."""
    unit = _TIMEOUT_UNITS.get(value[-1:])
    digits = value[:-1]
    if unit is None or not 1 <= len(digits) <= 8 or not digits.isdigit():
        return None
    return int(digits) * unit


class Stream:
    """One gRPC call on its HTTP/2 stream."""

    __slots__ = (
        "_done_callbacks",
        "cancelled",
        "closed",
        "conn",
        "context",
        "deadline",
        "drain_waiter",
        "headers",
        "headers_sent",
        "messages",
        "method",
        "path",
        "pending",
        "queued_bytes",
        "rbuf",
        "reader",
        "recv_window",
        "remote_closed",
        "send_window",
        "sid",
        "task",
        "timer",
        "trailers",
    )

    def __init__(self, conn: H2Protocol, sid: int, path: str, headers: list[Header],
                 method: Method, recv_window: int, send_window: int) -> None:
        self.conn = conn
        self.sid = sid
        self.path = path
        self.headers = headers
        self.method = method
        self.recv_window = recv_window  # what the client may still send us
        self.send_window = send_window  # what we may still send it
        self.remote_closed = False  # END_STREAM (or reset) received
        self.closed = False  # the call is over: no more output from the handler
        self.cancelled = False
        self.headers_sent = False
        self.rbuf: bytes | bytearray = b""  # request bytes not yet cut into messages
        self.messages: deque[bytes] | None = None  # streaming requests: complete messages
        self.queued_bytes = 0  # bytes of `messages` (held back from flow-control credit)
        self.reader: asyncio.Future[None] | None = None
        self.pending: deque[memoryview] = deque()  # response bytes waiting for window
        self.trailers: bytes | None = None  # sent once `pending` is empty
        self.drain_waiter: asyncio.Future[None] | None = None
        self.task: asyncio.Task[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.deadline: float | None = None
        self.context: ServerContext | None = None
        self._done_callbacks: list[Callable[[], None]] | None = None

    # -- handler side
    def time_remaining(self) -> float | None:
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - asyncio.get_running_loop().time())

    def add_done_callback(self, fn: Callable[[], None]) -> None:
        if self.closed:
            fn()
            return
        if self._done_callbacks is None:
            self._done_callbacks = []
        self._done_callbacks.append(fn)

    def run_done_callbacks(self) -> None:
        callbacks, self._done_callbacks = self._done_callbacks, None
        for fn in callbacks or ():
            try:
                fn()
            except Exception:
                log.exception("gRPC done callback failed")

    async def read(self) -> Any:
        msgs = self.messages
        if msgs is None:
            raise RuntimeError("read() on a call whose request is not a stream")
        while not msgs:
            if self.remote_closed or self.closed:
                return _EOF
            waiter = self.reader = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self.reader = None
        raw = msgs.popleft()
        self.queued_bytes -= len(raw) + 5
        self.conn.credit(self)
        d = self.method.deserialize
        return raw if d is None else d(raw)

    async def requests(self) -> AsyncIterator[Any]:
        while True:
            msg = await self.read()
            if msg is _EOF:
                return
            yield msg

    def send_headers(self) -> None:
        if not self.headers_sent and not self.closed:
            self.conn.send_headers(self)

    async def write(self, message: Any) -> None:
        if self.closed:
            raise _CancelledError() if self.cancelled else RuntimeError("the call is over")
        s = self.method.serialize
        payload: bytes = message if s is None else s(message)
        conn = self.conn
        conn.send_message(self, payload)
        if self.pending or conn.write_paused:
            await conn.drain(self)

    # -- call runners (one task per call)
    async def run_unary_request(self, request: bytes) -> None:
        m = self.method
        ctx = self.context = ServerContext(self)
        try:
            req = request if m.deserialize is None else m.deserialize(request)
            if m.response_streaming:
                await self._stream_responses(m.fn(req, ctx))
                self.conn.finish(self, ctx._code, ctx._details, ctx)
                return
            resp = await m.fn(req, ctx)
        except _AbortError:
            self.conn.finish(self, ctx._code, ctx._details, ctx)
            return
        except _CancelledError:
            if self.closed:  # reset by the client, deadline, shutdown: nothing to answer
                return
            raise
        except Exception as e:
            self._failed(e)
            return
        if ctx._code is not _OK:
            self.conn.finish(self, ctx._code, ctx._details, ctx)
        elif resp is None:
            self.conn.finish(self, _SC.INTERNAL, "handler returned no response", ctx)
        else:
            s = m.serialize
            self.conn.send_unary_response(self, resp if s is None else s(resp), ctx)

    async def run_stream_request(self) -> None:
        m = self.method
        ctx = self.context = ServerContext(self)
        try:
            if m.response_streaming:
                await self._stream_responses(m.fn(self.requests(), ctx))
                self.conn.finish(self, ctx._code, ctx._details, ctx)
                return
            resp = await m.fn(self.requests(), ctx)
        except _AbortError:
            self.conn.finish(self, ctx._code, ctx._details, ctx)
            return
        except _CancelledError:
            if self.closed:
                return
            raise
        except Exception as e:
            self._failed(e)
            return
        if ctx._code is not _OK or resp is None:
            self.conn.finish(self, ctx._code, ctx._details, ctx)
        else:
            s = m.serialize
            self.conn.send_unary_response(self, resp if s is None else s(resp), ctx)

    async def _stream_responses(self, result: Any) -> None:
        if inspect.isasyncgen(result):
            async for resp in result:
                await self.write(resp)
        elif inspect.isawaitable(result):
            await result  # writes through context.write()
        elif result is not None:
            raise TypeError(f"streaming handler returned {type(result).__name__}")

    def _failed(self, e: Exception) -> None:
        log.error("gRPC handler for %s failed", self.path, exc_info=e)
        ctx = self.context
        self.conn.finish(self, _SC.UNKNOWN, f"Unexpected {type(e)}: {e}", ctx)


class H2Protocol(asyncio.Protocol):
    """A connection accepted by the server's listener."""

    def __init__(self, server: GrpcServer) -> None:
        self._server = server
        self._cfg = server.config
        self._registry = server.registry
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._sniffing = True
        self._buf: bytearray | None = None
        self._need = 0
        self.streams: dict[int, Stream] = {}
        self._last_sid = 0
        self._decoder = Decoder()
        self._cont: tuple[int, int, bytearray] | None = None  # header block in CONTINUATIONs
        self._settings_seen = False
        self._peer_max_frame = F.DEFAULT_MAX_FRAME
        self._peer_initial_window = F.DEFAULT_WINDOW
        self._send_window = F.DEFAULT_WINDOW
        self._recv_window = self._cfg.connection_window
        self._blocked: dict[int, Stream] = {}
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self.write_paused = False
        self._goaway_sent = False
        self._goaway_sid = 0
        self._closed = False
        self._peer: str | None = None
        self._auth: dict[str, list[bytes]] | None = None
        self._keepalive: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        if buf is not None:
            buf += data
            if len(buf) < self._need:
                return
            data = bytes(buf)
            self._buf = None
        if self._sniffing:
            data = self._sniff(data)
            if not data:
                return
        try:
            pos = self._frames(data)
        except F.H2ConnectionError as e:
            self.connection_error(e.code, str(e))
            return
        if pos < len(data):
            self._buf = bytearray(memoryview(data)[pos:])
        if self._out:
            self._flush()

    def eof_received(self) -> bool | None:
        return None  # close our side too: a gRPC client half-closing is gone

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._transport = None
        if self._keepalive is not None:
            self._keepalive.cancel()
        for stream in list(self.streams.values()):
            self._abandon(stream)
        self.streams.clear()
        self._blocked.clear()
        self._server.connection_closed(self)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        for stream in list(self.streams.values()):
            if not stream.pending:
                self._wake_drain(stream)

    # -- connection start: HTTP/2 preface or HTTP/1.1
    def _sniff(self, data: bytes) -> bytes:
        n = min(len(data), len(F.PREFACE))
        if data[:n] != F.PREFACE[:n]:
            self._hand_to_http(data)
            return b""
        if n < len(F.PREFACE):
            self._buf = bytearray(data)
            self._need = len(F.PREFACE)
            return b""
        self._sniffing = False
        self._need = 9
        self._server.connection_opened(self)
        cfg = self._cfg
        self._write(F.settings_frame({
            F.SETTINGS_MAX_CONCURRENT_STREAMS: cfg.max_concurrent_streams,
            F.SETTINGS_INITIAL_WINDOW_SIZE: cfg.initial_window,
            F.SETTINGS_MAX_HEADER_LIST_SIZE: cfg.max_header_list_size}))
        if cfg.connection_window > F.DEFAULT_WINDOW:
            self._write(F.window_update(0, cfg.connection_window - F.DEFAULT_WINDOW))
        if self._server.draining:
            self.goaway()
        if cfg.keepalive_interval > 0:
            self._keepalive = self._loop.call_later(cfg.keepalive_interval, self._send_ping)
        return data[len(F.PREFACE):]

    def _hand_to_http(self, data: bytes) -> None:
        transport = self._transport
        assert transport is not None
        factory = self._server.http_factory
        if factory is None:
            transport.close()
            return
        http = factory()
        transport.set_protocol(http)
        http.connection_made(transport)
        http.data_received(data)

    # -- frames in
    def _frames(self, data: bytes) -> int:
        pos = 0
        n = len(data)
        unpack = F.HEADER.unpack_from
        while n - pos >= 9:
            hi, lo, ftype, flags, sid = unpack(data, pos)
            length = hi << 16 | lo
            end = pos + 9 + length
            if length > F.DEFAULT_MAX_FRAME:
                raise F.H2ConnectionError(F.FRAME_SIZE_ERROR, f"frame of {length} bytes")
            if end > n:
                self._need = end - pos
                return pos
            payload = data[pos + 9:end]
            pos = end
            sid &= 0x7FFFFFFF
            if self._cont is not None and ftype != F.CONTINUATION:
                raise F.H2ConnectionError(F.PROTOCOL_ERROR, "expected CONTINUATION")
            if not self._settings_seen and ftype != F.SETTINGS:
                raise F.H2ConnectionError(F.PROTOCOL_ERROR, "first frame is not SETTINGS")
            try:
                if ftype == F.DATA:
                    self._on_data(sid, flags, payload)
                elif ftype == F.HEADERS:
                    self._on_headers(sid, flags, payload)
                elif ftype == F.WINDOW_UPDATE:
                    self._on_window_update(sid, payload)
                elif ftype == F.SETTINGS:
                    self._on_settings(sid, flags, payload)
                elif ftype == F.PING:
                    self._on_ping(sid, flags, payload)
                elif ftype == F.RST_STREAM:
                    self._on_rst_stream(sid, payload)
                elif ftype == F.CONTINUATION:
                    self._on_continuation(sid, flags, payload)
                elif ftype == F.PRIORITY:
                    if sid == 0:
                        raise F.H2ConnectionError(F.PROTOCOL_ERROR, "PRIORITY on stream 0")
                    if length != 5:
                        raise F.StreamError(sid, F.FRAME_SIZE_ERROR, "PRIORITY size")
                elif ftype == F.GOAWAY:
                    if sid != 0:
                        raise F.H2ConnectionError(F.PROTOCOL_ERROR, "GOAWAY on a stream")
                    self._on_goaway()
                elif ftype == F.PUSH_PROMISE:
                    raise F.H2ConnectionError(F.PROTOCOL_ERROR, "PUSH_PROMISE from a client")
                # other frame types are ignored (RFC 9113 4.1)
            except F.StreamError as e:
                self.reset_stream(e.stream_id, e.code)
        self._need = 9
        return pos

    def _on_data(self, sid: int, flags: int, payload: bytes) -> None:
        if sid == 0:
            raise F.H2ConnectionError(F.PROTOCOL_ERROR, "DATA on stream 0")
        size = len(payload)
        self._recv_window -= size
        if self._recv_window < 0:
            raise F.H2ConnectionError(F.FLOW_CONTROL_ERROR, "connection window exceeded")
        cw = self._cfg.connection_window
        if self._recv_window <= cw >> 1:
            self._write(F.window_update(0, cw - self._recv_window))
            self._recv_window = cw
        stream = self.streams.get(sid)
        if stream is None:
            if sid > self._last_sid:
                raise F.H2ConnectionError(F.PROTOCOL_ERROR, "DATA on an idle stream")
            return  # a stream we answered or reset: ignored
        if stream.remote_closed:
            raise F.StreamError(sid, F.STREAM_CLOSED, "DATA after END_STREAM")
        stream.recv_window -= size
        if stream.recv_window < 0:
            raise F.StreamError(sid, F.FLOW_CONTROL_ERROR, "stream window exceeded")
        if flags & F.PADDED:
            payload = _unpad(payload)
        if payload and not stream.closed:
            self._feed(stream, payload)
        if flags & F.END_STREAM:
            self._end_of_request(stream)
        else:
            self.credit(stream)

    def _feed(self, stream: Stream, payload: bytes) -> None:
        rbuf = stream.rbuf
        if rbuf:
            if type(rbuf) is bytes:
                rbuf = stream.rbuf = bytearray(rbuf)
            rbuf += payload  # type: ignore[operator]
        else:
            rbuf = stream.rbuf = payload
        limit = self._cfg.max_receive_message
        msgs = stream.messages
        if msgs is None:  # unary request: the whole body is one message, cut at the end
            if len(rbuf) >= 5:
                size = int.from_bytes(rbuf[1:5], "big")
                if size > limit:
                    self._too_large(stream, size)
            return
        while len(rbuf) >= 5:
            size = int.from_bytes(rbuf[1:5], "big")
            if size > limit:
                self._too_large(stream, size)
                return
            if len(rbuf) < 5 + size:
                break
            if rbuf[0]:
                self._compressed(stream)
                return
            msgs.append(bytes(rbuf[5:5 + size]))
            stream.queued_bytes += 5 + size
            rbuf = rbuf[5 + size:]
        stream.rbuf = rbuf
        self._wake_reader(stream)

    def _too_large(self, stream: Stream, size: int) -> None:
        self.abort_call(stream, _SC.RESOURCE_EXHAUSTED,
                        f"grpc: received message larger than max ({size} vs. "
                        f"{self._cfg.max_receive_message})")

    def _compressed(self, stream: Stream) -> None:
        self.abort_call(stream, _SC.INTERNAL,
                        "grpc: compressed flag set with identity or empty encoding")

    def credit(self, stream: Stream) -> None:
        """Give the client back stream window for what it sent that is not waiting
        in the message queue (handlers that do not read hold the client back)."""
        window = self._cfg.initial_window
        if stream.remote_closed or stream.recv_window > window >> 1:
            return
        give = window - stream.recv_window - stream.queued_bytes
        if give > 0:
            stream.recv_window += give
            self._write(F.window_update(stream.sid, give))

    def _end_of_request(self, stream: Stream) -> None:
        stream.remote_closed = True
        if stream.closed:
            if stream.trailers is None and not stream.pending:
                self._forget(stream)
            return
        if stream.messages is not None:  # streaming request: the reader sees EOF
            if stream.rbuf:
                self.abort_call(stream, _SC.INTERNAL, "grpc: truncated request message")
                return
            self._wake_reader(stream)
            return
        body = stream.rbuf
        stream.rbuf = b""
        if len(body) < 5 or len(body) != 5 + int.from_bytes(body[1:5], "big"):
            self.abort_call(stream, _SC.INTERNAL,
                            "grpc: expected exactly one request message" if body else
                            "grpc: no request message")
            return
        if body[0]:
            self._compressed(stream)
            return
        stream.task = self._loop.create_task(stream.run_unary_request(bytes(body[5:])))

    def _on_headers(self, sid: int, flags: int, payload: bytes) -> None:
        if sid == 0:
            raise F.H2ConnectionError(F.PROTOCOL_ERROR, "HEADERS on stream 0")
        if flags & F.PADDED:
            payload = _unpad(payload)
        if flags & F.PRIORITY_FLAG:
            if len(payload) < 5:
                raise F.H2ConnectionError(F.FRAME_SIZE_ERROR, "HEADERS priority too short")
            payload = payload[5:]
        if not flags & F.END_HEADERS:
            self._cont = (sid, flags, bytearray(payload))
            return
        self._on_header_block(sid, flags & F.END_STREAM, payload)

    def _on_continuation(self, sid: int, flags: int, payload: bytes) -> None:
        cont = self._cont
        if cont is None or cont[0] != sid:
            raise F.H2ConnectionError(F.PROTOCOL_ERROR, "unexpected CONTINUATION")
        block = cont[2]
        block += payload
        if len(block) > self._cfg.max_header_list_size + 4096:
            raise F.H2ConnectionError(F.ENHANCE_YOUR_CALM, "header block too large")
        if flags & F.END_HEADERS:
            self._cont = None
            self._on_header_block(sid, cont[1] & F.END_STREAM, bytes(block))

    def _decode(self, block: bytes) -> list[Header]:
        try:
            return self._decoder.decode(block)
        except HpackError as e:
            raise F.H2ConnectionError(F.COMPRESSION_ERROR, str(e)) from None

    def _on_header_block(self, sid: int, end_stream: int, block: bytes) -> None:
        stream = self.streams.get(sid)
        if stream is not None:  # trailers: the end of a request
            self._decode(block)
            if stream.remote_closed:
                raise F.StreamError(sid, F.STREAM_CLOSED, "HEADERS after END_STREAM")
            if not end_stream:
                raise F.StreamError(sid, F.PROTOCOL_ERROR, "trailers without END_STREAM")
            self._end_of_request(stream)
            return
        if sid <= self._last_sid:  # a stream already over
            self._decode(block)
            return
        if not sid & 1:
            raise F.H2ConnectionError(F.PROTOCOL_ERROR, "even stream id from a client")
        self._last_sid = sid
        headers = self._decode(block)
        if self._goaway_sent or len(self.streams) >= self._cfg.max_concurrent_streams:
            self._write(F.rst_stream(sid, F.REFUSED_STREAM))
            return
        if len(block) > 256 and _list_size(headers) > self._cfg.max_header_list_size:
            self._reject(sid, end_stream, _SC.RESOURCE_EXHAUSTED,
                         "header list size exceeds the limit")
            return
        self._start_call(sid, end_stream, headers)

    def _start_call(self, sid: int, end_stream: int, headers: list[Header]) -> None:
        path = http_method = ctype = timeout = encoding = None
        for name, value in headers:
            if name == ":path":
                path = value
            elif name == ":method":
                http_method = value
            elif name == "content-type":
                ctype = value
            elif name == "grpc-timeout":
                timeout = value
            elif name == "grpc-encoding":
                encoding = value
        if path is None or http_method is None:
            raise F.StreamError(sid, F.PROTOCOL_ERROR, "missing :path or :method")
        if http_method != "POST":
            self._reject(sid, end_stream, _SC.INTERNAL, f"invalid method {http_method!r}", 405)
            return
        if ctype is None or not ctype.startswith("application/grpc"):
            self._reject(sid, end_stream, _SC.INTERNAL,
                         f"invalid gRPC request content-type {ctype!r}", 415)
            return
        method = self._registry.lookup(path)
        if method is None:
            self._reject(sid, end_stream, _SC.UNIMPLEMENTED,
                         self._registry.unknown_message(path))
            return
        if encoding is not None and encoding != "identity":
            self._reject(sid, end_stream, _SC.UNIMPLEMENTED,
                         f'grpc: Decompressor is not installed for grpc-encoding "{encoding}"')
            return
        stream = Stream(self, sid, path, headers, method, self._cfg.initial_window,
                        self._peer_initial_window)
        self.streams[sid] = stream
        if timeout is not None:
            seconds = parse_timeout(timeout)
            if seconds is None:
                self.abort_call(stream, _SC.INTERNAL, f"malformed grpc-timeout {timeout!r}")
                return
            stream.deadline = self._loop.time() + seconds
            stream.timer = self._loop.call_at(stream.deadline, self._deadline, stream)
        if method.request_streaming:
            stream.messages = deque()
            stream.task = self._loop.create_task(stream.run_stream_request())
        if end_stream:
            self._end_of_request(stream)

    def _reject(self, sid: int, end_stream: int, code: grpc.StatusCode, message: str,
                http_status: int = 200) -> None:
        """Answer a call that never started with a Trailers-Only response."""
        self._write(F.headers_frames(sid, trailers_only_block(code, message, b"", http_status),
                                     True, self._peer_max_frame))
        if not end_stream:
            self._write(F.rst_stream(sid, F.NO_ERROR))

    def _on_window_update(self, sid: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise F.H2ConnectionError(F.FRAME_SIZE_ERROR, "WINDOW_UPDATE size")
        inc = F.u32(payload) & 0x7FFFFFFF
        if sid == 0:
            if inc == 0:
                raise F.H2ConnectionError(F.PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
            self._send_window += inc
            if self._send_window > F.MAX_WINDOW:
                raise F.H2ConnectionError(F.FLOW_CONTROL_ERROR, "connection window overflow")
            for blocked in list(self._blocked.values()):
                self._pump(blocked)
                if self._send_window <= 0:
                    break
            return
        stream = self.streams.get(sid)
        if stream is None:
            if sid > self._last_sid:
                raise F.H2ConnectionError(F.PROTOCOL_ERROR, "WINDOW_UPDATE on an idle stream")
            return
        if inc == 0:
            raise F.StreamError(sid, F.PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
        stream.send_window += inc
        if stream.send_window > F.MAX_WINDOW:
            raise F.StreamError(sid, F.FLOW_CONTROL_ERROR, "stream window overflow")
        if stream.pending or stream.trailers is not None:
            self._pump(stream)

    def _on_settings(self, sid: int, flags: int, payload: bytes) -> None:
        if sid != 0:
            raise F.H2ConnectionError(F.PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & F.ACK:
            if payload:
                raise F.H2ConnectionError(F.FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            return
        if len(payload) % 6:
            raise F.H2ConnectionError(F.FRAME_SIZE_ERROR, "SETTINGS size")
        self._settings_seen = True
        for key, value in F.parse_settings(payload):
            if key == F.SETTINGS_INITIAL_WINDOW_SIZE:
                if value > F.MAX_WINDOW:
                    raise F.H2ConnectionError(F.FLOW_CONTROL_ERROR, "initial window too large")
                delta = value - self._peer_initial_window
                self._peer_initial_window = value
                for stream in self.streams.values():
                    stream.send_window += delta
                    if stream.send_window > F.MAX_WINDOW:
                        raise F.H2ConnectionError(F.FLOW_CONTROL_ERROR, "stream window overflow")
            elif key == F.SETTINGS_MAX_FRAME_SIZE:
                if not F.DEFAULT_MAX_FRAME <= value <= F.MAX_FRAME_LIMIT:
                    raise F.H2ConnectionError(F.PROTOCOL_ERROR, "bad SETTINGS_MAX_FRAME_SIZE")
                self._peer_max_frame = value
            elif key == F.SETTINGS_ENABLE_PUSH and value > 1:
                raise F.H2ConnectionError(F.PROTOCOL_ERROR, "bad SETTINGS_ENABLE_PUSH")
            # header table size: our encoder never indexes; the others concern clients
        self._write(F.frame(F.SETTINGS, F.ACK, 0))
        for stream in list(self._blocked.values()):
            self._pump(stream)

    def _on_ping(self, sid: int, flags: int, payload: bytes) -> None:
        if sid != 0:
            raise F.H2ConnectionError(F.PROTOCOL_ERROR, "PING on a stream")
        if len(payload) != 8:
            raise F.H2ConnectionError(F.FRAME_SIZE_ERROR, "PING size")
        if not flags & F.ACK:
            self._write(F.frame(F.PING, F.ACK, 0, payload))
        elif payload == _KEEPALIVE_PING and self._keepalive is not None:
            self._keepalive.cancel()  # the client is alive: next ping after the interval
            self._keepalive = self._loop.call_later(self._cfg.keepalive_interval,
                                                    self._send_ping)

    def _send_ping(self) -> None:
        if self._closed:
            return
        self._write(F.frame(F.PING, 0, 0, _KEEPALIVE_PING))
        self._keepalive = self._loop.call_later(self._cfg.keepalive_timeout,
                                                self._ping_timeout)

    def _ping_timeout(self) -> None:
        self._keepalive = None
        log.info("HTTP/2 client %s did not answer a keepalive ping: closing", self.peer())
        self.connection_error(F.NO_ERROR, "keepalive ping timeout")

    def _on_rst_stream(self, sid: int, payload: bytes) -> None:
        if sid == 0:
            raise F.H2ConnectionError(F.PROTOCOL_ERROR, "RST_STREAM on stream 0")
        if len(payload) != 4:
            raise F.H2ConnectionError(F.FRAME_SIZE_ERROR, "RST_STREAM size")
        stream = self.streams.get(sid)
        if stream is None:
            if sid > self._last_sid:
                raise F.H2ConnectionError(F.PROTOCOL_ERROR, "RST_STREAM on an idle stream")
            return
        stream.remote_closed = True
        self._abandon(stream)
        self._forget(stream)

    def _on_goaway(self) -> None:
        # The client opens no more streams; the open ones finish normally.
        if not self.streams:
            self._close_when_flushed()

    # -- frames out
    def _write(self, data: bytes) -> None:
        self._out.append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        out = self._out
        if not out:
            return
        self._out = []
        t = self._transport
        if t is not None:
            t.write(out[0] if len(out) == 1 else b"".join(out))

    def send_headers(self, stream: Stream) -> None:
        ctx = stream.context
        block = RESPONSE_HEADERS
        if ctx is not None and ctx.initial_metadata:
            block += metadata_block(ctx.initial_metadata)
        stream.headers_sent = True
        self._write(F.headers_frames(stream.sid, block, False, self._peer_max_frame))

    def send_unary_response(self, stream: Stream, payload: bytes,
                            ctx: ServerContext | None) -> None:
        if stream.closed:
            return
        n = len(payload) + 5
        if n - 5 > self._cfg.max_send_message:
            self.finish(stream, _SC.RESOURCE_EXHAUSTED,
                        f"grpc: trying to send message larger than max ({n - 5} vs. "
                        f"{self._cfg.max_send_message})", ctx)
            return
        if (not stream.headers_sent and n <= self._send_window and n <= stream.send_window
                and n <= self._peer_max_frame and not (ctx and (ctx._trailing or
                                                                 ctx.initial_metadata))):
            # The common case, in one write: headers, the message, trailers.
            self._send_window -= n
            sidb = stream.sid.to_bytes(4, "big")
            self._write(b"".join((
                _RESP_HEADERS_PREFIX, sidb, RESPONSE_HEADERS,
                n.to_bytes(3, "big"), _DATA_FLAGS, sidb,
                b"\0", (n - 5).to_bytes(4, "big"), payload,
                _OK_TRAILERS_PREFIX, sidb, OK_TRAILERS)))
            self._stream_done(stream)
            return
        self.send_message(stream, payload)
        self.finish(stream, _OK, "", ctx)

    def send_message(self, stream: Stream, payload: bytes) -> None:
        if not stream.headers_sent:
            self.send_headers(stream)
        stream.pending.append(memoryview(b"\0" + len(payload).to_bytes(4, "big") + payload))
        self._pump(stream)

    def _pump(self, stream: Stream) -> None:
        """Send what flow control allows of a stream's pending data, then its trailers."""
        pending = stream.pending
        sid = stream.sid
        while pending:
            window = min(self._send_window, stream.send_window)
            if window <= 0:
                self._blocked[sid] = stream
                return
            chunk = pending[0]
            size = min(len(chunk), window, self._peer_max_frame)
            if size == len(chunk):
                pending.popleft()
            else:
                pending[0] = chunk[size:]
                chunk = chunk[:size]
            self._send_window -= size
            stream.send_window -= size
            self._write(F.frame(F.DATA, 0, sid, chunk))  # type: ignore[arg-type]
        self._blocked.pop(sid, None)
        if stream.trailers is not None:
            self._write(F.headers_frames(sid, stream.trailers, True, self._peer_max_frame))
            stream.trailers = None
            self._stream_done(stream)
        elif not self.write_paused:
            self._wake_drain(stream)

    async def drain(self, stream: Stream) -> None:
        while (stream.pending or self.write_paused) and not stream.closed:
            waiter = stream.drain_waiter = self._loop.create_future()
            try:
                await waiter
            finally:
                stream.drain_waiter = None
        if stream.cancelled:
            raise _CancelledError()

    def finish(self, stream: Stream, code: grpc.StatusCode, message: str,
               ctx: ServerContext | None) -> None:
        """End a call with a status: trailers after any pending data, or Trailers-Only."""
        if stream.closed:
            return
        trailing = metadata_block(ctx._trailing) if ctx is not None and ctx._trailing else b""
        if not stream.headers_sent:
            self._write(F.headers_frames(stream.sid, trailers_only_block(code, message, trailing),
                                         True, self._peer_max_frame))
            self._stream_done(stream)
            return
        stream.trailers = status_block(code, message, trailing)
        stream.closed = True
        self._pump(stream)

    def abort_call(self, stream: Stream, code: grpc.StatusCode, message: str) -> None:
        """End a call from the transport side (limits, deadline): status, handler cancelled."""
        self.finish(stream, code, message, stream.context)
        stream.cancelled = True
        task = stream.task
        if task is not None and not task.done():
            task.cancel()

    def _deadline(self, stream: Stream) -> None:
        stream.timer = None
        if not stream.closed:
            self.abort_call(stream, _SC.DEADLINE_EXCEEDED, "Deadline Exceeded")

    def reset_stream(self, sid: int, code: int) -> None:
        self._write(F.rst_stream(sid, code))
        stream = self.streams.get(sid)
        if stream is not None:
            stream.remote_closed = True
            self._abandon(stream)
            self._forget(stream)

    def _stream_done(self, stream: Stream) -> None:
        """Our side of the stream is finished (trailers written)."""
        stream.closed = True
        if not stream.remote_closed:
            # Answered before the request ended: the client need not send the rest.
            self._write(F.rst_stream(stream.sid, F.NO_ERROR))
            stream.remote_closed = True
        self._forget(stream)

    def _forget(self, stream: Stream) -> None:
        sid = stream.sid
        self.streams.pop(sid, None)
        self._blocked.pop(sid, None)
        if stream.timer is not None:
            stream.timer.cancel()
            stream.timer = None
        stream.closed = True
        self._wake_reader(stream)
        self._wake_drain(stream)
        if stream._done_callbacks:
            stream.run_done_callbacks()
        if self._goaway_sent and not self.streams:
            self._close_when_flushed()

    def _abandon(self, stream: Stream) -> None:
        """The call can no longer be answered: cancel its handler."""
        stream.cancelled = True
        stream.closed = True
        stream.pending.clear()
        stream.trailers = None
        task = stream.task
        if task is not None and not task.done():
            task.cancel()
        if self._closed:
            if stream.timer is not None:
                stream.timer.cancel()
            self._wake_reader(stream)
            self._wake_drain(stream)
            stream.run_done_callbacks()

    @staticmethod
    def _wake_reader(stream: Stream) -> None:
        w = stream.reader
        if w is not None and not w.done():
            w.set_result(None)

    @staticmethod
    def _wake_drain(stream: Stream) -> None:
        w = stream.drain_waiter
        if w is not None and not w.done():
            w.set_result(None)

    # -- connection level
    def peer(self) -> str:
        if self._peer is None:
            addr = self._transport.get_extra_info("peername") if self._transport else None
            if isinstance(addr, tuple):
                host, port = addr[0], addr[1]
                self._peer = f"ipv6:[{host}]:{port}" if ":" in host else f"ipv4:{host}:{port}"
            else:
                self._peer = f"unix:{addr or ''}"
        return self._peer

    def auth_context(self) -> dict[str, list[bytes]]:
        """grpc's auth context (TLS, the client certificate's CN and SANs), made once."""
        if self._auth is None:
            self._auth = auth_properties(self._transport)
        return self._auth

    def goaway(self) -> None:
        """Graceful shutdown: no new streams; close once the open ones are done."""
        if self._goaway_sent or self._closed:
            return
        self._goaway_sent = True
        self._goaway_sid = self._last_sid
        self._write(F.goaway(self._last_sid, F.NO_ERROR))
        if not self.streams:
            self._close_when_flushed()

    def connection_error(self, code: int, message: str) -> None:
        log.info("HTTP/2 connection error from %s: %s", self.peer(), message)
        self._write(F.goaway(self._last_sid, code, message.encode()[:256]))
        self._goaway_sent = True
        for stream in list(self.streams.values()):
            self._abandon(stream)
        self._close_when_flushed()

    def close(self) -> None:
        """Drop the connection now (end of a shutdown's grace period)."""
        for stream in list(self.streams.values()):
            self._abandon(stream)
        self._close_when_flushed()

    def _close_when_flushed(self) -> None:
        self._flush()
        if self._transport is not None:
            self._transport.close()  # writes what is buffered, then closes


def _unpad(payload: bytes) -> bytes:
    if not payload:
        raise F.H2ConnectionError(F.PROTOCOL_ERROR, "padded frame without pad length")
    pad = payload[0]
    if pad >= len(payload):
        raise F.H2ConnectionError(F.PROTOCOL_ERROR, "padding exceeds the frame")
    return payload[1:len(payload) - pad]


def _list_size(headers: list[Header]) -> int:
    return sum(len(k) + len(v) + 32 for k, v in headers)
