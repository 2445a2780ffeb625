"""The receiving side's framing, fed byte chunks directly: whatever way the bytes are cut
into reads, every payload comes out whole, once, in order (the one-whole-frame read has
its own fast path; it must agree with the general one)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from petcd.transport._inbound import _MESSAGES, INITIAL_BUFFER, InboundConnection
from petcd.transport.wire import FRAME_HEADER


class _Host:
    def __init__(self) -> None:
        self.received_bytes: dict[int, int] = {}
        self.got: list[bytes] = []

    def deliver(self, payloads: list[bytes]) -> None:
        self.got.extend(payloads)


def _receiver() -> tuple[InboundConnection, _Host]:
    host = _Host()
    conn = InboundConnection(host, max_frame=1 << 22, hello_timeout=5.0,  # type: ignore[arg-type]
                             snapshot_buffer=1 << 20, snapshot_timeout=5.0)
    conn._state, conn._need, conn.peer_id = _MESSAGES, FRAME_HEADER.size, 7
    return conn, host


def _feed(conn: InboundConnection, data: bytes) -> None:
    while data:  # as the event loop does: read into what get_buffer offers
        room = conn.get_buffer(-1)
        n = min(len(room), len(data))
        room[:n] = data[:n]
        conn.buffer_updated(n)
        data = data[n:]


@settings(max_examples=200)
@given(st.lists(st.binary(max_size=300), max_size=12), st.data())
def test_any_cut_of_the_stream_yields_every_payload_in_order(
        payloads: list[bytes], data: st.DataObject) -> None:
    conn, host = _receiver()
    stream = b"".join(FRAME_HEADER.pack(len(p)) + p for p in payloads)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    pos = 0
    for cut in [*cuts, len(stream)]:
        _feed(conn, stream[pos:cut])
        pos = max(pos, cut)
    assert host.got == payloads
    assert host.received_bytes.get(7, 0) == len(stream)


def test_one_big_frame_then_small_ones_gives_the_memory_back() -> None:
    conn, host = _receiver()
    big = bytes(range(256)) * (3 * INITIAL_BUFFER // 256)
    _feed(conn, FRAME_HEADER.pack(len(big)) + big)
    _feed(conn, FRAME_HEADER.pack(3) + b"abc")
    assert host.got == [big, b"abc"]
    assert len(conn._buf) == INITIAL_BUFFER
