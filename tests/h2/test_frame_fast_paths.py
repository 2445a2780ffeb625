"""The receive side's fast paths (api/h2: a WINDOW_UPDATE handled inside the frame
loop, a unary request's one-frame body handed over without buffering) against the
general paths they skip: the same windows, events and errors, and every frame that is
not the common shape still taken by the general path."""

from __future__ import annotations

import hpack
import pytest
from test_machine import frames_of, request, setup

from petcd.api.h2 import frames as F
from petcd.api.h2.machine import H2Connection
from petcd.api.h2.streams import HALF_CLOSED_REMOTE


def _goaway_code(out: bytes) -> int | None:
    for ftype, _, _, payload in frames_of(out):
        if ftype == F.GOAWAY:
            return F.u32(payload[4:8])
    return None


def _resets(out: bytes) -> set[tuple[int, int]]:
    return {(sid, F.u32(p)) for ftype, _, sid, p in frames_of(out) if ftype == F.RST_STREAM}


def _open_stream(sid: int = 1) -> H2Connection:
    conn, _, _ = setup()
    block = frames_of(request(hpack.Encoder(), sid))[0][3]
    conn.receive_data(F.frame(F.HEADERS, F.END_HEADERS, sid, block))
    return conn


def test_window_updates_as_grpc_python_sends_them_move_the_windows() -> None:
    """A connection and a stream WINDOW_UPDATE beside each request (grpc-python's
    frames of a unary call): increments only, no event, nothing written."""
    conn, rec, _ = setup()
    enc = hpack.Encoder()
    window = conn.send_window
    hdrs, data = frames_of(request(enc, 1))
    conn.receive_data(F.window_update(0, 35) + F.frame(F.HEADERS, hdrs[1], 1, hdrs[3])
                      + F.window_update(1, 5) + F.frame(F.DATA, data[1], 1, data[3]))
    assert conn.send_window == window + 35
    assert rec.events[-1] == ("request", 1, b"hi")
    stream = conn.streams[1]
    assert stream.send_credit == 5 and stream.state is HALF_CLOSED_REMOTE
    assert conn.data_to_send() == b"" and not conn.closed
    # (the reserved bit of the increment is ignored, as RFC 9113 6.9 says)
    conn.receive_data(F.frame(F.WINDOW_UPDATE, 0, 0, (0x80000000 | 7).to_bytes(4, "big")))
    assert conn.send_window == window + 42


@pytest.mark.parametrize("frame, code", [
    (F.window_update(0, 0), F.PROTOCOL_ERROR),
    (F.window_update(0, 2**31 - 1), F.FLOW_CONTROL_ERROR),
    (F.frame(F.WINDOW_UPDATE, 0, 0, b"\0\0\0\1\0"), F.FRAME_SIZE_ERROR),
    (F.window_update(9, 1), F.PROTOCOL_ERROR),  # an idle stream
])
def test_window_update_errors_on_the_connection(frame: bytes, code: int) -> None:
    conn, _, _ = setup()
    conn.receive_data(frame)
    assert conn.closed and _goaway_code(conn.data_to_send()) == code


def test_window_update_errors_on_a_stream_reset_only_it() -> None:
    conn = _open_stream()
    conn.receive_data(F.window_update(1, 0))
    assert _resets(conn.data_to_send()) == {(1, F.PROTOCOL_ERROR)}
    conn = _open_stream()
    conn.receive_data(F.window_update(1, 2**31 - 1))
    assert _resets(conn.data_to_send()) == {(1, F.FLOW_CONTROL_ERROR)}
    assert not conn.closed


def test_window_update_of_a_closed_stream_is_ignored_and_a_blocked_one_is_pumped() -> None:
    conn, _, _ = setup({F.SETTINGS_INITIAL_WINDOW_SIZE: 0})
    enc = hpack.Encoder()
    conn.receive_data(request(enc, 1, path="/t.S/Stream", body=None))
    stream = conn.streams[1]
    conn.send_message(stream, b"x" * 10)
    conn.data_to_send()
    conn.receive_data(F.window_update(1, 100))  # blocked: the general path pumps it
    assert [(f[0], len(f[3])) for f in frames_of(conn.data_to_send())] == [(F.DATA, 15)]
    conn, _, _ = setup()
    conn.receive_data(request(hpack.Encoder(), 3))
    assert conn.send_unary(conn.streams[3], b"ok")
    conn.data_to_send()
    conn.receive_data(F.window_update(3, 100))  # answered and forgotten: ignored
    assert conn.data_to_send() == b"" and not conn.closed


