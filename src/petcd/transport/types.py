"""What the transport's users configure and see: tunables, peer URLs, status, handler
signatures, and the error a failed request raises."""

from __future__ import annotations

import io
import os
import ssl
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
)
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

from .wire import (
    Reply,
    Status,
)

MiB = 1024 * 1024


class SnapshotStream(Protocol):
    """The data of one incoming snapshot, in order: ``await batch()`` gives what arrived
    since the last call (verified so far), ``[]`` once the stream ended whole; or iterate it
    chunk by chunk. Either raises on a broken or corrupted stream."""

    async def batch(self) -> list[bytes]: ...

    def __aiter__(self) -> AsyncIterator[bytes]: ...


SnapshotHandler = Callable[[int, bytes, SnapshotStream], Awaitable[None]]
"""``await on_snapshot(from_id, metadata, chunks)``: consume ``chunks`` (raises on a broken or
corrupted stream). Returning normally tells the sender the snapshot was received."""

SnapshotSource = str | os.PathLike[str] | io.RawIOBase | AsyncIterable[bytes]
"""A file path, a raw stream (e.g. over a pipe: read until EOF, not closed; a producer that
failed raises from readinto() so that no END frame is sent), or chunks."""

RequestHandler = Callable[[int, bytes], Awaitable[bytes]]
"""``await on_request(from_id, payload) -> answer``: serve one REQUEST connection. ``from_id``
may be 0 or an ID that is not a member (a member still joining); raising closes the connection
without an answer (the caller sees RequestFailed)."""


class RequestFailed(ConnectionError):
    """A peer request got no answer: refused handshake, connection failure or timeout."""

    def __init__(self, message: str, status: Status | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class TransportConfig:
    """Tunables. The defaults suit a LAN; tests shrink the timeouts."""

    max_queue_messages: int = 4096  # per peer; etcd's stream buffer holds 4096 messages too
    max_queue_bytes: int = 32 * MiB  # per peer; a single larger message still fits an empty queue
    backoff_min: float = 0.1  # seconds before redialling a connection that was working
    backoff_max: float = 3.0  # cap of the doubling delay between failed dials (and rejections)
    dial_timeout: float = 2.0  # TCP (+TLS) connect and handshake
    write_timeout: float = 5.0  # a peer that accepts no bytes for this long is cut off
    hello_timeout: float = 5.0  # an accepted connection must say hello within this
    write_buffer_high: int = 1 * MiB  # per connection, on top of the kernel's socket buffer
    max_frame: int = 64 * MiB  # largest message (or snapshot metadata) accepted
    snapshot_chunk: int = 1 * MiB  # size of the DATA frames a file is sent in
    snapshot_buffer: int = 8 * MiB  # received snapshot bytes held before reading pauses
    snapshot_timeout: float = 30.0  # no progress for this long fails a snapshot, either end


@dataclass(frozen=True, slots=True)
class PeerURL:
    url: str
    tls: bool
    host: str
    port: int


def parse_peer_url(url: str) -> PeerURL:
    """Parse ``http://host:port`` or ``https://host:port`` (IPv6 hosts in brackets)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"peer URL {url!r}: scheme must be http or https")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"peer URL {url!r}: {exc}") from None
    if port is None or parts.hostname is None:
        raise ValueError(f"peer URL {url!r} must have a host and a port")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"peer URL {url!r} must not have a path, query or fragment")
    return PeerURL(url, parts.scheme == "https", parts.hostname, port)


@dataclass(frozen=True, slots=True)
class PeerStatus:
    id: int
    urls: tuple[str, ...]
    active: bool  # an outgoing message connection is up (handshake accepted)
    url: str | None  # the URL that connection went to
    since: float | None  # time.time() when it became active, None while inactive
    queued: int  # messages waiting to be written
    queued_bytes: int
    sent: int  # messages handed to the socket (lifetime)
    dropped: int  # messages dropped: queue full, or lost with a failed connection
    last_error: str | None  # why the last dial or connection failed, None once active
    sent_bytes: int = 0  # message frames handed to the socket (lifetime)


class Hasher(Protocol):
    def update(self, data: bytes | bytearray | memoryview, /) -> None: ...


class Rejected(Exception):
    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.reason or Status(reply.status).text)
        self.reply = reply


def describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and not isinstance(exc, ssl.SSLError) and exc.errno:
        return os.strerror(exc.errno)  # the same words whichever event loop raised it
    return str(exc) or type(exc).__name__
