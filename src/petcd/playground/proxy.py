"""Peer-traffic proxies: every member advertises a proxy's address as its peer URL, so
each connection one member dials to another passes through the proxy of the receiver.

A member is isolated by refusing (and cutting) every connection it dials and every
connection dialled to it: its peer traffic stops both ways, while its client URL stays
reachable. Which member dialled is read from the connection's first bytes, the peer
protocol's hello (petcd.transport.wire), so one proxy per receiver is enough.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable

from petcd.playground.netem import Cut, Impairment, impaired_pipe
from petcd.transport.wire import HELLO, MAGIC

log = logging.getLogger("petcd.playground")

class PeerProxy:
    """Listens on `port` and forwards to the member `name` listening on `target_port`."""

    def __init__(self, name: str, port: int, target_port: int,
                 blocked: Callable[[int, str], bool]) -> None:
        self.name = name
        self.port = port
        self.target_port = target_port
        self._blocked = blocked  # (sender member ID or 0, receiver name) -> cut?
        self._server: asyncio.Server | None = None
        # open links: sender ID (0: unknown) -> the writers of both directions
        self._links: set[tuple[int, asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        # Delay, jitter, loss and resets on links through this proxy (both ways); read
        # for every piece forwarded, so a change applies at once (netem.py).
        self.impairment = Impairment()
        self._rng = random.Random(port)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for _, a, b in list(self._links):
            _close(a)
            _close(b)
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=2)
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    def enforce(self) -> None:
        """Cut every open link the current isolation set forbids."""
        for link in list(self._links):
            sender, a, b = link
            if self._blocked(sender, self.name):
                _close(a)
                _close(b)
                self._links.discard(link)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        except (OSError, asyncio.IncompleteReadError, Cut):
            pass
        finally:
            _close(writer)
            self._tasks.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        hello = await asyncio.wait_for(reader.readexactly(HELLO.size), 10)
        sender = 0
        if hello[:4] == MAGIC:
            sender = HELLO.unpack(hello)[5]
        if self._blocked(sender, self.name):
            return  # closed: the dialler sees a dead link and retries later
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        link = (sender, writer, up_writer)
        self._links.add(link)
        try:
            up_writer.write(hello)
            current = lambda: self.impairment  # noqa: E731
            await asyncio.gather(impaired_pipe(reader, up_writer, current, self._rng),
                                 impaired_pipe(up_reader, writer, current, self._rng))
        finally:
            self._links.discard(link)
            _close(up_writer)


def _close(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, RuntimeError):
        writer.close()
