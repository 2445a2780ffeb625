"""api/http.HttpProtocol's request and idle timeouts on a real loopback socket (short
timeouts given to the protocol): the timer is moved lazily, so these check that it
still fires when due and never while requests keep coming."""

from __future__ import annotations

import asyncio
import time

from petcd.api.http import HttpProtocol, Reply

TIMEOUT = 0.5


async def _handler(method: str, target: str, headers: object, body: object) -> Reply:
    return 200, [], b"ok"


async def _serve() -> tuple[asyncio.AbstractServer, int]:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: HttpProtocol(_handler, request_timeout=TIMEOUT, idle_timeout=TIMEOUT),
        "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def _get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
               method: str = "GET") -> bytes:
    writer.write(f"{method} /x HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n".encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 200 ")
    await asyncio.wait_for(reader.readexactly(2), 10)
    return head


def test_idle_timeout_is_pushed_back_by_requests_then_fires() -> None:
    async def run() -> None:
        server, port = await _serve()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            start = time.monotonic()
            # Requests (fast path and, with PATCH, h11) for 3 timeouts, each well
            # within the timeout of the one before: the connection stays open.
            i = 0
            while time.monotonic() - start < 3 * TIMEOUT:
                await _get(reader, writer, "PATCH" if i % 3 == 2 else "GET")
                idle_from = time.monotonic()
                i += 1
                await asyncio.sleep(TIMEOUT / 5)
            assert await asyncio.wait_for(reader.read(), 10) == b""  # closed when idle
            assert time.monotonic() - idle_from >= TIMEOUT * 0.9
        finally:
            writer.close()
            server.close()
            await server.wait_closed()
    asyncio.run(run())


def test_request_arriving_too_slowly_gets_408_after_idle_keepalive() -> None:
    async def run() -> None:
        server, port = await _serve()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            await _get(reader, writer)
            writer.write(b"GET /x HTTP/1.1\r\n")  # the head never ends
            started = time.monotonic()
            answer = await asyncio.wait_for(reader.read(), 10)
            assert answer.startswith(b"HTTP/1.1 408 "), answer
            assert time.monotonic() - started >= TIMEOUT * 0.9
        finally:
            writer.close()
            server.close()
            await server.wait_closed()
    asyncio.run(run())
