"""The server object: configuration, the method registry, the live connections, and a
graceful stop (GOAWAY, grace period, then cancel)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from typing import Any

import grpc

from petcd.api.h2.admission import ConnectionLimit
from petcd.api.h2.config import ServerConfig
from petcd.api.h2.connection import H2Protocol
from petcd.api.h2.registry import Registry

log = logging.getLogger("petcd.h2")


class GrpcServer:
    """gRPC over HTTP/2 (h2c, or TLS with ALPN h2 when the listener has an ssl context),
    with HTTP/1.1 on the same listener handed to `http_factory`'s protocol (closed when
    None). Listen with any asyncio server using `protocol_factory`."""

    def __init__(self, config: ServerConfig | None = None, *,
                 http_factory: Callable[[], asyncio.Protocol] | None = None) -> None:
        self.config = config or ServerConfig()
        self.http_factory = http_factory
        self.registry = Registry()
        self.draining = False
        self._connections: set[H2Protocol] = set()
        # Open connections, HTTP/1.1 ones handed off included; a member shares it with
        # its separate HTTP listener (limit.gate).
        self.limit = ConnectionLimit(self.config.max_connections)
        self._idle: asyncio.Event | None = None
        self._servers: list[asyncio.Server] = []
        # Connections with output to write in the loop's next iteration (flush_all).
        self.flushing: list[H2Protocol] = []

    def add_generic_rpc_handlers(
            self, handlers: Iterable[grpc.GenericRpcHandler[Any, Any]]) -> None:
        self.registry.add_generic_rpc_handlers(handlers)

    def protocol_factory(self) -> asyncio.Protocol:
        return H2Protocol(self)

    async def listen_tcp(self, host: str, port: int, **kw: Any) -> asyncio.Server:
        """A convenience for tests and benchmarks; petcd binds its own listeners."""
        server = await asyncio.get_running_loop().create_server(
            self.protocol_factory, host, port, **kw)
        self._servers.append(server)
        return server

    # -- called by connections
    def admit(self) -> bool:
        """A connection was accepted: may it stay (max_connections)?"""
        return self.limit.admit()

    def release(self) -> None:
        self.limit.release()

    @property
    def accepted(self) -> int:
        return self.limit.open

    def flush_all(self) -> None:
        """Write the output of the connections that asked for it (one callback per
        event loop iteration for all of them)."""
        conns, self.flushing = self.flushing, []
        for conn in conns:
            try:
                conn.flush_scheduled()
            except Exception:  # (one connection's failure must not hold the others' output)
                log.exception("HTTP/2 connection output failed")

    def connection_opened(self, conn: H2Protocol) -> None:
        self._connections.add(conn)

    def connection_closed(self, conn: H2Protocol) -> None:
        self._connections.discard(conn)
        if not self._connections and self._idle is not None:
            self._idle.set()

    @property
    def connections(self) -> int:
        return len(self._connections)

    async def stop(self, grace: float | None = None) -> None:
        """Stop listening (own listeners), send GOAWAY on every connection, let open calls
        finish for `grace` seconds, then cancel them and close the connections."""
        self.draining = True
        for s in self._servers:
            s.close()
        self._idle = asyncio.Event()
        for conn in list(self._connections):
            conn.goaway()
        if self._connections and grace:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), grace)
        for conn in list(self._connections):
            conn.close()
        if self._connections:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), 1.0)
        await asyncio.sleep(0)  # let cancelled handlers unwind
