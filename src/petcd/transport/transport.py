"""PeerTransport: see the package docstring (petcd.transport) for the contract."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import (
    Callable,
    Sequence,
)

from petcd.tls import Gate

from ._dial import peer_request, stream_snapshot
from ._inbound import InboundConnection, SnapshotChunks
from ._outbound import Peer
from .types import (
    PeerStatus,
    PeerURL,
    RequestFailed,
    RequestHandler,
    SnapshotHandler,
    SnapshotSource,
    TransportConfig,
    describe,
    parse_peer_url,
)
from .wire import (
    MAX_UINT64,
    PROTOCOL_VERSION,
    Hello,
    Kind,
    Reply,
    Status,
    encode_snap_result,
)

log = logging.getLogger("petcd.transport")

REJECT_LOG_INTERVAL = 30.0


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
        # (event, peer ID, seconds) for metrics: snapshot_{send_start,sent,send_failed,
        # receive_start,received,receive_failed}, disconnected. Called on the loop.
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
        self._peers: dict[int, Peer] = {}
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
        peer = Peer(self, peer_id, parsed)
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

    def send(self, to: int, payloads: Sequence[bytes], now: bool = False) -> None:
        """Queue payloads for a member; never blocks. What does not fit is dropped and the
        member is recorded as unreachable (see drain_unreachable). Written in the next
        loop iteration (with what else is sent meanwhile), or at once with `now`."""
        peer = self._peers.get(to)
        if peer is None or peer.closed:
            if to not in self._removed:
                self._unreachable.add(to)
            return
        peer.enqueue(payloads, now)

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
            sent = await stream_snapshot(
                to, url, metadata, source, ssl_for=self._client_ssl_for,
                hello=self._hello(to, Kind.SNAPSHOT), dial_timeout=self.config.dial_timeout,
                stall=stall, chunk_size=self.config.snapshot_chunk,
                on_rejected=lambda reply: self._report_rejected(to, reply))
        finally:
            self._event("snapshot_sent" if sent else "snapshot_send_failed", to,
                        time.monotonic() - started)
        return sent

    def _event(self, what: str, peer_id: int, seconds: float) -> None:
        if self.on_event is not None:
            self.on_event(what, peer_id, seconds)

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

    def _start_peer(self, peer: Peer) -> None:
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
            reason = describe(exc)
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


def _kind_name(kind: int) -> str:
    try:
        return Kind(kind).name.lower()
    except ValueError:
        return f"kind-{kind}"
