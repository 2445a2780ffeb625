"""gRPC and HTTP/1.1 on one port, as etcd serves them. grpc.aio cannot share its
listener, so petcd's listener looks at the first bytes of each connection: the
HTTP/2 client preface means gRPC, and the connection is spliced to the gRPC server's
private unix socket; anything else is served as HTTP/1.1 here. Splicing is byte
forwarding between two uvloop transports (no parsing, no copies beyond the socket
buffers); flow control follows each side's write buffer."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Any, cast

log = logging.getLogger("petcd.mux")

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


class _Upstream(asyncio.Protocol):
    """The gRPC server's side of a spliced connection."""

    __slots__ = ("client", "client_eof", "eof", "transport")

    def __init__(self, client: asyncio.Transport) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.eof = False  # the gRPC server half-closed
        self.client_eof = False  # the client half-closed

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        self.client.write(data)

    def eof_received(self) -> bool:
        self.eof = True
        if self.client_eof:  # both directions are done: nothing holds the sockets open
            self.client.close()
            return False
        if not self.client.is_closing() and self.client.can_write_eof():
            self.client.write_eof()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.close()

    # Our buffer toward the gRPC server is full: stop reading from the client.
    def pause_writing(self) -> None:
        if self.client is not None and not self.client.is_closing():
            self.client.pause_reading()

    def resume_writing(self) -> None:
        if self.client is not None and not self.client.is_closing():
            self.client.resume_reading()


class MuxProtocol(asyncio.Protocol):
    """One accepted client connection: sniff, then splice to gRPC or serve HTTP/1.1."""

    def __init__(self, grpc_path: str, http_factory: Callable[[], asyncio.Protocol],
                 handshake_timeout: float = 10.0) -> None:
        self._grpc_path = grpc_path
        self._http_factory = http_factory
        self._handshake_timeout = handshake_timeout
        self._timer: asyncio.TimerHandle | None = None
        self._transport: asyncio.Transport | None = None
        self._buf = b""
        self._up: asyncio.Transport | None = None
        self._upstream: _Upstream | None = None
        self._http: asyncio.Protocol | None = None
        self._closed = False
        self.on_lost: Callable[[], None] | None = None  # (a connection limit's release)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        # Until the first bytes decide the protocol (--experimental-client-handshake-
        # timeout): gRPC then has grpc.server_handshake_timeout_ms, HTTP its own timeouts.
        self._timer = asyncio.get_running_loop().call_later(self._handshake_timeout,
                                                            self._silent)

    def _silent(self) -> None:
        self._timer = None
        if self._up is None and self._http is None and self._transport is not None:
            log.info("a client connection sent no protocol preface in %.1fs: closing",
                     self._handshake_timeout)
            self._transport.abort()

    def _decided(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def data_received(self, data: bytes) -> None:
        up = self._up
        if up is not None:  # the hot path: one call per chunk
            up.write(data)
            return
        if self._http is not None:
            self._http.data_received(data)
            return
        self._buf += data
        n = min(len(self._buf), len(H2_PREFACE))
        if self._buf[:n] != H2_PREFACE[:n]:
            self._start_http()
        elif n == len(H2_PREFACE):
            assert self._transport is not None
            self._decided()
            self._transport.pause_reading()
            asyncio.get_running_loop().create_task(self._connect_grpc())

    def _start_http(self) -> None:
        assert self._transport is not None
        self._decided()
        http = self._http_factory()
        self._http = http
        if self.on_lost is not None and hasattr(http, "on_lost"):
            cast(Any, http).on_lost, self.on_lost = self.on_lost, None
        # Hand the connection over: from now on the transport calls the HTTP protocol.
        self._transport.set_protocol(http)
        http.connection_made(self._transport)
        buf, self._buf = self._buf, b""
        http.data_received(buf)

    async def _connect_grpc(self) -> None:
        client = self._transport
        assert client is not None
        loop = asyncio.get_running_loop()
        try:
            # uvloop cannot dial an abstract unix address by path: connect a socket here
            # (a unix connect to a listening socket completes at once) and hand it over.
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(self._grpc_path)
                sock.setblocking(False)
                upstream = _Upstream(client)
                up_transport, _ = await loop.create_unix_connection(
                    lambda: upstream, sock=sock)
            except BaseException:
                sock.close()
                raise
        except OSError as e:
            log.warning("cannot reach the gRPC server: %s", e)
            client.close()
            return
        if self._closed:
            up_transport.close()
            return
        up_transport.write(self._buf)
        self._buf = b""
        self._up = up_transport
        self._upstream = upstream
        client.resume_reading()

    def eof_received(self) -> bool | None:
        if self._up is not None:
            upstream = self._upstream
            assert upstream is not None
            upstream.client_eof = True
            if upstream.eof:  # both directions are done (else the sockets stay open)
                self._up.close()
                return False
            if self._up.can_write_eof():
                self._up.write_eof()
            return True
        if self._http is not None:
            return self._http.eof_received()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._decided()
        on_lost, self.on_lost = self.on_lost, None
        if on_lost is not None:
            on_lost()
        if self._up is not None:
            self._up.close()
        if self._http is not None:
            self._http.connection_lost(exc)

    # Our write buffer toward the client is full: stop reading from the gRPC server.
    def pause_writing(self) -> None:
        if self._up is not None:
            self._up.pause_reading()

    def resume_writing(self) -> None:
        if self._up is not None:
            self._up.resume_reading()