def test_window_update_before_settings_or_inside_a_header_block_is_refused() -> None:
    conn, _, _ = setup()
    block = frames_of(request(hpack.Encoder(), 1))[0][3]
    conn.receive_data(F.frame(F.HEADERS, 0, 1, block[:2]) + F.window_update(0, 10))
    assert conn.closed and _goaway_code(conn.data_to_send()) == F.PROTOCOL_ERROR


@pytest.mark.parametrize("shape", ["padded", "unknown flag", "two frames", "over the window",
                                   "compressed", "two messages"])
def test_unary_bodies_off_the_fast_path_get_the_general_answer(shape: str) -> None:
    conn, rec, _ = setup()
    enc = hpack.Encoder()
    hdrs, data = frames_of(request(enc, 1, body=b"hello"))
    msg = data[3]
    if shape == "padded":
        body = F.frame(F.DATA, F.END_STREAM | F.PADDED, 1, b"\x03" + msg + b"\0\0\0")
    elif shape == "unknown flag":  # (ignored, RFC 9113 4.1)
        body = F.frame(F.DATA, F.END_STREAM | 0x40, 1, msg)
    elif shape == "two frames":
        body = F.frame(F.DATA, 0, 1, msg[:3]) + F.frame(F.DATA, F.END_STREAM, 1, msg[3:])
    elif shape == "over the window":
        conn, rec, _ = setup(initial_window=8)
        hdrs, data = frames_of(request(enc := hpack.Encoder(), 1, body=b"hello"))
        body = F.frame(F.DATA, F.END_STREAM, 1, msg)
    elif shape == "compressed":
        body = F.frame(F.DATA, F.END_STREAM, 1, b"\1" + msg[1:])
    else:
        body = F.frame(F.DATA, F.END_STREAM, 1, msg + msg)
    conn.receive_data(F.frame(F.HEADERS, hdrs[1], 1, hdrs[3]) + body)
    if shape in ("padded", "unknown flag", "two frames"):
        assert rec.events[-1] == ("request", 1, b"hello")
    elif shape == "over the window":
        assert _resets(conn.data_to_send()) == {(1, F.FLOW_CONTROL_ERROR)}
    elif shape == "compressed":
        assert any(e[0] == "failed" and "compressed flag" in e[3] for e in rec.events)
    else:
        assert any(e[0] == "failed" and "exactly one" in e[3] for e in rec.events)
    assert conn.held == 0 and not conn.closed


def test_the_fast_path_keeps_the_stream_window() -> None:
    conn, _, _ = setup()
    conn.receive_data(request(hpack.Encoder(), 1, body=b"abc"))
    stream = conn.streams[1]
    assert stream.recv_window == (1 << 20) - 8 and stream.state is HALF_CLOSED_REMOTE


@pytest.mark.parametrize("size", [0, 1, 255, 256, 4000, 16384 - 5])
def test_the_one_write_unary_answer_is_byte_identical_to_the_general_path(size: int) -> None:
    """send_unary (packed by precompiled structs) writes exactly what the general path
    writes: response headers, the message in one DATA frame, the OK trailers."""
    from petcd.api.h2.status import OK_TRAILERS

    payload = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    sid = 2**31 - 1  # (every byte of the stream id in use)
    fast, _, _ = setup()
    general, _, _ = setup()
    for conn in (fast, general):
        conn.last_sid = sid - 2
        conn.receive_data(request(hpack.Encoder(), sid))
    assert fast.send_unary(fast.streams[sid], payload)
    stream = general.streams[sid]
    general.send_message(stream, payload)
    general.end_stream(stream, OK_TRAILERS)
    assert fast.data_to_send() == general.data_to_send()
    assert fast.send_window == general.send_window and not fast.streams and not general.streams
