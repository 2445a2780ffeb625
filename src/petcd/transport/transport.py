"""PeerTransport: see the package docstring (petcd.transport) for the contract."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import logging
import os
import random
import socket
import ssl
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Sequence,
)
from dataclasses import dataclass
from typing import Protocol, cast
from urllib.parse import urlsplit

from petcd.tls import Gate

from ._inbound import InboundConnection, SnapshotChunks
from .wire import (
    FRAME_HEADER,
    MAX_UINT64,
    PROTOCOL_VERSION,
    REPLY,
    SNAP_END,
    SNAP_FRAME_HEADER,
    SNAP_RESULT,
    Hello,
    Kind,
    ProtocolError,
    Reply,
    SnapFrame,
    Status,
    encode_snap_result,
)

log = logging.getLogger("petcd.transport")

SnapshotHandler = Callable[[int, bytes, AsyncIterator[bytes]], Awaitable[None]]
"""``await on_snapshot(from_id, metadata, chunks)``: consume ``chunks`` (raises on a broken or
corrupted stream). Returning normally tells the sender the snapshot was received."""

SnapshotSource = str | os.PathLike[str] | AsyncIterable[bytes]

RequestHandler = Callable[[int, bytes], Awaitable[bytes]]
"""``await on_request(from_id, payload) -> answer``: serve one REQUEST connection. ``from_id``
may be 0 or an ID that is not a member (a member still joining); raising closes the connection
without an answer (the caller sees RequestFailed)."""


class RequestFailed(ConnectionError):
    """A peer request got no answer: refused handshake, connection failure or timeout."""

    def __init__(self, message: str, status: Status | None = None) -> None:
        super().__init__(message)
        self.status = status


_pack_frame_header = FRAME_HEADER.pack
MiB = 1024 * 1024
REJECT_LOG_INTERVAL = 30.0
WRITEV_MIN_AVERAGE = 4096


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


class _Hasher(Protocol):
    def update(self, data: bytes | bytearray | memoryview, /) -> None: ...


class _Rejected(Exception):
    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.reason or Status(reply.status).text)
        self.reply = reply


class _OutboundConnection(asyncio.Protocol):
    """Client side of a MESSAGES connection. Reads only the handshake reply."""

    def __init__(self, peer: _Peer, url: PeerURL) -> None:
        self.peer = peer
        self.url = url
        loop = asyncio.get_running_loop()
        self.reply: asyncio.Future[Reply] = loop.create_future()
        self.closed: asyncio.Future[str] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self._rbuf = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's classes do not subclass it
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        high = self.peer.owner.config.write_buffer_high
        transport.set_write_buffer_limits(high=high, low=high // 4)

    def data_received(self, data: bytes) -> None:
        if self.reply.done():
            return  # receivers never talk after the reply
        self._rbuf += data
        if len(self._rbuf) < REPLY.size:
            return
        status, _, rlen, cluster_id, member_id = REPLY.unpack_from(self._rbuf)
        if len(self._rbuf) < REPLY.size + rlen:
            return
        reason = self._rbuf[REPLY.size : REPLY.size + rlen].decode(errors="replace")
        self.reply.set_result(Reply(status, cluster_id, member_id, reason))

    def connection_lost(self, exc: Exception | None) -> None:
        why = str(exc) if exc else "closed by peer"
        if not self.reply.done():
            self.reply.set_exception(ConnectionError(f"connection lost before reply: {why}"))
        if not self.closed.done():
            self.closed.set_result(why)
        self.peer.connection_gone(self)

    def pause_writing(self) -> None:
        self.peer.pause(self)

    def resume_writing(self) -> None:
        self.peer.resume(self)


class _Peer:
    """Outgoing side towards one member: bounded queue, one connection, redial with backoff."""

    def __init__(self, owner: PeerTransport, peer_id: int, urls: list[PeerURL]) -> None:
        self.owner = owner
        self.config = owner.config
        self.id = peer_id
        self.urls = urls
        self.url_index = 0
        self.queue: list[bytes] = []
        self.queued_bytes = 0
        self.conn: _OutboundConnection | None = None
        self.paused = False
        self.flush_scheduled = False
        self.since: float | None = None
        self.sent = 0
        self.sent_bytes = 0
        self.dropped = 0
        self.last_error: str | None = None
        self.closed = False
        self.task: asyncio.Task[None] | None = None
        self.wake = asyncio.Event()
        self.active = asyncio.Event()
        self._stall_timer: asyncio.TimerHandle | None = None
        self._quiet = False  # failure already logged at WARNING; repeat at DEBUG

    # --- sending (hot path) ------------------------------------------------------------------

    def enqueue(self, payloads: Sequence[bytes]) -> None:
        queue = self.queue
        max_messages = self.config.max_queue_messages
        max_bytes = self.config.max_queue_bytes
        queued_bytes = self.queued_bytes
        dropped = 0
        for payload in payloads:
            size = len(payload)
            if queue and (len(queue) >= max_messages or queued_bytes + size > max_bytes):
                dropped += 1
                continue
            queue.append(payload)
            queued_bytes += size
        self.queued_bytes = queued_bytes
        if dropped:
            self.dropped += dropped
            self.owner._unreachable.add(self.id)
        if self.conn is not None and not self.paused and not self.flush_scheduled and queue:
            self.flush_scheduled = True
            self.owner._loop_or_fail().call_soon(self.flush)

    def flush(self) -> None:
        """Write everything queued in one call (scheduled at most once per loop iteration)."""
        self.flush_scheduled = False
        conn, queue = self.conn, self.queue
        if conn is None or self.paused or not queue or conn.transport is None:
            return
        # Large payloads: hand the pieces over as they are (uvloop writes them with writev,
        # saving a copy). Small ones: one joined buffer costs less per message.
        big = self.queued_bytes > WRITEV_MIN_AVERAGE * len(queue)
        self.sent_bytes += self.queued_bytes + FRAME_HEADER.size * len(queue)
        self.queue = []
        self.queued_bytes = 0
        self.sent += len(queue)
        parts: list[bytes] = []
        append = parts.append
        for payload in queue:
            append(_pack_frame_header(len(payload)))
            append(payload)
        if big:
            conn.transport.writelines(parts)
        else:
            conn.transport.write(b"".join(parts))

    def pause(self, conn: _OutboundConnection) -> None:
        if conn is not self.conn or conn.transport is None:
            return
        self.paused = True
        self._arm_stall_timer(conn, conn.transport.get_write_buffer_size())

    def _arm_stall_timer(self, conn: _OutboundConnection, buffered: int) -> None:
        self._cancel_stall_timer()
        loop = self.owner._loop_or_fail()
        self._stall_timer = loop.call_later(
            self.config.write_timeout, self._check_progress, conn, buffered
        )

    def resume(self, conn: _OutboundConnection) -> None:
        if conn is not self.conn:
            return
        self.paused = False
        self._cancel_stall_timer()
        if self.queue and not self.flush_scheduled:
            self.flush_scheduled = True
            self.owner._loop_or_fail().call_soon(self.flush)

    def _check_progress(self, conn: _OutboundConnection, buffered: int) -> None:
        """While writing is paused nothing is added to the buffer: if it did not shrink during
        write_timeout, the peer is not reading."""
        self._stall_timer = None
        if conn is not self.conn or conn.transport is None or not self.paused:
            return
        now_buffered = conn.transport.get_write_buffer_size()
        if now_buffered < buffered:
            self._arm_stall_timer(conn, now_buffered)  # slow but moving: keep watching
        else:
            log.warning(
                "peer %x accepted no data for %.1fs; closing the connection",
                self.id,
                self.config.write_timeout,
            )
            conn.transport.abort()

    def _cancel_stall_timer(self) -> None:
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None

    def _drop_queue(self) -> None:
        if self.queue:
            self.dropped += len(self.queue)
            self.queue = []
            self.queued_bytes = 0
            self.owner._unreachable.add(self.id)

    # --- connection management ------------------------------------------------------------

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(
            self.run(), name=f"petcd-peer-{self.id:x}"
        )

    def current_url(self) -> PeerURL:
        return self.urls[self.url_index % len(self.urls)]

    async def run(self) -> None:
        failures = 0
        try:
            while not self.closed:
                url = self.current_url()
                try:
                    async with asyncio.timeout(self.config.dial_timeout):
                        conn = await self._dial(url)
                except _Rejected as rej:
                    self._failed(f"{url.url} rejected the connection: {rej}")
                    self.owner._report_rejected(self.id, rej.reply)
                    delay = self.config.backoff_max
                except (OSError, TimeoutError, ProtocolError, ValueError) as exc:
                    failures += 1
                    self.url_index += 1
                    self._failed(f"cannot connect to {url.url}: {_describe(exc)}")
                    delay = min(
                        self.config.backoff_max, self.config.backoff_min * 2 ** (failures - 1)
                    )
                except Exception as exc:  # a bug must not silence this peer for good
                    log.exception("peer %x: unexpected error while dialling", self.id)
                    failures += 1
                    self._failed(f"unexpected error: {_describe(exc)}")
                    delay = self.config.backoff_max
                else:
                    failures = 0
                    self._connected(conn)
                    why = await conn.closed
                    self._disconnected(conn, why)
                    delay = self.config.backoff_min
                if self.closed:
                    break
                self.wake.clear()
                try:
                    async with asyncio.timeout(delay * random.uniform(0.5, 1.0)):
                        await self.wake.wait()
                except TimeoutError:
                    pass
        finally:
            conn_left = self.conn
            if conn_left is not None and conn_left.transport is not None:
                conn_left.transport.abort()

    async def _dial(self, url: PeerURL) -> _OutboundConnection:
        loop = asyncio.get_running_loop()
        ssl_ctx = self.owner._client_ssl_for(url)
        raw, conn = await loop.create_connection(
            lambda: _OutboundConnection(self, url),
            url.host,
            url.port,
            ssl=ssl_ctx,
            server_hostname=url.host if ssl_ctx is not None else None,
        )
        try:
            raw.write(self.owner._hello(self.id, Kind.MESSAGES))
            reply = await conn.reply
        except BaseException:
            raw.abort()
            raise
        if reply.status != Status.OK:
            raw.abort()
            raise _Rejected(reply)
        return conn

    def _failed(self, message: str) -> None:
        self._drop_queue()
        if not self._quiet or message != self.last_error:
            log.warning("peer %x: %s", self.id, message)
            self._quiet = True
        else:
            log.debug("peer %x: %s", self.id, message)
        self.last_error = message

    def _connected(self, conn: _OutboundConnection) -> None:
        self.conn = conn
        self.paused = False
        self.since = time.time()
        self.last_error = None
        self._quiet = False
        self.active.set()
        log.info("peer became active: %x (%s)", self.id, conn.url.url,
                 extra={"fields": {"peer-id": f"{self.id:x}"}})
        self.flush()  # what queued up while connecting goes out before anything new
        self.owner._report_status(self.id, True)

    def connection_gone(self, conn: _OutboundConnection) -> None:
        """Called from connection_lost; the run loop notices via conn.closed."""
        if conn is self.conn:
            self._cancel_stall_timer()

    def _disconnected(self, conn: _OutboundConnection, why: str) -> None:
        if conn is not self.conn:
            return
        self.conn = None
        self.paused = False
        self.since = None
        self.active.clear()
        # whatever sat in the socket buffers is lost: let Raft know
        self.owner._unreachable.add(self.id)
        if not self.closed:
            self.last_error = f"connection to {conn.url.url} lost: {why}"
            # etcd's words and fields
            log.warning("peer became inactive (message send to peer failed): %x (%s)",
                        self.id, self.last_error, extra={"fields": {
                            "peer-id": f"{self.id:x}", "error": self.last_error}})
            self._quiet = True
            self.owner._report_status(self.id, False)
            self.owner._event("disconnected", self.id, 0.0)

    def set_urls(self, urls: list[PeerURL]) -> None:
        self.urls = urls
        self.url_index = 0
        conn = self.conn
        if conn is not None and conn.transport is not None and conn.url not in urls:
            conn.transport.close()
        self.wake.set()

    def close(self) -> None:
        was_active = self.conn is not None
        self.closed = True
        self.queue = []
        self.queued_bytes = 0
        self._cancel_stall_timer()
        conn = self.conn
        self.conn = None
        self.since = None
        self.active.clear()
        if conn is not None and conn.transport is not None:
            conn.transport.abort()
        if self.task is not None:
            self.task.cancel()
        if was_active:
            self.owner._report_status(self.id, False)

    def status(self) -> PeerStatus:
        return PeerStatus(
            id=self.id,
            urls=tuple(u.url for u in self.urls),
            active=self.conn is not None,
            url=None if self.conn is None else self.conn.url.url,
            since=self.since,
            queued=len(self.queue),
            queued_bytes=self.queued_bytes,
            sent=self.sent,
            dropped=self.dropped,
            last_error=self.last_error,
            sent_bytes=self.sent_bytes,
        )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and not isinstance(exc, ssl.SSLError) and exc.errno:
        return os.strerror(exc.errno)  # the same words whichever event loop raised it
    return str(exc) or type(exc).__name__


def _check_id(name: str, value: int) -> None:
    if not 0 < value <= MAX_UINT64:
        raise ValueError(f"{name} must be a non-zero uint64, got {value}")


class PeerTransport:
    """Moves opaque Raft message payloads and snapshots between members of one cluster."""

    def __init__(
        self,
        local_id: int,
        cluster_id: int,
        listen_urls: Sequence[str],
        on_messages: Callable[[list[bytes]], None],
        on_snapshot: SnapshotHandler | None = None,
        *,
        server_ssl: ssl.SSLContext | None = None,
        client_ssl: ssl.SSLContext | None = None,
        server_gate: Gate | None = None,
        config: TransportConfig | None = None,
        on_peer_status: Callable[[int, bool], None] | None = None,
        on_rejected: Callable[[int, Status, str], None] | None = None,
        on_request: RequestHandler | None = None,
    ) -> None:
        _check_id("local_id", local_id)
        _check_id("cluster_id", cluster_id)
        self.local_id = local_id
        self.cluster_id = cluster_id
        # Bytes read from each peer's connections (peer ID -> bytes; 0: before its hello).
        self.received_bytes: dict[int, int] = {}
        # For metrics: (event, peer ID, seconds) with event one of snapshot_send_start,
        # snapshot_sent, snapshot_send_failed, snapshot_receive_start, snapshot_received,
        # snapshot_receive_failed, disconnected. Set by the owner; called on the loop.
        self.on_event: Callable[[str, int, float], None] | None = None
        self.config = config or TransportConfig()
        self._listen = [parse_peer_url(u) for u in listen_urls]
        for url in self._listen:
            if url.tls and server_ssl is None:
                raise ValueError(f"listen URL {url.url} is https but no server TLS context given")
        self._on_messages = on_messages
        self._on_snapshot = on_snapshot
        self._server_ssl = server_ssl
        self._client_ssl = client_ssl
        self._server_gate = server_gate
        self._on_peer_status = on_peer_status
        self._on_rejected = on_rejected
        self._on_request = on_request
        self._peers: dict[int, _Peer] = {}
        self._removed: set[int] = set()
        self._unreachable: set[int] = set()
        self._inbound: set[InboundConnection] = set()
        self._unadmitted: dict[InboundConnection, None] = {}  # no hello yet (oldest first)
        self._inbound_by_peer: dict[int, InboundConnection] = {}
        self._servers: list[tuple[PeerURL, asyncio.Server]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped = False
        self._reject_logged: dict[tuple[int, Status], float] = {}

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on every listen URL and start dialling the known peers."""
        if self._loop is not None:
            raise RuntimeError("PeerTransport already started")
        loop = asyncio.get_running_loop()
        self._loop = loop
        try:
            for url in self._listen:
                factory: Callable[[], asyncio.BaseProtocol] = self._new_inbound
                if url.tls and self._server_gate is not None:
                    factory = self._server_gate.wrap(factory)
                server = await loop.create_server(
                    factory,
                    url.host,
                    url.port,
                    ssl=self._server_ssl if url.tls else None,
                    reuse_address=True,
                    backlog=128,
                )
                self._servers.append((url, server))
        except BaseException:
            for _, server in self._servers:
                server.close()
            raise
        for peer in self._peers.values():
            self._start_peer(peer)
        log.info("peer transport of %x listening on %s", self.local_id, self.bound_urls())

    async def stop(self) -> None:
        """Close listeners and every connection; pending messages are discarded."""
        if self._stopped:
            return
        self._stopped = True
        for _, server in self._servers:
            server.close()
        for peer in self._peers.values():
            peer.close()
        for conn in list(self._inbound):
            conn.abort()
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for _, server in self._servers:
            await server.wait_closed()

    def bound_urls(self) -> list[str]:
        """The listen URLs with the ports actually bound (useful with port 0)."""
        urls = []
        for url, server in self._servers:
            for sock in server.sockets:
                host, port = sock.getsockname()[:2]
                if ":" in host:
                    host = f"[{host}]"
                urls.append(f"{'https' if url.tls else 'http'}://{host}:{port}")
        return urls

    # --- membership --------------------------------------------------------------------------

    def add_peer(self, peer_id: int, urls: Sequence[str]) -> None:
        """Start talking to a member. Adding a known member again does nothing (as in etcd)."""
        _check_id("peer_id", peer_id)
        if peer_id == self.local_id:
            raise ValueError("a member is not its own peer")
        if peer_id in self._removed:
            raise ValueError(f"member {peer_id:x} was removed and cannot be added again")
        if peer_id in self._peers or self._stopped:
            return
        parsed = self._parse_urls(urls)
        peer = _Peer(self, peer_id, parsed)
        self._peers[peer_id] = peer
        if self._loop is not None:
            self._start_peer(peer)

    def update_peer(self, peer_id: int, urls: Sequence[str]) -> None:
        """Change a member's URLs; a connection to a URL no longer listed is redialled."""
        peer = self._peers.get(peer_id)
        if peer is not None:
            peer.set_urls(self._parse_urls(urls))

    def remove_peer(self, peer_id: int) -> None:
        """Forget a member for good: close its connections, drop its queue, refuse its dials.

        Also valid for an ID never added (to restore the removed set after a restart)."""
        self._removed.add(peer_id)
        peer = self._peers.pop(peer_id, None)
        if peer is not None:
            peer.close()
        self._unreachable.discard(peer_id)
        for conn in list(self._inbound):
            if conn.peer_id == peer_id:
                conn.abort()

    def peer_ids(self) -> list[int]:
        return list(self._peers)

    # --- sending -----------------------------------------------------------------------------

    def send(self, to: int, payloads: Sequence[bytes]) -> None:
        """Queue payloads for a member; never blocks. What does not fit is dropped and the
        member is recorded as unreachable (see drain_unreachable)."""
        peer = self._peers.get(to)
        if peer is None or peer.closed:
            if to not in self._removed:
                self._unreachable.add(to)
            return
        peer.enqueue(payloads)

    def drain_unreachable(self) -> set[int]:
        """Members that lost messages since the last call (for Raft's report_unreachable)."""
        ids = self._unreachable
        self._unreachable = set()
        return ids

    async def send_snapshot(
        self,
        to: int,
        metadata: bytes,
        source: SnapshotSource,
        *,
        timeout: float | None = None,
    ) -> bool:
        """Stream a snapshot on its own connection; True once the receiver's on_snapshot
        returned. ``source`` is a file path (read in chunks) or an async iterable of chunks.
        Fails (False) when the member is unknown, refuses, or makes no progress for
        ``timeout`` seconds (default config.snapshot_timeout)."""
        peer = self._peers.get(to)
        if peer is None or self._stopped:
            log.warning("cannot send snapshot to unknown member %x", to)
            return False
        url = peer.current_url()
        stall = self.config.snapshot_timeout if timeout is None else timeout
        started = time.monotonic()
        self._event("snapshot_send_start", to, 0.0)
        sent = False
        try:
            sent = await self._send_snapshot(to, metadata, source, url, stall, started)
        finally:
            self._event("snapshot_sent" if sent else "snapshot_send_failed", to,
                        time.monotonic() - started)
        return sent

    def _event(self, what: str, peer_id: int, seconds: float) -> None:
        if self.on_event is not None:
            self.on_event(what, peer_id, seconds)

    async def _send_snapshot(self, to: int, metadata: bytes, source: SnapshotSource,
                             url: PeerURL, stall: float, started: float) -> bool:
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(self.config.dial_timeout):
                ssl_ctx = self._client_ssl_for(url)
                reader, writer = await asyncio.open_connection(
                    url.host,
                    url.port,
                    ssl=ssl_ctx,
                    server_hostname=url.host if ssl_ctx is not None else None,
                )
                writer.write(self._hello(to, Kind.SNAPSHOT))
                head = await reader.readexactly(REPLY.size)
                status, _, rlen, cluster_id, member_id = REPLY.unpack(head)
                reason = (await reader.readexactly(rlen)).decode(errors="replace")
            if status != Status.OK:
                reply = Reply(status, cluster_id, member_id, reason)
                self._report_rejected(to, reply)
                raise _Rejected(reply)
            writer.writelines([SNAP_FRAME_HEADER.pack(1 + len(metadata), SnapFrame.META), metadata])
            sha = hashlib.sha256()
            total = 0
            frames = _snapshot_frames(source, self.config.snapshot_chunk, sha)
            async with contextlib.aclosing(frames):
                async for frame, size in frames:
                    writer.writelines(frame)
                    total += size
                    async with asyncio.timeout(stall):
                        await writer.drain()
            end = SNAP_END.pack(total, sha.digest())
            writer.write(SNAP_FRAME_HEADER.pack(1 + len(end), SnapFrame.END) + end)
            async with asyncio.timeout(stall):
                await writer.drain()
                result = await reader.readexactly(SNAP_RESULT.size)
                ok, rlen = SNAP_RESULT.unpack(result)
                reason = (await reader.readexactly(rlen)).decode(errors="replace")
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError, _Rejected) as exc:
            log.warning("failed to send snapshot to %x: %s", to, _describe(exc))
            return False
        finally:
            if writer is not None:
                writer.close()
        if ok != 0:
            log.warning("member %x failed to receive the snapshot: %s", to, reason)
            return False
        log.info("sent snapshot of %d bytes to %x in %.2fs", total, to, time.monotonic() - started)
        return True

    async def request(self, to: int, payload: bytes, *, timeout: float = 5.0) -> bytes:
        """Send one request to a member over a REQUEST connection and return its answer.
        Tries the member's URLs in turn; raises RequestFailed when none answers."""
        peer = self._peers.get(to)
        if peer is None or self._stopped:
            raise RequestFailed(f"unknown member {to:x}")
        return await peer_request(
            [u.url for u in peer.urls],
            payload,
            cluster_id=self.cluster_id,
            from_id=self.local_id,
            to_id=to,
            client_ssl=self._client_ssl,
            timeout=timeout,
            max_frame=self.config.max_frame,
        )

    # --- status ------------------------------------------------------------------------------

    def active_since(self, peer_id: int) -> float | None:
        """time.time() at which the connection to the member came up; None if it is down."""
        peer = self._peers.get(peer_id)
        return None if peer is None else peer.since

    def status(self, peer_id: int) -> PeerStatus | None:
        peer = self._peers.get(peer_id)
        return None if peer is None else peer.status()

    def statuses(self) -> dict[int, PeerStatus]:
        return {peer_id: peer.status() for peer_id, peer in self._peers.items()}

    async def wait_active(self, peer_id: int) -> None:
        """Wait until a connection to the member is up (KeyError if unknown)."""
        await self._peers[peer_id].active.wait()

    # --- internals ---------------------------------------------------------------------------

    def _loop_or_fail(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None
        return self._loop

    def _start_peer(self, peer: _Peer) -> None:
        peer.start()
        assert peer.task is not None
        self._tasks.add(peer.task)
        peer.task.add_done_callback(self._tasks.discard)

    def _parse_urls(self, urls: Sequence[str]) -> list[PeerURL]:
        if isinstance(urls, str):
            raise TypeError("urls must be a sequence of URLs, not a string")
        parsed = [parse_peer_url(u) for u in urls]
        if not parsed:
            raise ValueError("a peer needs at least one URL")
        return parsed

    def _client_ssl_for(self, url: PeerURL) -> ssl.SSLContext | None:
        if not url.tls:
            return None
        if self._client_ssl is None:
            raise ValueError(f"{url.url} is https but no client TLS context was given")
        return self._client_ssl

    def _hello(self, to: int, kind: Kind) -> bytes:
        return Hello(PROTOCOL_VERSION, kind, self.cluster_id, self.local_id, to).encode()

    def _report_status(self, peer_id: int, active: bool) -> None:
        if self._on_peer_status is not None:
            try:
                self._on_peer_status(peer_id, active)
            except Exception:
                log.exception("on_peer_status callback failed")

    def _report_rejected(self, peer_id: int, reply: Reply) -> None:
        try:
            status = Status(reply.status)
        except ValueError:
            status = Status.NOT_ACCEPTED
        if self._on_rejected is not None:
            try:
                self._on_rejected(peer_id, status, reply.reason)
            except Exception:
                log.exception("on_rejected callback failed")

    def _new_inbound(self) -> InboundConnection:
        conn = InboundConnection(
            self,
            max_frame=self.config.max_frame,
            hello_timeout=self.config.hello_timeout,
            snapshot_buffer=self.config.snapshot_buffer,
            snapshot_timeout=self.config.snapshot_timeout,
            unadmitted=self._unadmitted,
        )
        self._inbound.add(conn)
        return conn

    # InboundHost ---------------------------------------------------------------------------

    def admit(self, hello: Hello, conn: InboundConnection) -> Reply:
        status, reason = self._verdict(hello)
        if status != Status.OK:
            # a misconfigured peer redials forever: warn once per REJECT_LOG_INTERVAL
            now = time.monotonic()
            key = (hello.from_id, status)
            level = logging.DEBUG
            if now - self._reject_logged.get(key, -REJECT_LOG_INTERVAL) >= REJECT_LOG_INTERVAL:
                self._reject_logged[key] = now
                level = logging.WARNING
            log.log(
                level,
                "rejected %s connection from %x: %s",
                _kind_name(hello.kind),
                hello.from_id,
                reason,
            )
            return Reply(status, self.cluster_id, self.local_id, reason)
        if hello.kind == Kind.MESSAGES:
            old = self._inbound_by_peer.get(hello.from_id)
            if old is not None and old is not conn:
                old.close()  # the peer redialled; its previous connection is dead or dying
            self._inbound_by_peer[hello.from_id] = conn
            peer = self._peers.get(hello.from_id)
            if peer is not None and peer.conn is None:
                # It is up again (a restart): redial now rather than after our backoff, so
                # that it hears from us before its election timeout runs out.
                peer.wake.set()
        return Reply(Status.OK, self.cluster_id, self.local_id)

    def _verdict(self, hello: Hello) -> tuple[Status, str]:
        if hello.version != PROTOCOL_VERSION:
            return Status.INCOMPATIBLE_VERSION, (
                f"incompatible version (got {hello.version} want {PROTOCOL_VERSION})"
            )
        if hello.kind == Kind.REQUEST:
            return self._request_verdict(hello)
        if hello.cluster_id != self.cluster_id:
            return Status.CLUSTER_ID_MISMATCH, (
                f"cluster ID mismatch (got {hello.cluster_id:x} want {self.cluster_id:x})"
            )
        if hello.to_id != self.local_id:
            return Status.MEMBER_ID_MISMATCH, (
                f"member ID mismatch (got {hello.to_id:x} want {self.local_id:x})"
            )
        if hello.from_id in self._removed:
            return Status.REMOVED_MEMBER, Status.REMOVED_MEMBER.text
        if hello.from_id not in self._peers:
            return Status.UNKNOWN_SENDER, f"sender {hello.from_id:x} not found"
        if hello.kind == Kind.SNAPSHOT and self._on_snapshot is None:
            return Status.NOT_ACCEPTED, "this member does not accept snapshots"
        if hello.kind not in (Kind.MESSAGES, Kind.SNAPSHOT):
            return Status.NOT_ACCEPTED, f"unknown stream kind {hello.kind}"
        return Status.OK, ""

    def _request_verdict(self, hello: Hello) -> tuple[Status, str]:
        # 0 means "not known yet": a member that is joining asks before it knows the IDs.
        if hello.cluster_id not in (0, self.cluster_id):
            return Status.CLUSTER_ID_MISMATCH, (
                f"cluster ID mismatch (got {hello.cluster_id:x} want {self.cluster_id:x})"
            )
        if hello.to_id not in (0, self.local_id):
            return Status.MEMBER_ID_MISMATCH, (
                f"member ID mismatch (got {hello.to_id:x} want {self.local_id:x})"
            )
        if hello.from_id in self._removed:
            return Status.REMOVED_MEMBER, Status.REMOVED_MEMBER.text
        if self._on_request is None:
            return Status.NOT_ACCEPTED, "this member does not accept requests"
        return Status.OK, ""

    def deliver(self, payloads: list[bytes]) -> None:
        try:
            self._on_messages(payloads)
        except Exception:
            log.exception("on_messages callback failed")

    def snapshot_started(
        self, conn: InboundConnection, from_id: int, metadata: bytes, chunks: SnapshotChunks
    ) -> None:
        task = self._loop_or_fail().create_task(
            self._receive_snapshot(conn, from_id, metadata, chunks),
            name=f"petcd-snapshot-from-{from_id:x}",
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _receive_snapshot(
        self, conn: InboundConnection, from_id: int, metadata: bytes, chunks: SnapshotChunks
    ) -> None:
        assert self._on_snapshot is not None
        ok, reason = False, ""
        started = time.monotonic()
        self._event("snapshot_receive_start", from_id, 0.0)
        try:
            await self._on_snapshot(from_id, metadata, chunks)
            async for _ in chunks:  # what the handler left unread; raises if incomplete
                pass
            ok = True
        except asyncio.CancelledError:
            conn.abort()
            raise
        except Exception as exc:
            reason = _describe(exc)
            log.warning("failed to receive snapshot from %x: %s", from_id, reason)
        else:
            log.info("received snapshot from %x", from_id)
        finally:
            self._event("snapshot_received" if ok else "snapshot_receive_failed", from_id,
                        time.monotonic() - started)
        conn.send_snapshot_result(encode_snap_result(ok, reason))

    def request_received(self, conn: InboundConnection, from_id: int, payload: bytes) -> None:
        task = self._loop_or_fail().create_task(
            self._answer_request(conn, from_id, payload), name=f"petcd-request-from-{from_id:x}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer_request(self, conn: InboundConnection, from_id: int, payload: bytes) -> None:
        assert self._on_request is not None
        try:
            answer = await self._on_request(from_id, payload)
        except asyncio.CancelledError:
            conn.abort()
            raise
        except Exception:
            log.exception("serving a request from %x failed", from_id)
            conn.abort()
            return
        conn.send_answer(answer)

    def inbound_closed(self, conn: InboundConnection) -> None:
        self._inbound.discard(conn)
        if self._inbound_by_peer.get(conn.peer_id) is conn:
            del self._inbound_by_peer[conn.peer_id]


async def peer_request(
    urls: Sequence[str],
    payload: bytes,
    *,
    cluster_id: int = 0,
    from_id: int = 0,
    to_id: int = 0,
    client_ssl: ssl.SSLContext | None = None,
    timeout: float = 5.0,
    max_frame: int = 64 * MiB,
) -> bytes:
    """One request to whichever of `urls` answers first (tried in order, `timeout` each).
    IDs may be 0 when not known (a member that has not joined yet)."""
    errors: list[str] = []
    status: Status | None = None
    for text in urls:
        url = parse_peer_url(text)
        if url.tls and client_ssl is None:
            errors.append(f"{text}: https needs a client TLS context")
            continue
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(
                    url.host,
                    url.port,
                    ssl=client_ssl if url.tls else None,
                    server_hostname=url.host if url.tls else None,
                )
                hello = Hello(PROTOCOL_VERSION, Kind.REQUEST, cluster_id, from_id, to_id)
                writer.write(hello.encode() + FRAME_HEADER.pack(len(payload)) + payload)
                head = await reader.readexactly(REPLY.size)
                code, _, rlen, _, _ = REPLY.unpack(head)
                reason = (await reader.readexactly(rlen)).decode(errors="replace")
                if code != Status.OK:
                    try:
                        status = Status(code)
                    except ValueError:
                        status = Status.NOT_ACCEPTED
                    errors.append(f"{text}: {reason or status.text}")
                    continue
                (n,) = FRAME_HEADER.unpack(await reader.readexactly(FRAME_HEADER.size))
                if n > max_frame:
                    raise ProtocolError(f"answer of {n} bytes exceeds the limit")
                return await reader.readexactly(n)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ProtocolError) as exc:
            errors.append(f"{text}: {_describe(exc)}")
        finally:
            if writer is not None:
                writer.close()
    raise RequestFailed("; ".join(errors) or "no peer URL to ask", status)


def _kind_name(kind: int) -> str:
    try:
        return Kind(kind).name.lower()
    except ValueError:
        return f"kind-{kind}"


async def _snapshot_frames(
    source: SnapshotSource, chunk_size: int, sha: _Hasher
) -> AsyncGenerator[tuple[list[bytes | bytearray], int], None]:
    """DATA frames (as buffers to write) and their payload sizes, hashing on the way."""
    if isinstance(source, (str, os.PathLike)):
        loop = asyncio.get_running_loop()
        with open(source, "rb", buffering=0) as f:  # reads happen in a thread
            while True:
                frame = await loop.run_in_executor(None, _read_data_frame, f, chunk_size, sha)
                if frame is None:
                    return
                yield [frame], len(frame) - SNAP_FRAME_HEADER.size
    else:
        async for chunk in source:
            if chunk:
                sha.update(chunk)
                yield [SNAP_FRAME_HEADER.pack(1 + len(chunk), SnapFrame.DATA), chunk], len(chunk)


def _read_data_frame(f: io.FileIO, chunk_size: int, sha: _Hasher) -> bytearray | None:
    """Read one chunk straight into a DATA frame buffer and hash it (runs in a thread)."""
    head = SNAP_FRAME_HEADER.size
    frame = bytearray(head + chunk_size)
    with memoryview(frame) as view:
        n = f.readinto(view[head:])
        if not n:
            return None
        sha.update(view[head : head + n])
    if n < chunk_size:
        del frame[head + n :]
    SNAP_FRAME_HEADER.pack_into(frame, 0, 1 + n, SnapFrame.DATA)
    return frame
