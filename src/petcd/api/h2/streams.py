"""HTTP/2 stream state (RFC 9113 5.1, server side, no push) as an explicit table, and
the per-stream record the sans-IO connection keeps (windows, request bytes, output
waiting for flow control). No IO, no asyncio."""

from __future__ import annotations

import enum
from collections import deque
from typing import Any

from petcd.api.h2.hpack_codec import Header


class State(enum.IntEnum):
    """RFC 9113 5.1's states. Our side's END_STREAM moves the state when it is queued
    (its trailers may still wait in `pending`/`trailers` for flow control), so the
    order matters: `state >= HALF_CLOSED_LOCAL` is "the call has ended", `state >=
    HALF_CLOSED_REMOTE` "no more request frames, or no one to read them"."""

    IDLE = 0
    OPEN = 1
    HALF_CLOSED_REMOTE = 2  # the client sent END_STREAM; we may still answer
    HALF_CLOSED_LOCAL = 3  # we ended the call (END_STREAM queued); the client may send
    CLOSED = 4


class Input(enum.IntEnum):
    RECV_HEADERS = 0
    RECV_DATA = 1
    RECV_END_STREAM = 2
    RECV_RST = 3
    SEND_HEADERS = 4
    SEND_DATA = 5
    SEND_END_STREAM = 6
    SEND_RST = 7


IDLE, OPEN, HALF_CLOSED_REMOTE, HALF_CLOSED_LOCAL, CLOSED = State
(RECV_HEADERS, RECV_DATA, RECV_END_STREAM, RECV_RST,
 SEND_HEADERS, SEND_DATA, SEND_END_STREAM, SEND_RST) = Input

# (state, input) -> next state. A pair not in the table is not allowed in that state
# (for received frames: a stream error STREAM_CLOSED, RFC 9113 5.1).
TRANSITIONS: dict[tuple[State, Input], State] = {
    (IDLE, RECV_HEADERS): OPEN,
    (OPEN, RECV_DATA): OPEN,
    (OPEN, RECV_HEADERS): OPEN,  # trailers (with END_STREAM, checked by the caller)
    (OPEN, RECV_END_STREAM): HALF_CLOSED_REMOTE,
    (OPEN, SEND_HEADERS): OPEN,
    (OPEN, SEND_DATA): OPEN,
    (OPEN, SEND_END_STREAM): HALF_CLOSED_LOCAL,
    (HALF_CLOSED_REMOTE, SEND_HEADERS): HALF_CLOSED_REMOTE,
    (HALF_CLOSED_REMOTE, SEND_DATA): HALF_CLOSED_REMOTE,
    (HALF_CLOSED_REMOTE, SEND_END_STREAM): CLOSED,
    (HALF_CLOSED_LOCAL, RECV_DATA): HALF_CLOSED_LOCAL,
    (HALF_CLOSED_LOCAL, RECV_HEADERS): HALF_CLOSED_LOCAL,
    (HALF_CLOSED_LOCAL, RECV_END_STREAM): CLOSED,
}
for _s in (IDLE, OPEN, HALF_CLOSED_REMOTE, HALF_CLOSED_LOCAL):
    TRANSITIONS[_s, RECV_RST] = CLOSED
    TRANSITIONS[_s, SEND_RST] = CLOSED
TRANSITIONS[CLOSED, SEND_RST] = CLOSED  # (an RST for a stream we already closed)


# The same table indexed [state][input] (None: not allowed), for the hot path: enum
# members hash slowly, tuple indexing by an IntEnum is a C fast path.
TABLE: tuple[tuple[State | None, ...], ...] = tuple(
    tuple(TRANSITIONS.get((s, i)) for i in Input) for s in State)


# A new stream's state after its request HEADERS (without and with END_STREAM).
OPENED = TABLE[IDLE][RECV_HEADERS]
OPENED_ENDED = TABLE[TABLE[IDLE][RECV_HEADERS] or IDLE][RECV_END_STREAM]
assert OPENED is not None and OPENED_ENDED is not None


class StreamStateError(Exception):
    """An input the stream's state does not allow."""


def next_state(state: State, event: Input) -> State:
    new = TABLE[state][event]
    if new is None:
        raise StreamStateError(f"{event.name} in state {state.name}")
    return new


NOT_BLOCKED = 0
BLOCKED_ON_CONNECTION = 1  # in the connection's FIFO of streams waiting for its window
BLOCKED_ON_STREAM = 2  # waiting for a WINDOW_UPDATE (or SETTINGS) for this stream


NO_PENDING: tuple[()] = ()  # a stream's `pending` before anything is queued


def pending_queue(stream: H2Stream) -> deque[memoryview]:
    """The stream's queue of response bytes waiting for window (made on first use)."""
    pending = stream.pending
    if isinstance(pending, deque):
        return pending
    q: deque[memoryview] = deque()
    stream.pending = q
    return q


class H2Stream:
    """One stream of the connection. `call` belongs to the layer above (the gRPC call
    running on this stream); the connection never looks inside it."""

    __slots__ = (
        "blocked",
        "call",
        "cost",
        "head",
        "headers",
        "headers_sent",
        "messages",
        "pending",
        "queued_bytes",
        "rbuf",
        "recv_window",
        "send_credit",
        "sid",
        "state",
        "trailers",
    )

    def __init__(self, sid: int, state: State, headers: list[Header], recv_window: int,
                 cost: int, head: Any = None) -> None:
        self.sid = sid
        self.state = state  # OPENED or OPENED_ENDED: its request headers arrived
        self.headers = headers
        self.head = head  # the request_head.RequestHead derived from `headers` (shared)
        self.recv_window = recv_window  # what the client may still send us
        # What we may still send it, relative to the client's SETTINGS_INITIAL_WINDOW_SIZE
        # (so a change of that setting costs nothing per stream).
        self.send_credit = 0
        self.blocked = NOT_BLOCKED  # why `pending` waits (the connection keeps queues)
        self.cost = cost  # memory charged to the connection's stream budget
        self.headers_sent = False
        self.rbuf: bytes | bytearray = b""  # request bytes not yet cut into messages
        self.messages: deque[bytes] | None = None  # streaming requests: complete messages
        self.queued_bytes = 0  # bytes of `messages` (held back from flow-control credit)
        # Response bytes waiting for window: NO_PENDING until the first are queued
        # (most unary answers go out in one write and never queue).
        self.pending: deque[memoryview] | tuple[()] = NO_PENDING
        self.trailers: bytes | None = None  # sent (with END_STREAM) once `pending` is empty
        self.call: Any = None

    def move(self, event: Input) -> None:
        self.state = next_state(self.state, event)

    @property
    def remote_closed(self) -> bool:
        """No more request frames: END_STREAM received, or the stream is closed."""
        s = self.state
        return s is HALF_CLOSED_REMOTE or s is CLOSED

    @property
    def finished(self) -> bool:
        """The call has ended (END_STREAM queued or sent, or reset). Hot paths inline
        it as `state >= HALF_CLOSED_LOCAL`."""
        return self.state >= HALF_CLOSED_LOCAL

    @property
    def output_queued(self) -> bool:
        """Data or trailers still wait for flow control."""
        return bool(self.pending) or self.trailers is not None
