"""One client connection: HTTP/2 (RFC 9113, server side) carrying gRPC, as an asyncio
Protocol. HTTP/1.1 clients on the same listener are handed to the HTTP protocol as soon
as their first bytes differ from the HTTP/2 preface (no forwarding hop).

Hot path of a unary call: one data_received parses HEADERS (a cached HPACK decode and
header check) and DATA, the handler runs in a task, and its response (HEADERS, DATA,
trailers, with pre-encoded header blocks) is appended to the connection's output,
which is written once per event loop iteration for all calls finished in it.

Bounds against hostile clients (docs/ARCHITECTURE.md has the list with defaults):
reading stops while the transport's write buffer is above its high-water mark, so
replies to PING/SETTINGS cannot pile up; request bytes held (partial bodies, queued
messages) count against the connection window, which is refunded only as they are
consumed; each incoming frame does O(1) work plus at most _PUMP_BATCH streams woken
per event loop iteration; pings, resets and open streams have budgets.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING, Any, cast

import grpc

from petcd.api.h2 import frames as F
from petcd.api.h2.budgets import PingPolicy, TokenBucket
from petcd.api.h2.context import ServerContext
from petcd.api.h2.hpack_codec import (
    RESPONSE_HEADERS,
    Block,
    Decoder,
    HeaderListTooLarge,
    HpackError,
)
from petcd.api.h2.request_head import RequestHead, parse_request_head, parse_timeout
from petcd.api.h2.status import (
    OK_TRAILERS,
    metadata_block,
    status_block,
    trailers_only_block,
)
from petcd.api.h2.stream import (
    BLOCKED_ON_CONNECTION,
    BLOCKED_ON_STREAM,
    NOT_BLOCKED,
    Stream,
)
from petcd.tls.gate import auth_properties

if TYPE_CHECKING:
    from petcd.api.h2.server import GrpcServer

__all__ = ["H2Protocol", "Stream", "parse_timeout"]

log = logging.getLogger("petcd.h2")

_SC = grpc.StatusCode
_OK = _SC.OK

# Pre-built frame header prefixes (length, type, flags) of the constant blocks.
_RESP_HEADERS_PREFIX = (len(RESPONSE_HEADERS).to_bytes(3, "big")
                        + bytes((F.HEADERS, F.END_HEADERS)))
_OK_TRAILERS_PREFIX = (len(OK_TRAILERS).to_bytes(3, "big")
                       + bytes((F.HEADERS, F.END_HEADERS | F.END_STREAM)))
_DATA_FLAGS = bytes((F.DATA, 0))
_KEEPALIVE_PING = b"petcd-ka"

_PUMP_BATCH = 64  # blocked streams resumed per event loop iteration
_FRAMES_PER_TURN = 128  # frames handled per event loop iteration, for fairness
_MAX_BLOCK_FRAMES = 64  # HEADERS + CONTINUATION frames of one header block
_MAX_EMPTY_CONTINUATIONS = 4
_UNCOPIED_MESSAGE = 64 << 10  # messages this large go out without a framing copy
_RECENT_RESETS = 64  # stream ids we reset whose in-flight HEADERS are ignored
STREAM_BASE_COST = 2048  # a stream's memory besides its header list, charged to the budget


class H2Protocol(asyncio.Protocol):
    """A connection accepted by the server's listener."""

    def __init__(self, server: GrpcServer) -> None:
        self._server = server
        cfg = self._cfg = server.config
        self._registry = server.registry
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._admitted = False
        self._sniffing = True
        self._buf: bytearray | None = None
        self._need = 0
        self.streams: dict[int, Stream] = {}
        self._last_sid = 0
        self._recent_resets: deque[int] = deque(maxlen=_RECENT_RESETS)
        self._decoder = Decoder(max_list_size=cfg.max_header_list_size)
        # A header block in CONTINUATIONs: stream, flags, bytes, frames, empty frames,
        # and the stream error found in its HEADERS frame (raised once it is decoded).
        self._cont: tuple[int, int, bytearray, list[int], str] | None = None
        self._settings_seen = False
        self._peer_max_frame = F.DEFAULT_MAX_FRAME
        self._peer_initial_window = F.DEFAULT_WINDOW
        self._send_window = F.DEFAULT_WINDOW
        self._recv_window = cfg.connection_window
        self._held = 0  # request bytes buffered for streams, not yet consumed
        self._stream_memory = 0  # sum of open streams' `cost`
        # Streams whose output waits: for the connection window (FIFO; entries whose
        # stream left that state are skipped), or for their own window.
        self._conn_blocked: deque[Stream] = deque()
        self._window_blocked: dict[int, Stream] = {}
        self._sweep: list[Stream] = []  # window-blocked streams to retry after SETTINGS
        self._pump_scheduled = False
        self._drain_waiting: set[Stream] = set()  # handlers waiting for resume_writing
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self.write_paused = False
        self._goaway_sent = False
        self._closed = False
        self._peer: str | None = None
        self._auth: dict[str, list[bytes]] | None = None
        self._keepalive: asyncio.TimerHandle | None = None
        self._handshake: asyncio.TimerHandle | None = None
        self._turn_paused = False  # frames left over for the next event loop iteration
        self._left: tuple[bytes, int] | None = None  # those frames: bytes and position
        self._pings = PingPolicy(cfg.keepalive_min_time)
        self._resets = TokenBucket(cfg.reset_burst, cfg.reset_rate)
        self._settings_budget = TokenBucket(cfg.settings_burst, cfg.settings_rate)

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        if not self._server.admit():
            log.warning("refusing a client connection from %s: %d connections open",
                        self.peer(), self._server.accepted)
            self._sniffing = False
            self._closed = True
            self._transport.abort()
            return
        self._admitted = True
        self._handshake = self._loop.call_later(self._cfg.handshake_timeout,
                                                self._handshake_timeout)

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        left = self._left
        if left is not None:  # (arrived although reading was paused for a turn)
            self._left = None
            data = left[0][left[1]:] + data
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
        self._process(data, 0)

    def _process(self, data: bytes, pos: int) -> None:
        try:
            pos = self._frames(data, pos)
        except F.H2ConnectionError as e:
            self.connection_error(e.code, str(e))
            return
        except Exception as e:  # a bug: answer it as HTTP/2 does, without a log flood
            log.warning("HTTP/2 connection from %s: internal error %r", self.peer(), e)
            log.debug("internal error", exc_info=True)
            self.connection_error(F.INTERNAL_ERROR, "internal error")
            return
        if pos < len(data):
            if len(data) - pos >= self._need:
                # Frames left after this turn's budget: let other connections run,
                # read nothing more meanwhile, go on in the next event loop iteration
                # (from the same bytes: no copy).
                self._left = (data, pos)
                if not self._turn_paused:
                    self._turn_paused = True
                    self._set_reading()
                    self._loop.call_soon(self._next_turn)
            else:
                self._buf = bytearray(memoryview(data)[pos:])
        if self._out:
            self._flush()

    def _next_turn(self) -> None:
        self._turn_paused = False
        left, self._left = self._left, None
        if self._closed or left is None:
            self._set_reading()
            return
        self._process(*left)
        if not self._turn_paused:
            self._set_reading()

    def _set_reading(self) -> None:
        """Read while neither the transport's output is backed up nor a turn pending."""
        t = self._transport
        if t is None or t.is_closing():
            return
        if self.write_paused or self._turn_paused:
            t.pause_reading()
        else:
            t.resume_reading()

    def eof_received(self) -> bool | None:
        return None  # close our side too: a gRPC client half-closing is gone

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._transport = None
        for timer in (self._keepalive, self._handshake):
            if timer is not None:
                timer.cancel()
        for stream in list(self.streams.values()):
            self._abandon(stream)
        self.streams.clear()
        self._conn_blocked.clear()
        self._window_blocked.clear()
        self._sweep.clear()
        self._drain_waiting.clear()
        if self._admitted:
            self._admitted = False
            self._server.release()
        self._server.connection_closed(self)

    def pause_writing(self) -> None:
        # The client does not read what we send: stop reading what it sends (so PING
        # and SETTINGS cannot make us queue replies without bound), as grpc-go does.
        self.write_paused = True
        self._set_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        self._set_reading()
        waiting, self._drain_waiting = self._drain_waiting, set()
        for stream in waiting:
            if not stream.pending:
                self._wake_drain(stream)
        self._schedule_pump()

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

    def _handshake_timeout(self) -> None:
        self._handshake = None
        log.info("client %s did not complete a handshake within %.1fs: closing",
                 self.peer(), self._cfg.handshake_timeout)
        if self._sniffing:
            self._closed = True
            if self._transport is not None:
                self._transport.abort()
        else:
            self.connection_error(F.SETTINGS_TIMEOUT, "no SETTINGS from the client")

    def _hand_to_http(self, data: bytes) -> None:
        transport = self._transport
        assert transport is not None
        if self._handshake is not None:
            self._handshake.cancel()  # the HTTP/1.1 side has its own timeouts
            self._handshake = None
        factory = self._server.http_factory
        if factory is None:
            transport.close()
            return
        http = factory()
        if self._admitted and hasattr(http, "on_lost"):
            self._admitted = False  # HTTP/1.1 gives the connection back when it ends
            cast(Any, http).on_lost = self._server.release
        transport.set_protocol(http)
        http.connection_made(transport)
        http.data_received(data)

    # -- frames in
    def _frames(self, data: bytes, pos: int) -> int:
        n = len(data)
        unpack = F.HEADER.unpack_from
        budget = _FRAMES_PER_TURN
        while n - pos >= 9:
            if not budget:
                self._need = 9  # the caller sees that complete frames are left
                return pos
            budget -= 1
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
                    if F.u32(payload) & 0x7FFFFFFF == sid:  # RFC 9113 5.3.1
                        raise F.StreamError(sid, F.PROTOCOL_ERROR, "stream depends on itself")
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
        stream = self.streams.get(sid)
        if stream is None:
            self._credit_connection()  # nobody holds these bytes
            if sid > self._last_sid:
                raise F.H2ConnectionError(F.PROTOCOL_ERROR, "DATA on an idle stream")
            return  # a stream we answered or reset: ignored
        if stream.remote_closed:
            self._credit_connection()
            raise F.StreamError(sid, F.STREAM_CLOSED, "DATA after END_STREAM")
        stream.recv_window -= size
        if stream.recv_window < 0:
            self._credit_connection()
            raise F.StreamError(sid, F.FLOW_CONTROL_ERROR, "stream window exceeded")
        if flags & F.PADDED:
            payload = _unpad(payload)
        if payload and not stream.closed:
            self._held += len(payload)
            self._feed(stream, payload)
        self._credit_connection()
        if flags & F.END_STREAM:
            self._end_of_request(stream)
        elif not stream.closed:
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
                elif len(rbuf) > 5 + size:  # more than the one message it declared
                    self.abort_call(stream, _SC.INTERNAL,
                                    "grpc: expected exactly one request message")
            return
        while len(rbuf) >= 5:
            size = int.from_bytes(rbuf[1:5], "big")
            if size > limit:
                stream.rbuf = rbuf  # (held bytes are counted from it when forgotten)
                self._too_large(stream, size)
                return
            if len(rbuf) < 5 + size:
                break
            if rbuf[0]:
                stream.rbuf = rbuf
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

    def consumed(self, stream: Stream, n: int) -> None:
        """A handler took n request bytes off the stream's queue."""
        self._held -= n
        self.credit(stream)
        self._credit_connection()

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

    def _credit_connection(self) -> None:
        """Connection window back for what no stream holds: the client can never have
        more than connection_window bytes buffered here."""
        cw = self._cfg.connection_window
        if self._recv_window > cw >> 1:
            return
        give = cw - self._recv_window - self._held
        if give >= cw >> 2:
            self._recv_window += give
            self._write(F.window_update(0, give))

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
        self._held -= len(body)
        self._credit_connection()
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
        error = ""
        if flags & F.PRIORITY_FLAG:
            if len(payload) < 5:
                raise F.H2ConnectionError(F.FRAME_SIZE_ERROR, "HEADERS priority too short")
            if F.u32(payload) & 0x7FFFFFFF == sid:  # RFC 9113 5.3.1
                error = "stream depends on itself"
            payload = payload[5:]
        if not flags & F.END_HEADERS:
            self._cont = (sid, flags, bytearray(payload), [1, 0], error)
            return
        self._on_header_block(sid, flags & F.END_STREAM, payload, error)

    def _on_continuation(self, sid: int, flags: int, payload: bytes) -> None:
        cont = self._cont
        if cont is None or cont[0] != sid:
            raise F.H2ConnectionError(F.PROTOCOL_ERROR, "unexpected CONTINUATION")
        block, counts = cont[2], cont[3]
        block += payload
        counts[0] += 1
        if not payload:
            counts[1] += 1
        if (len(block) > self._cfg.max_header_list_size + 4096
                or counts[0] > _MAX_BLOCK_FRAMES or counts[1] > _MAX_EMPTY_CONTINUATIONS):
            raise F.H2ConnectionError(F.ENHANCE_YOUR_CALM, "header block too large")
        if flags & F.END_HEADERS:
            self._cont = None
            self._on_header_block(sid, cont[1] & F.END_STREAM, bytes(block), cont[4])

    def _decode(self, block: bytes) -> Block | None:
        """The decoded block; None if its list is over max_header_list_size."""
        try:
            return self._decoder.decode(block)
        except HeaderListTooLarge:
            return None
        except HpackError as e:
            raise F.H2ConnectionError(F.COMPRESSION_ERROR, str(e)) from None

    def _on_header_block(self, sid: int, end_stream: int, block: bytes, error: str) -> None:
        stream = self.streams.get(sid)
        if stream is not None:  # trailers: the end of a request
            self._decode(block)
            if error:
                raise F.StreamError(sid, F.PROTOCOL_ERROR, error)
            if stream.remote_closed:
                raise F.StreamError(sid, F.STREAM_CLOSED, "HEADERS after END_STREAM")
            if not end_stream:
                raise F.StreamError(sid, F.PROTOCOL_ERROR, "trailers without END_STREAM")
            self._end_of_request(stream)
            return
        if sid <= self._last_sid:
            self._decode(block)
            if sid in self._recent_resets:  # sent before our RST_STREAM reached it
                return
            # RFC 9113 5.1.1: stream ids only grow; a closed stream gets no new headers.
            raise F.H2ConnectionError(F.PROTOCOL_ERROR, f"HEADERS on closed stream {sid}")
        if not sid & 1:
            raise F.H2ConnectionError(F.PROTOCOL_ERROR, "even stream id from a client")
        self._last_sid = sid
        blk = self._decode(block)
        if error:
            raise F.StreamError(sid, F.PROTOCOL_ERROR, error)
        if self._goaway_sent:
            self._write(F.rst_stream(sid, F.REFUSED_STREAM))
            return
        if (len(self.streams) >= self._cfg.max_concurrent_streams
                or self._stream_memory >= self._cfg.stream_memory):
            self._write(F.rst_stream(sid, F.REFUSED_STREAM))
            self._spend_reset()
            return
        if blk is None:
            self._reject(sid, end_stream, _SC.RESOURCE_EXHAUSTED,
                         "header list size exceeds the limit")
            return
        head = blk.head
        if head is None:
            head = blk.head = parse_request_head(blk.headers)
        assert isinstance(head, RequestHead)
        if head.error is not None:
            raise F.StreamError(sid, F.PROTOCOL_ERROR, head.error)
        self._start_call(sid, end_stream, blk, head)

    def _start_call(self, sid: int, end_stream: int, blk: Block, head: RequestHead) -> None:
        path = head.path
        assert path is not None
        if head.method != "POST":
            self._reject(sid, end_stream, _SC.INTERNAL, f"invalid method {head.method!r}", 405)
            return
        ctype = head.content_type
        if ctype is None or not ctype.startswith("application/grpc"):
            self._reject(sid, end_stream, _SC.INTERNAL,
                         f"invalid gRPC request content-type {ctype!r}", 415)
            return
        method = self._registry.lookup(path)
        if method is None:
            self._reject(sid, end_stream, _SC.UNIMPLEMENTED,
                         self._registry.unknown_message(path))
            return
        encoding = head.encoding
        if encoding is not None and encoding != "identity":
            self._reject(sid, end_stream, _SC.UNIMPLEMENTED,
                         f'grpc: Decompressor is not installed for grpc-encoding "{encoding}"')
            return
        headers = blk.headers
        cost = STREAM_BASE_COST + blk.size
        stream = Stream(self, sid, path, headers, method, self._cfg.initial_window, cost)
        self.streams[sid] = stream
        self._stream_memory += cost
        timeout = head.timeout
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
        self._pings.data_sent = True
        self._write(F.headers_frames(sid, trailers_only_block(code, message, b"", http_status),
                                     True, self._peer_max_frame))
        if not end_stream:
            self._write(F.rst_stream(sid, F.NO_ERROR))
            self._recent_resets.append(sid)

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
            if self._conn_blocked:
                self._schedule_pump()
            return
        stream = self.streams.get(sid)
        if stream is None:
            if sid > self._last_sid:
                raise F.H2ConnectionError(F.PROTOCOL_ERROR, "WINDOW_UPDATE on an idle stream")
            return
        if inc == 0:
            raise F.StreamError(sid, F.PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
        stream.send_credit += inc
        if self._peer_initial_window + stream.send_credit > F.MAX_WINDOW:
            raise F.StreamError(sid, F.FLOW_CONTROL_ERROR, "stream window overflow")
        if stream.blocked == BLOCKED_ON_STREAM:
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
        if not self._settings_budget.spend(self._loop.time()):
            self._calm("too_many_settings")
        if not self._settings_seen:
            self._settings_seen = True
            if self._handshake is not None:
                self._handshake.cancel()
                self._handshake = None
        for key, value in F.parse_settings(payload):
            if key == F.SETTINGS_INITIAL_WINDOW_SIZE:
                if value > F.MAX_WINDOW:
                    raise F.H2ConnectionError(F.FLOW_CONTROL_ERROR, "initial window too large")
                # Stream windows are relative to this value: nothing to walk. Streams
                # waiting for their window are retried in batches if it grew.
                grew = value > self._peer_initial_window
                self._peer_initial_window = value
                if grew and self._window_blocked and not self._sweep:
                    self._sweep = list(self._window_blocked.values())
                    self._schedule_pump()
            elif key == F.SETTINGS_MAX_FRAME_SIZE:
                if not F.DEFAULT_MAX_FRAME <= value <= F.MAX_FRAME_LIMIT:
                    raise F.H2ConnectionError(F.PROTOCOL_ERROR, "bad SETTINGS_MAX_FRAME_SIZE")
                self._peer_max_frame = value
            elif key == F.SETTINGS_ENABLE_PUSH and value > 1:
                raise F.H2ConnectionError(F.PROTOCOL_ERROR, "bad SETTINGS_ENABLE_PUSH")
            # header table size: our encoder never indexes; the others concern clients
        self._write(F.frame(F.SETTINGS, F.ACK, 0))

    def _on_ping(self, sid: int, flags: int, payload: bytes) -> None:
        if sid != 0:
            raise F.H2ConnectionError(F.PROTOCOL_ERROR, "PING on a stream")
        if len(payload) != 8:
            raise F.H2ConnectionError(F.FRAME_SIZE_ERROR, "PING size")
        if not flags & F.ACK:
            if not self._pings.allow(self._loop.time(), bool(self.streams)):
                self._calm("too_many_pings")
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
        self._spend_reset()

    def _spend_reset(self) -> None:
        if not self._resets.spend(self._loop.time()):
            self._calm("too_many_resets")

    @staticmethod
    def _calm(debug: str) -> None:
        """The client exceeded a budget: GOAWAY ENHANCE_YOUR_CALM with `debug` as its
        debug data (grpc-go's words), and the connection is closed."""
        raise F.H2ConnectionError(F.ENHANCE_YOUR_CALM, debug)

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
        self._pings.data_sent = True
        self._write(F.headers_frames(stream.sid, block, False, self._peer_max_frame))

    def send_unary_response(self, stream: Stream, payload: bytes | bytearray,
                            ctx: ServerContext | None) -> None:
        if stream.closed:
            return
        n = len(payload) + 5
        if n - 5 > self._cfg.max_send_message:
            self.finish(stream, _SC.RESOURCE_EXHAUSTED,
                        f"grpc: trying to send message larger than max ({n - 5} vs. "
                        f"{self._cfg.max_send_message})", ctx)
            return
        if (not stream.headers_sent and n <= self._send_window
                and n <= self._peer_initial_window + stream.send_credit
                and n <= self._peer_max_frame and not (ctx and (ctx._trailing or
                                                                 ctx.initial_metadata))):
            # The common case, in one write: headers, the message, trailers.
            self._send_window -= n
            self._pings.data_sent = True
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

    def send_message(self, stream: Stream, payload: bytes | bytearray) -> None:
        if not stream.headers_sent:
            self.send_headers(stream)
        prefix = b"\0" + len(payload).to_bytes(4, "big")
        if len(payload) < _UNCOPIED_MESSAGE:
            stream.pending.append(memoryview(prefix + payload))
        else:  # a large message (a big range) is sent from where it is, not copied
            stream.pending.append(memoryview(prefix))
            stream.pending.append(memoryview(payload))
        self._pump(stream)

    def _pump(self, stream: Stream) -> None:
        """Send what flow control allows of a stream's pending data, then its trailers."""
        pending = stream.pending
        sid = stream.sid
        if stream.blocked == BLOCKED_ON_STREAM:
            del self._window_blocked[sid]
        stream.blocked = NOT_BLOCKED
        while pending:
            stream_window = self._peer_initial_window + stream.send_credit
            if stream_window <= 0:
                stream.blocked = BLOCKED_ON_STREAM
                self._window_blocked[sid] = stream
                return
            window = min(self._send_window, stream_window)
            if window <= 0:
                stream.blocked = BLOCKED_ON_CONNECTION
                self._conn_blocked.append(stream)
                return
            chunk = pending[0]
            size = min(len(chunk), window, self._peer_max_frame)
            if size == len(chunk):
                pending.popleft()
            else:
                pending[0] = chunk[size:]
                chunk = chunk[:size]
            self._send_window -= size
            stream.send_credit -= size
            self._pings.data_sent = True
            self._write(F.frame(F.DATA, 0, sid, chunk))  # type: ignore[arg-type]
        if stream.trailers is not None:
            self._write(F.headers_frames(sid, stream.trailers, True, self._peer_max_frame))
            stream.trailers = None
            self._stream_done(stream)
        elif not self.write_paused:
            self._wake_drain(stream)

    def _schedule_pump(self) -> None:
        if not self._pump_scheduled and (self._conn_blocked or self._sweep):
            self._pump_scheduled = True
            self._loop.call_soon(self._pump_some)

    def _pump_some(self) -> None:
        """Resume at most _PUMP_BATCH blocked streams, then yield to the event loop:
        a window opening never costs one callback time proportional to the streams."""
        self._pump_scheduled = False
        if self._closed:
            return
        budget = _PUMP_BATCH
        blocked = self._conn_blocked
        while blocked and budget and self._send_window > 0:
            stream = blocked.popleft()
            if stream.blocked == BLOCKED_ON_CONNECTION:  # else forgotten or moved on
                budget -= 1
                self._pump(stream)
        sweep = self._sweep
        while sweep and budget:
            stream = sweep.pop()
            if stream.blocked == BLOCKED_ON_STREAM:
                budget -= 1
                if self._peer_initial_window + stream.send_credit > 0:
                    self._pump(stream)
        if self._out:
            self._flush()
        if (blocked and self._send_window > 0) or sweep:
            self._schedule_pump()

    async def drain(self, stream: Stream) -> None:
        while (stream.pending or self.write_paused) and not stream.closed:
            waiter = stream.drain_waiter = self._loop.create_future()
            if not stream.pending:
                self._drain_waiting.add(stream)
            try:
                await waiter
            finally:
                stream.drain_waiter = None
                self._drain_waiting.discard(stream)
        if stream.cancelled:
            raise asyncio.CancelledError()

    def finish(self, stream: Stream, code: grpc.StatusCode, message: str,
               ctx: ServerContext | None) -> None:
        """End a call with a status: trailers after any pending data, or Trailers-Only."""
        if stream.closed:
            return
        trailing = metadata_block(ctx._trailing) if ctx is not None and ctx._trailing else b""
        self._pings.data_sent = True
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
        self._recent_resets.append(sid)
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
            self._recent_resets.append(stream.sid)
            stream.remote_closed = True
        self._forget(stream)

    def _forget(self, stream: Stream) -> None:
        sid = stream.sid
        if self.streams.pop(sid, None) is not None:
            self._stream_memory -= stream.cost
        if stream.blocked == BLOCKED_ON_STREAM:
            del self._window_blocked[sid]
        stream.blocked = NOT_BLOCKED  # a stale entry in _conn_blocked is skipped
        held = len(stream.rbuf) + stream.queued_bytes
        if held:
            stream.rbuf = b""
            stream.queued_bytes = 0
            if stream.messages:
                stream.messages.clear()
            self._held -= held
            self._credit_connection()
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
        self._write(F.goaway(self._last_sid, F.NO_ERROR))
        if not self.streams:
            self._close_when_flushed()

    def connection_error(self, code: int, message: str) -> None:
        log.info("HTTP/2 connection error from %s: %s", self.peer(), message)
        self._write(F.goaway(self._last_sid, code, message.encode()[:256]))
        self._goaway_sent = True
        self._closed_by_us()

    def _closed_by_us(self) -> None:
        """After a GOAWAY for an error: read nothing more, cancel calls, close."""
        for stream in list(self.streams.values()):
            self._abandon(stream)
        self._close_when_flushed()
        self._closed = True  # data_received ignores what is still in flight

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
