"""The connections a member dials to send its messages: one per peer, a bounded queue in
front of it, redialled with backoff, cut off when the peer stops reading."""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import time
from collections.abc import (
    Sequence,
)
from typing import TYPE_CHECKING, cast

from .types import PeerStatus, PeerURL, Rejected, describe
from .wire import (
    FRAME_HEADER,
    REPLY,
    Kind,
    ProtocolError,
    Reply,
    Status,
)

if TYPE_CHECKING:
    from .transport import PeerTransport

log = logging.getLogger("petcd.transport")

_pack_frame_header = FRAME_HEADER.pack
WRITEV_MIN_AVERAGE = 4096


class _OutboundConnection(asyncio.Protocol):
    """Client side of a MESSAGES connection. Reads only the handshake reply."""

    def __init__(self, peer: Peer, url: PeerURL) -> None:
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


class Peer:
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

    def enqueue(self, payloads: Sequence[bytes], now: bool = False) -> None:
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
        if now:
            try:
                self.flush()
            except (RuntimeError, OSError) as e:  # (never into the caller: the Raft loop)
                self.owner._unreachable.add(self.id)
                log.debug("write to peer %x failed: %s", self.id, e)
        elif self.conn is not None and not self.paused and not self.flush_scheduled and queue:
            self.flush_scheduled = True
            self.owner._loop_or_fail().call_soon(self.flush)

    def flush(self) -> None:
        """Write everything queued in one call (scheduled at most once per loop iteration)."""
        self.flush_scheduled = False
        conn, queue = self.conn, self.queue
        transport = None if conn is None else conn.transport
        if transport is None or self.paused or not queue or transport.is_closing():
            return  # (a closed connection: kept for the next one, or dropped with the peer)
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
            transport.writelines(parts)
        else:
            transport.write(b"".join(parts))

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
                except Rejected as rej:
                    self._failed(f"{url.url} rejected the connection: {rej}")
                    self.owner._report_rejected(self.id, rej.reply)
                    delay = self.config.backoff_max
                except (OSError, TimeoutError, ProtocolError, ValueError) as exc:
                    failures += 1
                    self.url_index += 1
                    self._failed(f"cannot connect to {url.url}: {describe(exc)}")
                    delay = min(
                        self.config.backoff_max, self.config.backoff_min * 2 ** (failures - 1)
                    )
                except Exception as exc:  # a bug must not silence this peer for good
                    log.exception("peer %x: unexpected error while dialling", self.id)
                    failures += 1
                    self._failed(f"unexpected error: {describe(exc)}")
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
            raise Rejected(reply)
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
