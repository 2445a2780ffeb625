"""PeerProxy on real loopback sockets: it forwards both ways, learns the sender from the
peer hello, and an isolated sender or receiver loses its links and cannot make new ones."""

from __future__ import annotations

import asyncio

import pytest

from petcd.playground.netem import Impairment
from petcd.playground.proxy import PeerProxy
from petcd.testing import free_port
from petcd.transport.wire import HELLO, MAGIC, PROTOCOL_VERSION, Kind


def _hello(sender: int, receiver: int) -> bytes:
    return HELLO.pack(MAGIC, PROTOCOL_VERSION, Kind.MESSAGES, 0, 7, sender, receiver)


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(1024):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


async def _dial(port: int, sender: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(_hello(sender, 2))
    return reader, writer


async def _works(port: int, sender: int) -> bool:
    """A link from `sender` through the proxy: the echo comes back (hello included)."""
    reader, writer = await _dial(port, sender)
    try:
        writer.write(b"ping")
        got = await asyncio.wait_for(reader.read(HELLO.size + 4), 5)
        while got and len(got) < HELLO.size + 4:
            more = await asyncio.wait_for(reader.read(HELLO.size + 4 - len(got)), 5)
            if not more:
                break
            got += more
        return got == _hello(sender, 2) + b"ping"
    finally:
        writer.close()


@pytest.mark.timeout(60)
def test_isolation_cuts_both_ways() -> None:
    async def scenario() -> None:
        target = await asyncio.start_server(_echo, "127.0.0.1", free_port())
        target_port = target.sockets[0].getsockname()[1]
        isolated: set[str] = set()
        ids = {1: "m1", 2: "m2", 3: "m3"}

        def blocked(sender: int, receiver: str) -> bool:
            return receiver in isolated or ids.get(sender) in isolated

        proxy = PeerProxy("m2", free_port(), target_port, blocked)
        await proxy.start()
        try:
            assert await _works(proxy.port, 1)
            reader, writer = await _dial(proxy.port, 3)  # an open link from m3
            writer.write(b"x")
            assert len(await asyncio.wait_for(reader.readexactly(HELLO.size + 1), 5)) > 0

            isolated.add("m3")  # the sender is cut off: its open link dies, new ones fail
            proxy.enforce()
            assert await asyncio.wait_for(reader.read(100), 5) == b""
            writer.close()
            assert not await _works(proxy.port, 3)
            assert await _works(proxy.port, 1)  # others are untouched

            isolated.add("m2")  # the receiver is cut off: nobody reaches it
            proxy.enforce()
            assert not await _works(proxy.port, 1)

            isolated.clear()  # healed
            proxy.enforce()
            assert await _works(proxy.port, 3)
            assert await _works(proxy.port, 1)
        finally:
            await proxy.stop()
            target.close()
            await target.wait_closed()

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_impairment_delays_keeps_order_and_cuts() -> None:
    """netem's stand-in: a round trip through an impaired proxy takes at least twice
    the one-way delay, a "lost" piece waits a retransmission timeout on top, bytes
    arrive whole and in order, and cut=1 resets the link."""
    async def scenario() -> None:
        target = await asyncio.start_server(_echo, "127.0.0.1", free_port())
        target_port = target.sockets[0].getsockname()[1]
        proxy = PeerProxy("m2", free_port(), target_port, lambda sender, receiver: False)
        await proxy.start()
        loop = asyncio.get_running_loop()
        try:
            proxy.impairment = Impairment(delay=0.1, jitter=0.02)
            reader, writer = await _dial(proxy.port, 1)
            await asyncio.wait_for(reader.readexactly(HELLO.size), 10)
            sent = b"".join(b"%06d" % i for i in range(2000))
            started = loop.time()
            for i in range(0, len(sent), 1000):  # many pieces, each with its own jitter
                writer.write(sent[i:i + 1000])
                await writer.drain()
                await asyncio.sleep(0)
            got = await asyncio.wait_for(reader.readexactly(len(sent)), 20)
            assert got == sent
            assert loop.time() - started >= 2 * (0.1 - 0.02)

            proxy.impairment = Impairment(loss=1.0, rto=0.3)  # every piece resent once
            started = loop.time()
            writer.write(b"ping")
            assert await asyncio.wait_for(reader.readexactly(4), 20) == b"ping"
            assert loop.time() - started >= 2 * 0.3

            proxy.impairment = Impairment(cut=1.0)
            writer.write(b"gone")
            assert await asyncio.wait_for(reader.read(100), 10) == b""
            writer.close()
        finally:
            await proxy.stop()
            target.close()
            await target.wait_closed()

    asyncio.run(scenario())
