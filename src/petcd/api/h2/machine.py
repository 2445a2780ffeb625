"""The HTTP/2 connection carrying gRPC (RFC 9113, server side) as a sans-IO state
machine: bytes in (`receive_data`), bytes out (`out`, taken with `data_to_send`), and
events reported to a listener (the layer that runs calls) as they happen. It knows no
sockets, tasks or timers; the clock is passed in.

What it does: framing, SETTINGS, PING, GOAWAY, stream states (streams.py's table), HPACK
decoding and request header checks, the gRPC request checks (method, content-type,
encoding, grpc-timeout), gRPC message framing of request bodies, flow control both
ways, and every per-connection budget (docs/ARCHITECTURE.md lists them):
frames per call, header block size, open streams and their memory, request bytes held
(the connection window is refunded only for bytes consumed), resets, SETTINGS, pings.

Events are synchronous calls on the listener (`Events`), made while a frame is handled:
so a call is set up before the next frame of its stream is parsed, and no event
objects are allocated on the hot path.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from petcd.api.h2 import frames as F
from petcd.api.h2.budgets import PingPolicy, TokenBucket
from petcd.api.h2.config import ServerConfig
from petcd.api.h2.events import Events
from petcd.api.h2.registry import Registry
from petcd.api.h2.requests import Requests
from petcd.api.h2.streams import BLOCKED_ON_STREAM, RECV_RST

__all__ = ["FRAMES_PER_CALL", "Events", "H2Connection"]

log = logging.getLogger("petcd.h2")

# Frames handled per receive_data call (the caller's turn); each 4 KiB of a header
# block counts as one more.
FRAMES_PER_CALL = 128

_WINDOW_UPDATE = F.WINDOW_UPDATE
_DATA = F.DATA
_HEADERS = F.HEADERS
_CONTINUATION = F.CONTINUATION
_SETTINGS = F.SETTINGS
_END_STREAM = F.END_STREAM
_END_HEADERS = F.END_HEADERS
# A HEADERS frame's flags that say its payload is the whole block as it is
_PLAIN_BLOCK_MASK = F.END_HEADERS | F.PADDED | F.PRIORITY_FLAG
_u32_at = F.U32.unpack_from


class H2Connection(Requests):
    """One client connection after its preface (see the module docstring)."""

    def __init__(self, config: ServerConfig, registry: Registry, events: Events,
                 clock: Callable[[], float]) -> None:
        super().__init__(config, registry, events, clock)
        self._buf: bytearray | None = None
        self._need = 9
        self._left: tuple[bytes, int] | None = None  # frames over the budget, for next call
        self.settings_seen = False
        self.closed = False  # after a connection error: nothing more is read
        self.peer = ""  # for log lines
        self.pings = PingPolicy(config.keepalive_min_time)
        self._settings_budget = TokenBucket(config.settings_burst, config.settings_rate)

    def initiate(self) -> None:
        """After the client's preface: our SETTINGS and connection window."""
        cfg = self._cfg
        self.write(F.settings_frame({
            F.SETTINGS_MAX_CONCURRENT_STREAMS: cfg.max_concurrent_streams,
            F.SETTINGS_INITIAL_WINDOW_SIZE: cfg.initial_window,
            F.SETTINGS_MAX_HEADER_LIST_SIZE: cfg.max_header_list_size}))
        if cfg.connection_window > F.DEFAULT_WINDOW:
            self.write(F.window_update(0, cfg.connection_window - F.DEFAULT_WINDOW))

    # -- bytes in
    def receive_data(self, data: bytes) -> bool:
        """Handle the frames in `data` (after what was buffered). True when complete
        frames are left over after this call's budget: call again (with b"") later,
        reading nothing more meanwhile."""
        if self.closed:
            return False
        left = self._left
        if left is not None:
            self._left = None
            chunk, pos = left
            if data:
                chunk, pos = chunk[pos:] + data, 0
        else:
            buf = self._buf
            if buf is not None:
                buf += data
                if len(buf) < self._need:
                    return False
                data = bytes(buf)
                self._buf = None
            chunk, pos = data, 0
        try:
            pos = self._frames(chunk, pos)
        except F.H2ConnectionError as e:
            self.connection_error(e.code, str(e))
            return False
        except Exception as e:  # a bug: answer it as HTTP/2 does, without a log flood
            log.warning("HTTP/2 connection from %s: internal error %r", self.peer, e)
            log.debug("internal error", exc_info=True)
            self.connection_error(F.INTERNAL_ERROR, "internal error")
            return False
        if pos < len(chunk) and not self.closed:
            if len(chunk) - pos >= self._need:
                self._left = (chunk, pos)  # the same bytes next time: no copy
                return True
            self._buf = bytearray(memoryview(chunk)[pos:])
        return False

    def _frames(self, data: bytes, pos: int) -> int:
        n = len(data)
        unpack = F.HEADER.unpack_from
        budget = FRAMES_PER_CALL
        while n - pos >= 9:
            if budget <= 0 or self.closed:
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
            sid &= 0x7FFFFFFF
            if self._cont is not None and ftype != _CONTINUATION:
                raise F.H2ConnectionError(F.PROTOCOL_ERROR, "expected CONTINUATION")
            if not self.settings_seen and ftype != _SETTINGS:
                raise F.H2ConnectionError(F.PROTOCOL_ERROR, "first frame is not SETTINGS")
            if ftype == _WINDOW_UPDATE and length == 4:
                # grpc clients send two per call (the connection's, and the new
                # stream's): the plain increments are made here, with no payload
                # copy; the rest (errors, blocked or unknown streams) below.
                inc = _u32_at(data, pos + 9)[0] & 0x7FFFFFFF
                if sid == 0:
                    window = self.send_window + inc
                    if inc and window <= F.MAX_WINDOW:
                        self.send_window = window
                        pos = end
                        if self.conn_blocked:
                            self.schedule_pump()
                        continue
                else:
                    stream = self.streams.get(sid)
                    if (stream is not None and inc and stream.blocked != BLOCKED_ON_STREAM
                            and self.peer_initial_window + stream.send_credit + inc
                            <= F.MAX_WINDOW):
                        stream.send_credit += inc
                        pos = end
                        continue
            elif ftype == _HEADERS or ftype == _CONTINUATION:  # noqa: SIM109
                # HPACK decoding costs per byte: each 4 KiB of a block counts as a frame
                budget -= length >> 12
            payload = data[pos + 9:end]
            pos = end
            try:
                if ftype == _DATA:
                    self._on_data(sid, flags, payload)
                elif ftype == _HEADERS:
                    if flags & _PLAIN_BLOCK_MASK == _END_HEADERS and sid:
                        # (a request's block in one unpadded frame: _on_headers' checks
                        # and payload cuts have nothing to do)
                        self._on_header_block(sid, flags & _END_STREAM, payload, "")
                    else:
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
                    # The client opens no more streams; the open ones finish normally.
                    if not self.streams:
                        self.end_connection()
                elif ftype == F.PUSH_PROMISE:
                    raise F.H2ConnectionError(F.PROTOCOL_ERROR, "PUSH_PROMISE from a client")
                # other frame types are ignored (RFC 9113 4.1)
            except F.StreamError as e:
                self.reset_stream(e.stream_id, e.code)
        self._need = 9
        return pos

    # -- connection-level frames
    def _on_window_update(self, sid: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise F.H2ConnectionError(F.FRAME_SIZE_ERROR, "WINDOW_UPDATE size")
        inc = F.u32(payload) & 0x7FFFFFFF
        if sid == 0:
            if inc == 0:
                raise F.H2ConnectionError(F.PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
            self.send_window += inc
            if self.send_window > F.MAX_WINDOW:
                raise F.H2ConnectionError(F.FLOW_CONTROL_ERROR, "connection window overflow")
            if self.conn_blocked:
                self.schedule_pump()
            return
        stream = self.streams.get(sid)
        if stream is None:
            if sid > self.last_sid:
                raise F.H2ConnectionError(F.PROTOCOL_ERROR, "WINDOW_UPDATE on an idle stream")
            return
        if inc == 0:
            raise F.StreamError(sid, F.PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
        stream.send_credit += inc
        if self.peer_initial_window + stream.send_credit > F.MAX_WINDOW:
            raise F.StreamError(sid, F.FLOW_CONTROL_ERROR, "stream window overflow")
        if stream.blocked == BLOCKED_ON_STREAM:
            self.pump(stream)

    def _on_settings(self, sid: int, flags: int, payload: bytes) -> None:
        if sid != 0:
            raise F.H2ConnectionError(F.PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & F.ACK:
            if payload:
                raise F.H2ConnectionError(F.FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            return
        if len(payload) % 6:
            raise F.H2ConnectionError(F.FRAME_SIZE_ERROR, "SETTINGS size")
        if not self._settings_budget.spend(self._clock()):
            _calm("too_many_settings")
        if not self.settings_seen:
            self.settings_seen = True
            self.events.handshake_done()
        for key, value in F.parse_settings(payload):
            if key == F.SETTINGS_INITIAL_WINDOW_SIZE:
                if value > F.MAX_WINDOW:
                    raise F.H2ConnectionError(F.FLOW_CONTROL_ERROR, "initial window too large")
                self.set_peer_initial_window(value)
            elif key == F.SETTINGS_MAX_FRAME_SIZE:
                if not F.DEFAULT_MAX_FRAME <= value <= F.MAX_FRAME_LIMIT:
                    raise F.H2ConnectionError(F.PROTOCOL_ERROR, "bad SETTINGS_MAX_FRAME_SIZE")
                self.peer_max_frame = value
            elif key == F.SETTINGS_ENABLE_PUSH and value > 1:
                raise F.H2ConnectionError(F.PROTOCOL_ERROR, "bad SETTINGS_ENABLE_PUSH")
            # header table size: our encoder never indexes; the others concern clients
        self.write(F.frame(F.SETTINGS, F.ACK, 0))

    def _on_ping(self, sid: int, flags: int, payload: bytes) -> None:
        if sid != 0:
            raise F.H2ConnectionError(F.PROTOCOL_ERROR, "PING on a stream")
        if len(payload) != 8:
            raise F.H2ConnectionError(F.FRAME_SIZE_ERROR, "PING size")
        if not flags & F.ACK:
            if not self.pings.allow(self._clock(), bool(self.streams)):
                _calm("too_many_pings")
            self.write(F.frame(F.PING, F.ACK, 0, payload))
        else:
            self.events.ping_acked(payload)

    def _on_rst_stream(self, sid: int, payload: bytes) -> None:
        if sid == 0:
            raise F.H2ConnectionError(F.PROTOCOL_ERROR, "RST_STREAM on stream 0")
        if len(payload) != 4:
            raise F.H2ConnectionError(F.FRAME_SIZE_ERROR, "RST_STREAM size")
        stream = self.streams.get(sid)
        if stream is None:
            if sid > self.last_sid:
                raise F.H2ConnectionError(F.PROTOCOL_ERROR, "RST_STREAM on an idle stream")
            return
        self.close_stream(stream, RECV_RST)
        self._spend_reset()

    def connection_error(self, code: int, message: str) -> None:
        """GOAWAY with an error: read nothing more, cancel the calls, close."""
        log.info("HTTP/2 connection error from %s: %s", self.peer, message)
        self.write(F.goaway(self.last_sid, code, message.encode()[:256]))
        self.goaway_sent = True
        self.closed = True
        self.cancel_all()
        self.events.connection_ended()

    def goaway(self) -> None:
        """Graceful shutdown: no new streams; close once the open ones are done."""
        if self.goaway_sent or self.closed:
            return
        self.goaway_sent = True
        self.write(F.goaway(self.last_sid, F.NO_ERROR))
        if not self.streams:
            self.end_connection()


def _calm(debug: str) -> None:
    """The client exceeded a budget: GOAWAY ENHANCE_YOUR_CALM with `debug` as its debug
    data (grpc-go's words), and the connection is closed."""
    raise F.H2ConnectionError(F.ENHANCE_YOUR_CALM, debug)
