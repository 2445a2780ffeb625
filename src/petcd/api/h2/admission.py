"""The limit on open client connections (--experimental-max-client-connections), shared
by every listener on a member's client URLs: gRPC (h2), HTTP/1.1 handed off from it,
and a separate --listen-client-http-urls port. A connection over the limit is closed
before any of its bytes is read."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, cast

log = logging.getLogger("petcd.h2")


class ConnectionLimit:
    def __init__(self, limit: int) -> None:
        self.limit = limit  # 0: no limit
        self.open = 0

    def admit(self) -> bool:
        """A connection was accepted: may it stay?"""
        if self.limit and self.open >= self.limit:
            return False
        self.open += 1
        return True

    def release(self) -> None:
        self.open -= 1

    def gate(self, factory: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        """A protocol factory counting its connections. `factory`'s protocols must call
        their `on_lost` attribute (if set) when the connection ends (HttpProtocol and
        MuxProtocol do); the gate swaps them in with set_protocol, so it costs nothing
        per byte."""
        return lambda: _Gate(self, factory)


class _Gate(asyncio.Protocol):
    def __init__(self, limit: ConnectionLimit, factory: Callable[[], asyncio.Protocol]) -> None:
        self._limit = limit
        self._factory = factory

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        t = cast(asyncio.Transport, transport)
        if not self._limit.admit():
            log.warning("refusing a client connection from %s: %d connections open",
                        t.get_extra_info("peername"), self._limit.open)
            t.abort()
            return
        proto = self._factory()
        cast(Any, proto).on_lost = self._limit.release
        t.set_protocol(proto)
        proto.connection_made(t)

    def connection_lost(self, exc: Exception | None) -> None:
        pass  # (refused: it was never counted)
