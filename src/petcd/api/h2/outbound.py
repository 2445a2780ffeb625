"""The send side of the sans-IO HTTP/2 connection: the output buffer, flow control
toward the client (its windows, streams blocked on them), responses and trailers, and
the end of streams. machine.H2Connection adds the receive side.

Bounds: blocked streams wait in a FIFO (connection window) or a dict (their own
window); a window that opens wakes at most PUMP_BATCH of them per `pump_some` call,
which the IO layer makes once per event loop iteration, so no incoming frame costs
time proportional to the number of streams. Stream windows are stored relative to the
client's SETTINGS_INITIAL_WINDOW_SIZE, so a SETTINGS frame walks no streams."""

from __future__ import annotations

import struct
from collections import deque
from typing import TYPE_CHECKING

from petcd.api.h2 import frames as F
from petcd.api.h2.budgets import PingPolicy
from petcd.api.h2.hpack_codec import RESPONSE_HEADERS
from petcd.api.h2.status import OK_TRAILERS
from petcd.api.h2.streams import (
    BLOCKED_ON_CONNECTION,
    BLOCKED_ON_STREAM,
    CLOSED,
    HALF_CLOSED_LOCAL,
    HALF_CLOSED_REMOTE,
    NO_PENDING,
    NOT_BLOCKED,
    SEND_END_STREAM,
    SEND_RST,
    TABLE,
    H2Stream,
    Input,
    pending_queue,
)

if TYPE_CHECKING:
    from petcd.api.h2.events import Events

PUMP_BATCH = 64  # blocked streams resumed per pump_some call
RECENT_RESETS = 64  # stream ids we reset whose in-flight HEADERS are ignored
UNCOPIED_MESSAGE = 64 << 10  # messages this large go out without a framing copy

# Pre-built frame header prefixes (length, type, flags) of the constant blocks.
_RESP_HEADERS_PREFIX = (len(RESPONSE_HEADERS).to_bytes(3, "big")
                        + bytes((F.HEADERS, F.END_HEADERS)))
_OK_TRAILERS_PREFIX = (len(OK_TRAILERS).to_bytes(3, "big")
                       + bytes((F.HEADERS, F.END_HEADERS | F.END_STREAM)))
_DATA_FLAGS = bytes((F.DATA, 0))
_DATA = F.DATA
# A unary answer's bytes after the HEADERS frame's prefix, up to the message: stream id,
# the constant header block, the DATA frame's header (24-bit length and type as one
# u32, flags, stream id) and the gRPC message prefix (flag, length).
_UNARY_HEAD = struct.Struct(f">L{len(RESPONSE_HEADERS)}sLBLBL")
# The OK trailers frame: its prefix, stream id, block.
_UNARY_TAIL = struct.Struct(f">5sL{len(OK_TRAILERS)}s")


