"""api/http_wire.parse_simple: which requests the HTTP/1.1 fast path takes (the rest go
to h11, with all its checks)."""

from __future__ import annotations

import pytest

from petcd.api.http_wire import INCOMPLETE, parse_simple


def _req(method: str, body: bytes = b"", extra: str = "") -> bytes:
    return (f"{method} /v2/keys/a?x=1 HTTP/1.1\r\nHost: h\r\n{extra}"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE"])
def test_plain_requests_take_the_fast_path(method: str) -> None:
    parsed = parse_simple(_req(method, b"value=1"), 16384, 1024)
    assert parsed == (method, "/v2/keys/a?x=1",
                      [(b"host", b"h"), (b"content-length", b"7")], b"value=1")


@pytest.mark.parametrize("method", ["HEAD", "OPTIONS", "PATCH", "put"])
def test_other_methods_go_to_h11(method: str) -> None:
    assert parse_simple(_req(method), 16384, 1024) is None


def test_a_body_still_arriving_is_incomplete_and_framing_headers_go_to_h11() -> None:
    assert parse_simple(_req("PUT", b"value=1")[:-3], 16384, 1024) is INCOMPLETE
    assert parse_simple(_req("PUT", b"", "Expect: 100-continue\r\n"), 16384, 1024) is None
    assert parse_simple(_req("DELETE", b"", "Connection: close\r\n"), 16384, 1024) is None
    assert parse_simple(_req("PUT", b"x" * 2000), 16384, 1024) is None  # over max_body


@pytest.mark.parametrize(("line", "value"), [
    (b"X-A: b", b"b"), (b"X-A:b", b"b"), (b"X-A: \t b c \t ", b"b c"), (b"X-A:", b""),
    (b"X-A:   ", b""), (b"X-A: a:b/c\x80\xff", b"a:b/c\x80\xff")])
def test_header_values_are_stripped_as_h11_does(line: bytes, value: bytes) -> None:
    parsed = parse_simple(b"GET / HTTP/1.1\r\nHost: h\r\n" + line + b"\r\n\r\n", 16384, 0)
    assert parsed is not None and parsed is not INCOMPLETE
    assert parsed[2] == [(b"host", b"h"), (b"x-a", value)]


@pytest.mark.parametrize("line", [
    b"X-A: b\x00c", b"X-A: b\x7f", b"X A: b", b": b", b"X-A b", b" folded",
    b"X-A: b\rc", b"X-A: b" + b" " * 5000 + b"\x01"])
def test_odd_headers_go_to_h11(line: bytes) -> None:
    assert parse_simple(b"GET / HTTP/1.1\r\nHost: h\r\n" + line + b"\r\n\r\n",
                        16384, 0) is None


def test_no_headers_and_two_hosts_go_to_h11() -> None:
    assert parse_simple(b"GET / HTTP/1.1\r\n\r\n", 16384, 0) is None  # (no Host)
    assert parse_simple(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 16384, 0) is None
    assert parse_simple(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n", 16384, 0) == (
        "GET", "/", [(b"host", b"a")], b"")
