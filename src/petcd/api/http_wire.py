"""HTTP/1.1 bytes for api/http.py's two paths around h11: the fast path (a plain
keep-alive request that arrived whole in one read, parsed and answered here without
h11's state machine, ~20x less Python work per request) and request bodies handed to
a streaming call as they arrive (RequestBody)."""

from __future__ import annotations

import asyncio
import email.utils
import re
import time
from collections import deque
from collections.abc import Callable, Sequence
from http import HTTPStatus

Headers = list[tuple[bytes, bytes]]

# What h11 accepts, narrowed: a name is a token; a value is visible characters and
# inner blanks (no control bytes, no obs-fold). Anything else goes to h11.
# The whole head is checked by one regex (possessive quantifiers: linear time on any
# input); the request line: HEAD is h11's (its answer has no body), other methods rare.
_HEAD = re.compile(
    rb"(GET|POST|PUT|DELETE) (/[\x21-\x7e]*) HTTP/1\.1\r\n"
    rb"((?:[!#$%&'*+.^_`|~0-9A-Za-z-]++:[ \t]*+"
    rb"(?:[\x21-\x7e\x80-\xff]++(?:[ \t]++[\x21-\x7e\x80-\xff]++)*+)?+[ \t]*+\r\n)*+)")
# Headers whose meaning changes the framing or the connection: h11 handles them.
_H11_ONLY = frozenset((b"transfer-encoding", b"expect", b"upgrade", b"te", b"trailer"))

SimpleRequest = tuple[str, str, Headers, bytes]
# parse_simple's answer for the start of what may be a plain request (clients often
# send the head and the body in two writes).
INCOMPLETE: SimpleRequest = ("", "", [], b"")


def parse_simple(data: bytes, max_head: int, max_body: int) -> SimpleRequest | None:
    """(method, target, headers, body) if `data` is exactly one whole, plain HTTP/1.1
    GET, POST, PUT or DELETE (the v2 keys API's writes) with a Content-Length body (or
    none) that keeps the connection open; INCOMPLETE if it may be the start of one;
    None for anything else (h11 then parses it, with all its checks). Header names are
    lowercased and values stripped, as h11 gives them."""
    end = data.find(b"\r\n\r\n", 0, max_head)
    if end < 0:
        return INCOMPLETE if len(data) < max_head else None
    m = _HEAD.fullmatch(data, 0, end + 2)
    if m is None:
        return None
    headers: Headers = []
    length = -1
    hosts = 0
    for line in m.group(3).split(b"\r\n")[:-1]:
        name, _, value = line.partition(b":")
        value = value.strip(b" \t")
        name = name.lower()
        if name == b"content-length":
            if length >= 0 or not value.isdigit() or len(value) > 12:
                return None
            length = int(value)
        elif name == b"host":
            hosts += 1
        elif name == b"connection":
            if value.lower() != b"keep-alive":
                return None
        elif name in _H11_ONLY:
            return None
        headers.append((name, value))
    start = end + 4
    length = max(length, 0)
    if hosts != 1 or length > max_body or len(data) - start > length:
        return None
    if len(data) - start < length:
        return INCOMPLETE
    return (m.group(1).decode("latin-1"), m.group(2).decode("latin-1"), headers,
            data[start:])


_REASONS: dict[int, bytes] = {}


def response_head(status: int, headers: Headers) -> bytes:
    """The status line and headers, as h11 writes them (the caller ends the head)."""
    reason = _REASONS.get(status)
    if reason is None:
        reason = _REASONS[status] = HTTPStatus(status).phrase.encode()
    parts = [b"HTTP/1.1 %d %s\r\n" % (status, reason)]
    for name, value in headers:
        parts.append(name + b": " + value + b"\r\n")
    return b"".join(parts)


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"


class RequestBody:
    """A request body read as it arrives (a gateway watch or keep-alive stream). The
    connection feeds it; at most `hold` bytes wait unread: past that, `pause` stops
    reading from the socket and `resume` restarts it once the call has caught up."""

    def __init__(self, hold: int, pause: Callable[[], None],
                 resume: Callable[[], None]) -> None:
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._hold = hold
        self._pause = pause
        self._resume = resume
        self._paused = False
        self._ended = False
        self._waiter: asyncio.Future[None] | None = None

    @property
    def paused(self) -> bool:
        return self._paused

    def feed(self, data: bytes) -> None:
        if self._ended or not data:
            return
        self._chunks.append(data)
        self._size += len(data)
        if self._size > self._hold and not self._paused:
            self._paused = True
            self._pause()
        self._wake()

    def end(self) -> None:
        """No more data (the body ended, or the connection did)."""
        self._ended = True
        self._wake()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def read(self) -> bytes:
        """The next piece of the body; b"" at its end."""
        while not self._chunks:
            if self._ended:
                return b""
            if self._waiter is None:
                self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        data = self._chunks.popleft()
        self._size -= len(data)
        if self._paused and self._size <= self._hold // 2:
            self._paused = False
            self._resume()
        return data


_date_cache: tuple[int, bytes] = (0, b"")


def date() -> bytes:
    """The Date header's value, formatted once per second (formatdate is slow)."""
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, email.utils.formatdate(now, usegmt=True).encode())
    return _date_cache[1]


def content_length(headers: Sequence[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
