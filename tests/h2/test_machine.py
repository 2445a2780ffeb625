"""The sans-IO HTTP/2 connection (api/h2/machine.py) driven frame by frame: bytes in,
events and bytes out, a fake clock, no sockets, no event loop."""

from __future__ import annotations

from typing import Any

import grpc
import hpack
import pytest

from petcd.api.h2 import ServerConfig
from petcd.api.h2 import frames as F
from petcd.api.h2.budgets import MAX_PING_STRIKES
from petcd.api.h2.machine import FRAMES_PER_CALL, H2Connection
from petcd.api.h2.registry import Method, Registry
from petcd.api.h2.status import trailers_only_block
from petcd.api.h2.streams import (
    CLOSED,
    HALF_CLOSED_LOCAL,
    HALF_CLOSED_REMOTE,
    IDLE,
    OPEN,
    TRANSITIONS,
    H2Stream,
    Input,
    State,
    StreamStateError,
    next_state,
)


async def _unused(*_a: Any) -> bytes:
    return b""


class Recorder:
    """The layer above, as a list of what happened."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.conn: H2Connection | None = None

    def call_started(self, stream: H2Stream, method: Method, timeout: float | None) -> None:
        stream.call = object()
        self.events.append(("started", stream.sid, method.path, timeout))

    def request_complete(self, stream: H2Stream, message: bytes) -> None:
        self.events.append(("request", stream.sid, message))

    def messages_ready(self, stream: H2Stream) -> None:
        self.events.append(("messages", stream.sid))

    def call_failed(self, stream: H2Stream, code: grpc.StatusCode, message: str) -> None:
        self.events.append(("failed", stream.sid, code, message))
        assert self.conn is not None
        self.conn.trailers_only(stream, trailers_only_block(code, message))

    def stream_closed(self, stream: H2Stream, cancelled: bool) -> None:
        self.events.append(("closed", stream.sid, cancelled))

    def writable(self, stream: H2Stream) -> None:
        self.events.append(("writable", stream.sid))

    def handshake_done(self) -> None:
        self.events.append(("handshake",))

    def ping_acked(self, payload: bytes) -> None:
        self.events.append(("ping_ack", payload))

    def output_ready(self) -> None:
        pass

    def pump_wanted(self) -> None:
        self.events.append(("pump",))

    def connection_ended(self) -> None:
        self.events.append(("ended",))

    def kinds(self) -> list[str]:
        return [e[0] for e in self.events]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def frames_of(data: bytes) -> list[tuple[int, int, int, bytes]]:
    out = []
    while len(data) >= 9:
        hi, lo, ftype, flags, sid = F.HEADER.unpack_from(data)
        n = hi << 16 | lo
        out.append((ftype, flags, sid, data[9:9 + n]))
        data = data[9 + n:]
    assert not data
    return out


def setup(settings: dict[int, int] | None = None, **cfg: Any
          ) -> tuple[H2Connection, Recorder, Clock]:
    registry = Registry()
    registry.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("t.S", {
        "Unary": grpc.unary_unary_rpc_method_handler(_unused),
        "Stream": grpc.stream_stream_rpc_method_handler(_unused),
    })])
    rec, clock = Recorder(), Clock()
    conn = H2Connection(ServerConfig(**cfg), registry, rec, clock)
    rec.conn = conn
    conn.initiate()
    assert not conn.receive_data(F.settings_frame(settings or {}))
    sent = frames_of(conn.data_to_send())
    assert sent[0][0] == F.SETTINGS and sent[-1] == (F.SETTINGS, F.ACK, 0, b"")
    assert rec.kinds() == ["handshake"]
    rec.events.clear()
    return conn, rec, clock


def request(enc: hpack.Encoder, sid: int, path: str = "/t.S/Unary",
            body: bytes | None = b"hi", extra: list[tuple[str, str]] | None = None) -> bytes:
    block = bytes(enc.encode([(":method", "POST"), (":scheme", "http"), (":path", path),
                              (":authority", "t"), ("content-type", "application/grpc"),
                              *(extra or [])]))
    if body is None:
        return F.frame(F.HEADERS, F.END_HEADERS | F.END_STREAM, sid, block)
    msg = b"\0" + len(body).to_bytes(4, "big") + body
    return (F.frame(F.HEADERS, F.END_HEADERS, sid, block)
            + F.frame(F.DATA, F.END_STREAM, sid, msg))


def test_transition_table_follows_rfc9113() -> None:
    assert next_state(IDLE, Input.RECV_HEADERS) is OPEN
    assert next_state(OPEN, Input.RECV_END_STREAM) is HALF_CLOSED_REMOTE
    assert next_state(OPEN, Input.SEND_END_STREAM) is HALF_CLOSED_LOCAL
    assert next_state(HALF_CLOSED_REMOTE, Input.SEND_END_STREAM) is CLOSED
    assert next_state(HALF_CLOSED_LOCAL, Input.RECV_END_STREAM) is CLOSED
    for state in (IDLE, OPEN, HALF_CLOSED_REMOTE, HALF_CLOSED_LOCAL):
        assert next_state(state, Input.RECV_RST) is CLOSED
    # what a state does not allow: frames after END_STREAM, anything on a closed stream
    for state, event in [(HALF_CLOSED_REMOTE, Input.RECV_DATA),
                         (HALF_CLOSED_REMOTE, Input.RECV_HEADERS),
                         (HALF_CLOSED_LOCAL, Input.SEND_DATA),
                         (CLOSED, Input.RECV_DATA), (CLOSED, Input.SEND_HEADERS),
                         (IDLE, Input.RECV_DATA)]:
        with pytest.raises(StreamStateError):
            next_state(state, event)
    assert all(isinstance(v, State) for v in TRANSITIONS.values())


def test_unary_call_events_and_one_write_answer() -> None:
    conn, rec, _ = setup()
    enc = hpack.Encoder()
    assert not conn.receive_data(request(enc, 1, extra=[("grpc-timeout", "2S")]))
    assert rec.events == [("started", 1, "/t.S/Unary", 2.0), ("request", 1, b"hi")]
    stream = conn.streams[1]
    assert stream.state is HALF_CLOSED_REMOTE
    assert conn.send_unary(stream, b"answer")
    out = frames_of(conn.data_to_send())
    assert [(t, f) for t, f, _, _ in out] == [
        (F.HEADERS, F.END_HEADERS), (F.DATA, 0), (F.HEADERS, F.END_HEADERS | F.END_STREAM)]
    assert out[1][3] == b"\0\0\0\0\x06answer"
    assert stream.state is CLOSED and not conn.streams
    assert rec.events[-1] == ("closed", 1, False)


def test_answer_before_the_request_ends_resets_with_no_error() -> None:
    conn, _rec, _ = setup()
    enc = hpack.Encoder()
    block = request(enc, 1, path="/t.S/Stream", body=None)
    # HEADERS without END_STREAM: a streaming call stays open
    conn.receive_data(F.frame(F.HEADERS, F.END_HEADERS, 1, frames_of(block)[0][3]))
    stream = conn.streams[1]
    assert stream.state is OPEN and stream.messages is not None
    conn.trailers_only(stream, trailers_only_block(grpc.StatusCode.OK, ""))
    out = frames_of(conn.data_to_send())
    assert [f[0] for f in out] == [F.HEADERS, F.RST_STREAM]
    assert out[1][3] == F.NO_ERROR.to_bytes(4, "big")
    assert stream.state is CLOSED
    # the client's DATA still in flight is ignored (a stream we reset), not an error
    conn.receive_data(F.frame(F.DATA, 0, 1, b"\0\0\0\0\0"))
    assert conn.data_to_send() == b"" and not conn.closed


def test_unknown_method_is_answered_without_a_stream() -> None:
    conn, rec, _ = setup()
    conn.receive_data(request(hpack.Encoder(), 1, path="/t.S/Nope", body=None))
    out = frames_of(conn.data_to_send())
    assert [f[:2] for f in out] == [(F.HEADERS, F.END_HEADERS | F.END_STREAM)]
    assert rec.events == [] and not conn.streams and conn.stream_memory == 0


def test_streaming_messages_and_end() -> None:
    conn, rec, _ = setup()
    enc = hpack.Encoder()
    block = frames_of(request(enc, 1, path="/t.S/Stream", body=None))[0][3]
    msgs = b"".join(b"\0" + len(m).to_bytes(4, "big") + m for m in (b"a", b"bb"))
    conn.receive_data(F.frame(F.HEADERS, F.END_HEADERS, 1, block)
                      + F.frame(F.DATA, 0, 1, msgs[:4]) + F.frame(F.DATA, 0, 1, msgs[4:])
                      + F.frame(F.DATA, F.END_STREAM, 1, b""))
    stream = conn.streams[1]
    assert list(stream.messages or ()) == [b"a", b"bb"]
    assert stream.state is HALF_CLOSED_REMOTE
    assert conn.held == len(msgs)
    conn.consumed(stream, len(msgs))
    assert conn.held == 0
    assert rec.kinds() == ["started", "messages", "messages"]


def test_data_after_end_stream_is_a_stream_error() -> None:
    conn, rec, _ = setup()
    enc = hpack.Encoder()
    conn.receive_data(request(enc, 1))
    conn.data_to_send()
    conn.receive_data(F.frame(F.DATA, 0, 1, b"x"))
    out = frames_of(conn.data_to_send())
    assert out == [(F.RST_STREAM, 0, 1, F.STREAM_CLOSED.to_bytes(4, "big"))]
    assert rec.events[-1] == ("closed", 1, True) and not conn.streams


def test_client_reset_cancels_the_call() -> None:
    conn, rec, _ = setup()
    block = frames_of(request(hpack.Encoder(), 1, path="/t.S/Stream", body=None))[0][3]
    conn.receive_data(F.frame(F.HEADERS, F.END_HEADERS, 1, block))
    conn.receive_data(F.rst_stream(1, F.CANCEL))
    assert rec.events[-1] == ("closed", 1, True)
    assert not conn.streams and conn.stream_memory == 0


def test_unary_body_beyond_its_message_fails_the_call() -> None:
    conn, rec, _ = setup()
    block = frames_of(request(hpack.Encoder(), 1, body=None))[0][3]
    conn.receive_data(F.frame(F.HEADERS, F.END_HEADERS, 1, block)
                      + F.frame(F.DATA, 0, 1, b"\0\0\0\0\x01xEXTRA"))
    assert rec.events[1][:3] == ("failed", 1, grpc.StatusCode.INTERNAL)
    assert conn.held == 0 and not conn.streams


@pytest.mark.parametrize(("body", "expect"), [
    (b"\0\0\0\0\x02hi", ("request", 1, b"hi")),  # the one-frame fast path
    (b"\0\0\0\0\x01hi", ("failed", 1, grpc.StatusCode.INTERNAL,
                          "grpc: expected exactly one request message")),
    (b"\0\0\0\0\x03hi", ("failed", 1, grpc.StatusCode.INTERNAL,
                          "grpc: expected exactly one request message")),
    (b"\1\0\0\0\x02hi", ("failed", 1, grpc.StatusCode.INTERNAL,
                          "grpc: compressed flag set with identity or empty encoding")),
    (b"\0\0\0\0\x20" + b"x" * 32, ("failed", 1, grpc.StatusCode.RESOURCE_EXHAUSTED,
                                    "grpc: received message larger than max (32 vs. 16)")),
    (b"\0\0\0", ("failed", 1, grpc.StatusCode.INTERNAL,
                 "grpc: expected exactly one request message")),
    (b"", ("failed", 1, grpc.StatusCode.INTERNAL, "grpc: no request message")),
])
def test_unary_body_in_one_frame(body: bytes, expect: tuple[Any, ...]) -> None:
    """A unary request whose body is one DATA frame with END_STREAM: taken without
    buffering when it is one well-formed message, else answered as the general path
    answers it (the same words as grpc-go)."""
    conn, rec, _ = setup(max_receive_message=16)
    block = frames_of(request(hpack.Encoder(), 1, body=None))[0][3]
    conn.receive_data(F.frame(F.HEADERS, F.END_HEADERS, 1, block)
                      + F.frame(F.DATA, F.END_STREAM, 1, body))
    assert rec.events[1] == expect
    assert conn.held == 0
    if expect[0] == "request":
        assert conn.streams[1].state is HALF_CLOSED_REMOTE and conn.streams[1].rbuf == b""


def test_unary_bodies_give_the_connection_window_back() -> None:
    """Many one-frame unary requests (the fast path) still return the connection
    window: the client is never stalled, and what is held stays zero."""
    conn, rec, _ = setup(connection_window=1 << 16, initial_window=1 << 16)
    enc = hpack.Encoder()
    body = b"v" * 1000
    given = 0
    for i in range(200):  # 200 kB through a 64 KiB connection window
        sid = 2 * i + 1
        conn.receive_data(request(enc, sid, body=body))
        assert rec.events[-1] == ("request", sid, body)
        conn.send_unary(conn.streams[sid], b"ok")
        for ftype, _, stream_id, payload in frames_of(conn.data_to_send()):
            if ftype == F.WINDOW_UPDATE and stream_id == 0:
                given += F.u32(payload)
    assert given >= 200 * 1005 - (1 << 16) and conn.held == 0 and not conn.closed


def test_malformed_grpc_timeout() -> None:
    conn, rec, _ = setup()
    conn.receive_data(request(hpack.Encoder(), 1, extra=[("grpc-timeout", "\u00b2S")]))
    out = frames_of(conn.data_to_send())
    assert out[0][0] == F.HEADERS and out[0][1] & F.END_STREAM
    assert b"malformed grpc-timeout" in out[0][3]
    assert "started" not in rec.kinds() and not conn.closed


def test_flow_control_blocks_and_wakes() -> None:
    conn, rec, _ = setup({F.SETTINGS_INITIAL_WINDOW_SIZE: 0})
    block = frames_of(request(hpack.Encoder(), 1, path="/t.S/Stream", body=None))[0][3]
    conn.receive_data(F.frame(F.HEADERS, F.END_HEADERS, 1, block))
    stream = conn.streams[1]
    conn.send_message(stream, b"x" * 10)
    assert [f[0] for f in frames_of(conn.data_to_send())] == [F.HEADERS]  # no window
    assert 1 in conn.window_blocked
    conn.receive_data(F.window_update(1, 8))
    out = frames_of(conn.data_to_send())
    assert [(f[0], len(f[3])) for f in out] == [(F.DATA, 8)]
    conn.receive_data(F.window_update(1, 100))
    assert [(f[0], len(f[3])) for f in frames_of(conn.data_to_send())] == [(F.DATA, 7)]
    assert rec.events[-1] == ("writable", 1)


def test_settings_growing_the_window_wakes_streams_in_batches() -> None:
    conn, rec, _ = setup({F.SETTINGS_INITIAL_WINDOW_SIZE: 0})
    enc = hpack.Encoder()
    for i in range(3):
        conn.receive_data(request(enc, 1 + 2 * i))
        conn.send_message(conn.streams[1 + 2 * i], b"x")
    conn.data_to_send()
    rec.events.clear()
    conn.receive_data(F.settings_frame({F.SETTINGS_INITIAL_WINDOW_SIZE: 100}))
    # the SETTINGS frame itself walks no streams: it asks for a pump
    assert rec.kinds() == ["pump"]
    assert [f[0] for f in frames_of(conn.data_to_send())] == [F.SETTINGS]
    conn.pump_some()
    assert sum(f[0] == F.DATA for f in frames_of(conn.data_to_send())) == 3


def test_frames_per_call_budget() -> None:
    conn, _, _clock = setup()
    pings = F.settings_frame({}) * (FRAMES_PER_CALL + 10)
    assert conn.receive_data(pings)  # frames left over
    assert len(frames_of(conn.data_to_send())) == FRAMES_PER_CALL
    assert not conn.receive_data(b"")
    assert len(frames_of(conn.data_to_send())) == 10


def test_ping_strikes_end_the_connection() -> None:
    conn, rec, clock = setup(keepalive_min_time=5.0)
    for _ in range(MAX_PING_STRIKES + 1):
        conn.receive_data(F.frame(F.PING, 0, 0, b"12345678"))
        clock.now += 1.0
    assert not conn.closed
    conn.receive_data(F.frame(F.PING, 0, 0, b"12345678"))
    out = frames_of(conn.data_to_send())
    assert out[-1][0] == F.GOAWAY and out[-1][3][8:] == b"too_many_pings"
    assert conn.closed and rec.kinds()[-1] == "ended"
    conn.receive_data(F.frame(F.PING, 0, 0, b"12345678"))  # nothing more is read
    assert conn.data_to_send() == b""


def test_reset_budget_refills_with_the_clock() -> None:
    conn, _, clock = setup(reset_burst=3, reset_rate=1.0)
    enc = hpack.Encoder()
    block = frames_of(request(enc, 1, path="/t.S/Stream", body=None))[0][3]
    sid = 1
    for _ in range(3):
        conn.receive_data(F.frame(F.HEADERS, F.END_HEADERS, sid, block) + F.rst_stream(sid, 8))
        sid += 2
    assert not conn.closed
    clock.now += 1.0  # one token back
    conn.receive_data(F.frame(F.HEADERS, F.END_HEADERS, sid, block) + F.rst_stream(sid, 8))
    assert not conn.closed
    sid += 2
    conn.receive_data(F.frame(F.HEADERS, F.END_HEADERS, sid, block) + F.rst_stream(sid, 8))
    assert conn.closed
    assert frames_of(conn.data_to_send())[-1][3][8:] == b"too_many_resets"


def test_graceful_goaway_waits_for_open_streams() -> None:
    conn, rec, _ = setup()
    conn.receive_data(request(hpack.Encoder(), 1))
    conn.goaway()
    assert rec.kinds()[-1] != "ended"
    conn.receive_data(request(hpack.Encoder(), 3))  # after GOAWAY: refused
    out = frames_of(conn.data_to_send())
    assert out[-1] == (F.RST_STREAM, 0, 3, F.REFUSED_STREAM.to_bytes(4, "big"))
    conn.send_unary(conn.streams[1], b"ok")
    assert rec.kinds()[-2:] == ["closed", "ended"]


def test_connection_errors_cancel_calls() -> None:
    conn, rec, _ = setup()
    block = frames_of(request(hpack.Encoder(), 1, path="/t.S/Stream", body=None))[0][3]
    conn.receive_data(F.frame(F.HEADERS, F.END_HEADERS, 1, block))
    conn.receive_data(F.frame(F.HEADERS, F.END_HEADERS, 2, block))  # even id
    out = frames_of(conn.data_to_send())
    assert out[-1][0] == F.GOAWAY and out[-1][3][4:8] == F.PROTOCOL_ERROR.to_bytes(4, "big")
    assert ("closed", 1, True) in rec.events and rec.kinds()[-1] == "ended"


def test_header_bytes_count_against_the_frame_budget() -> None:
    """HPACK decoding costs per byte: 12 KiB header blocks use up a call's budget in
    far fewer frames than small ones."""
    conn, _, _ = setup()
    enc = hpack.Encoder()
    frames = b"".join(request(enc, 1 + 2 * i, body=None,
                              extra=[("x-meta", f"{i}" + "y" * 12000)])
                      for i in range(FRAMES_PER_CALL // 2))
    assert conn.receive_data(frames)  # left over although fewer frames than the budget
    while conn.receive_data(b""):
        pass
    assert conn.last_sid == 1 + 2 * (FRAMES_PER_CALL // 2 - 1)