class Outbound:
    pings: PingPolicy
    held: int
    stream_memory: int
    closed: bool

    def __init__(self, events: Events) -> None:
        self.events = events
        self.streams: dict[int, H2Stream] = {}
        self.out: list[bytes] = []
        self.send_window = F.DEFAULT_WINDOW
        self.peer_initial_window = F.DEFAULT_WINDOW
        self.peer_max_frame = F.DEFAULT_MAX_FRAME
        # Streams whose output waits: for the connection window (FIFO; entries whose
        # stream left that state are skipped), or for their own window.
        self.conn_blocked: deque[H2Stream] = deque()
        self.window_blocked: dict[int, H2Stream] = {}
        self._sweep: list[H2Stream] = []  # window-blocked streams to retry after SETTINGS
        self._pump_scheduled = False
        self.output_paused = False  # set by the IO layer while the client does not read
        self.goaway_sent = False
        self.recent_resets: deque[int] = deque(maxlen=RECENT_RESETS)

    # -- output
    def write(self, data: bytes) -> None:
        out = self.out
        if not out:
            self.events.output_ready()
        out.append(data)

    def data_to_send(self) -> bytes:
        out = self.out
        if not out:
            return b""
        self.out = []
        return out[0] if len(out) == 1 else b"".join(out)

    # -- responses
    def send_headers(self, stream: H2Stream, metadata: bytes = b"") -> None:
        stream.headers_sent = True
        self.pings.data_sent = True
        self.write(F.headers_frames(stream.sid, RESPONSE_HEADERS + metadata, False,
                                    self.peer_max_frame))

    def send_unary(self, stream: H2Stream, payload: bytes | bytearray) -> bool:
        """The common unary answer (no metadata) in one write: headers, the message,
        OK trailers. False when flow control or a sent header block rules it out."""
        n = len(payload) + 5
        if (stream.headers_sent or n > self.send_window or n > self.peer_max_frame
                or n > self.peer_initial_window + stream.send_credit):
            return False
        self.send_window -= n
        self.pings.data_sent = True
        sid = stream.sid
        out = self.out  # (write() inlined)
        if not out:
            self.events.output_ready()
        out.append(b"".join((
            _RESP_HEADERS_PREFIX,
            _UNARY_HEAD.pack(sid, RESPONSE_HEADERS, n << 8 | _DATA, 0, sid, 0, n - 5),
            payload, _UNARY_TAIL.pack(_OK_TRAILERS_PREFIX, sid, OK_TRAILERS))))
        if stream.state is HALF_CLOSED_REMOTE:  # (the request had ended: now closed)
            self.forget(stream, False)
        else:
            stream.state = TABLE[stream.state][SEND_END_STREAM]  # type: ignore[assignment]
            self.stream_done(stream)
        return True

    def send_small(self, stream: H2Stream, payload: bytes | bytearray) -> bool:
        """A message of a stream whose headers are out, in one DATA frame and one write,
        when nothing of the stream waits and the windows and frame size take it whole
        (a live watch event). False: use send_message."""
        n = len(payload) + 5
        if (not stream.headers_sent or stream.pending or n > self.send_window
                or n > self.peer_max_frame or n > self.peer_initial_window + stream.send_credit):
            return False
        self.send_window -= n
        stream.send_credit -= n
        self.pings.data_sent = True
        self.write(b"".join((n.to_bytes(3, "big"), _DATA_FLAGS, stream.sid.to_bytes(4, "big"),
                             b"\0", (n - 5).to_bytes(4, "big"), payload)))
        return True

    def send_message(self, stream: H2Stream, payload: bytes | bytearray) -> None:
        if not stream.headers_sent:
            self.send_headers(stream)
        prefix = b"\0" + len(payload).to_bytes(4, "big")
        pending = pending_queue(stream)
        if len(payload) < UNCOPIED_MESSAGE:
            pending.append(memoryview(prefix + payload))
        else:  # a large message (a big range) is sent from where it is, not copied
            pending.append(memoryview(prefix))
            pending.append(memoryview(payload))
        self.pump(stream)

    def send_data(self, stream: H2Stream, data: bytes | bytearray) -> None:
        """Data of a message sent in pieces (the caller wrote its gRPC prefix)."""
        if not stream.headers_sent:
            self.send_headers(stream)
        pending_queue(stream).append(memoryview(data))
        self.pump(stream)

    def end_stream(self, stream: H2Stream, trailers: bytes) -> None:
        """Trailers (with END_STREAM) once the stream's queued data is sent: the call
        has ended now (the state moves), the stream is forgotten once they are out."""
        stream.trailers = trailers
        stream.state = TABLE[stream.state][SEND_END_STREAM]  # type: ignore[assignment]
        self.pump(stream)

    def trailers_only(self, stream: H2Stream, block: bytes) -> None:
        """A Trailers-Only answer (no response headers were sent)."""
        self.pings.data_sent = True
        self.write(F.headers_frames(stream.sid, block, True, self.peer_max_frame))
        stream.state = TABLE[stream.state][SEND_END_STREAM]  # type: ignore[assignment]
        self.stream_done(stream)

    # -- flow control
    def pump(self, stream: H2Stream) -> None:
        """Send what flow control allows of a stream's pending data, then its trailers."""
        pending = stream.pending
        sid = stream.sid
        if stream.blocked == BLOCKED_ON_STREAM:
            del self.window_blocked[sid]
        stream.blocked = NOT_BLOCKED
        while isinstance(pending, deque) and pending:  # (else NO_PENDING: nothing queued)
            stream_window = self.peer_initial_window + stream.send_credit
            if stream_window <= 0:
                stream.blocked = BLOCKED_ON_STREAM
                self.window_blocked[sid] = stream
                return
            window = min(self.send_window, stream_window)
            if window <= 0:
                stream.blocked = BLOCKED_ON_CONNECTION
                self.conn_blocked.append(stream)
                return
            chunk = pending[0]
            size = min(len(chunk), window, self.peer_max_frame)
            if size == len(chunk):
                pending.popleft()
            else:
                pending[0] = chunk[size:]
                chunk = chunk[:size]
            self.send_window -= size
            stream.send_credit -= size
            self.pings.data_sent = True
            self.write(F.frame(F.DATA, 0, sid, chunk))  # type: ignore[arg-type]
        if stream.trailers is not None:
            self.write(F.headers_frames(sid, stream.trailers, True, self.peer_max_frame))
            stream.trailers = None
            self.stream_done(stream)
        elif not self.output_paused:
            self.events.writable(stream)

    def set_peer_initial_window(self, value: int) -> None:
        # Stream windows are relative to this value: nothing to walk. Streams waiting
        # for their window are retried in batches if it grew.
        grew = value > self.peer_initial_window
        self.peer_initial_window = value
        if grew and self.window_blocked and not self._sweep:
            self._sweep = list(self.window_blocked.values())
            self.schedule_pump()

    def schedule_pump(self) -> None:
        if not self._pump_scheduled and (self.conn_blocked or self._sweep):
            self._pump_scheduled = True
            self.events.pump_wanted()

    def pump_some(self) -> None:
        """Resume at most PUMP_BATCH blocked streams (the IO layer calls this once per
        event loop iteration while there are more)."""
        self._pump_scheduled = False
        if self.closed:
            return
        budget = PUMP_BATCH
        blocked = self.conn_blocked
        while blocked and budget and self.send_window > 0:
            stream = blocked.popleft()
            if stream.blocked == BLOCKED_ON_CONNECTION:  # else forgotten or moved on
                budget -= 1
                self.pump(stream)
        sweep = self._sweep
        while sweep and budget:
            stream = sweep.pop()
            if stream.blocked == BLOCKED_ON_STREAM:
                budget -= 1
                if self.peer_initial_window + stream.send_credit > 0:
                    self.pump(stream)
        if (blocked and self.send_window > 0) or sweep:
            self.schedule_pump()

    # -- the end of streams
    def reset_stream(self, sid: int, code: int) -> None:
        self.write(F.rst_stream(sid, code))
        self.recent_resets.append(sid)
        stream = self.streams.get(sid)
        if stream is not None:
            self.close_stream(stream, SEND_RST)

    def stream_done(self, stream: H2Stream) -> None:
        """Our END_STREAM is written (the state moved when it was queued)."""
        if stream.state is HALF_CLOSED_LOCAL:
            # Answered before the request ended: the client need not send the rest.
            self.write(F.rst_stream(stream.sid, F.NO_ERROR))
            self.recent_resets.append(stream.sid)
            stream.state = CLOSED
        self.forget(stream, False)

    def close_stream(self, stream: H2Stream, how: Input) -> None:
        """A reset (sent or received): the call is cancelled."""
        stream.state = TABLE[stream.state][how]  # type: ignore[assignment]
        stream.pending = NO_PENDING
        stream.trailers = None
        self.forget(stream, True)

    def forget(self, stream: H2Stream, cancelled: bool) -> None:
        sid = stream.sid
        if self.streams.pop(sid, None) is not None:
            self.stream_memory -= stream.cost
        if stream.blocked == BLOCKED_ON_STREAM:
            del self.window_blocked[sid]
        stream.blocked = NOT_BLOCKED  # a stale entry in conn_blocked is skipped
        held = len(stream.rbuf) + stream.queued_bytes
        if held:
            stream.rbuf = b""
            stream.queued_bytes = 0
            if stream.messages:
                stream.messages.clear()
            self.held -= held
            self.credit_connection()
        stream.state = CLOSED
        self.events.stream_closed(stream, cancelled)
        if self.goaway_sent and not self.streams:
            self.end_connection()

    def cancel_all(self) -> None:
        """The connection is over (an error, or gone): every call is cancelled."""
        streams = list(self.streams.values())
        self.streams.clear()
        self.conn_blocked.clear()
        self.window_blocked.clear()
        self._sweep.clear()
        self.stream_memory = 0
        for stream in streams:
            stream.state = CLOSED
            stream.pending = NO_PENDING
            stream.trailers = None
            stream.blocked = NOT_BLOCKED
            self.events.stream_closed(stream, True)

    def end_connection(self) -> None:
        self.events.connection_ended()

    def credit_connection(self) -> None:
        raise NotImplementedError  # the receive side's
