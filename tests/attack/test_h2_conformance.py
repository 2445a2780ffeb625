"""Malformed or abusive requests that must get RFC 9113's (and grpc-go's) answer from a
real member, which then keeps serving: header validation (8.2-8.3), stream ids and
priorities (5.1.1, 5.3.1), CONTINUATION floods, header-list bombs, grpc-timeout."""

from __future__ import annotations

from typing import Any

from petcd.api.h2 import frames as F
from petcd.api.h2.hpack_codec import encode_integer, encode_literal
from petcd.testing import MemberProcess

from .kit import RANGE, Raw, member_log_has, range_request

BLOCK_BASE = [(":method", "POST"), (":scheme", "http"), (":path", RANGE),
              (":authority", "attack"), ("content-type", "application/grpc")]


def literal_block(fields: list[tuple[str, str]]) -> bytes:
    """A header block of literals without indexing, exactly as given (no lowercasing)."""
    return b"".join(encode_literal(k.encode("latin-1"), v.encode("latin-1"))
                    for k, v in fields)


def call(c: Raw, sid: int, block: bytes) -> Any:
    c.send(c.headers_frame(sid, block), F.frame(F.DATA, F.END_STREAM, sid, range_request()))
    return c.outcome(sid)


def still_serves(c: Raw, sid: int) -> None:
    assert call(c, sid, literal_block(BLOCK_BASE)) == ("0", "")


def test_non_ascii_digit_in_grpc_timeout(petcd: MemberProcess) -> None:
    """U+00B2 passes str.isdigit() but not int(): a malformed timeout (INTERNAL, as
    grpc-go answers), never a dropped connection or a logged traceback."""
    c = Raw(petcd.client_port).reading()
    for i in range(20):
        sid = 1 + 2 * i
        got = call(c, sid, literal_block([*BLOCK_BASE, ("grpc-timeout", "1\u00b2S")]))
        assert got == ("13", "malformed grpc-timeout '1\u00b2S'"), got
    still_serves(c, 41)
    c.close()
    assert not member_log_has(petcd, "Traceback")


def test_header_list_bomb_in_a_small_block(petcd: MemberProcess) -> None:
    """A 4 KB table entry, then a block of 30 one-byte references to it: 120 KB of
    header list from 30 bytes. Over SETTINGS_MAX_HEADER_LIST_SIZE: refused."""
    c = Raw(petcd.client_port).reading()
    big = b"\x40" + encode_integer(5, 7) + b"x-big" + encode_integer(4000, 7) + b"v" * 4000
    assert call(c, 1, literal_block(BLOCK_BASE) + big) == ("0", "")
    bomb = literal_block(BLOCK_BASE) + bytes([0x80 | 62]) * 30  # index 62: newest entry
    assert len(bomb) < 256 + 30
    got = call(c, 3, bomb)
    assert got == ("8", "header list size exceeds the limit"), got
    still_serves(c, 5)
    c.close()


def test_empty_continuation_flood(petcd: MemberProcess) -> None:
    c = Raw(petcd.client_port).reading()
    block = literal_block(BLOCK_BASE)
    c.send(F.frame(F.HEADERS, 0, 1, block), *[F.frame(F.CONTINUATION, 0, 1)] * 1000)
    assert c.wait_closed()
    assert c.goaway is not None and c.goaway[1] == F.ENHANCE_YOUR_CALM, c.goaway
    c.close()


def test_malformed_requests_are_stream_errors(petcd: MemberProcess) -> None:
    """RFC 9113 8.2-8.3: each answered with RST_STREAM PROTOCOL_ERROR; the connection
    goes on."""
    c = Raw(petcd.client_port).reading()
    cases = [
        [*BLOCK_BASE, ("X-Upper", "1")],  # uppercase name
        [*BLOCK_BASE[:2], ("content-type", "application/grpc"), (":path", RANGE),
         (":authority", "a")],  # pseudo-header after a regular one
        [*BLOCK_BASE, ("connection", "keep-alive")],
        [*BLOCK_BASE, ("te", "gzip")],
        [*BLOCK_BASE, ("transfer-encoding", "chunked")],
        [*BLOCK_BASE, (":status", "200")],  # a response pseudo-header
        [*BLOCK_BASE, (":path", "/x")],  # a repeated pseudo-header
        [("content-type", "application/grpc"), (":method", "POST")],  # and no :path
        [*BLOCK_BASE, ("x-bad", "a\nb")],  # LF in a value
        [*BLOCK_BASE, ("x-bad", " padded")],  # leading whitespace
        [*BLOCK_BASE, ("x bad", "1")],  # a space in a name
    ]
    for i, fields in enumerate(cases):
        sid = 1 + 2 * i
        assert call(c, sid, literal_block(fields)) == F.PROTOCOL_ERROR, fields
    still_serves(c, 1 + 2 * len(cases))
    c.close()


def test_stream_depending_on_itself(petcd: MemberProcess) -> None:
    """RFC 9113 5.3.1: a stream error PROTOCOL_ERROR, in PRIORITY and in HEADERS."""
    c = Raw(petcd.client_port).reading()
    c.send(F.frame(F.PRIORITY, 0, 3, (3).to_bytes(4, "big") + b"\x10"))
    assert c.outcome(3) == F.PROTOCOL_ERROR
    prio = (5).to_bytes(4, "big") + b"\x10"
    c.send(F.frame(F.HEADERS, F.END_HEADERS | F.PRIORITY_FLAG, 5,
                   prio + literal_block(BLOCK_BASE)),
           F.frame(F.DATA, F.END_STREAM, 5, range_request()))
    assert c.outcome(5) == F.PROTOCOL_ERROR
    still_serves(c, 7)
    c.close()


def test_decreasing_stream_id(petcd: MemberProcess) -> None:
    """RFC 9113 5.1.1: a new stream id lower than one already used: PROTOCOL_ERROR."""
    c = Raw(petcd.client_port).reading()
    still_serves(c, 7)
    c.send(c.headers_frame(3, literal_block(BLOCK_BASE), end_stream=True))
    assert c.wait_closed()
    assert c.goaway is not None and c.goaway[:2] == (7, F.PROTOCOL_ERROR), c.goaway
    c.close()


def test_max_concurrent_streams(petcd_factory: Any) -> None:
    """--max-concurrent-streams is announced and enforced (REFUSED_STREAM beyond)."""
    m = petcd_factory(args=["--max-concurrent-streams", "10"])
    c = Raw(m.client_port).reading()
    block = literal_block(BLOCK_BASE)
    c.send(*[c.headers_frame(1 + 2 * i, block) for i in range(15)])  # never finished
    refused = [c.outcome(1 + 2 * i) for i in range(10, 15)]
    assert refused == [F.REFUSED_STREAM] * 5
    c.close()
