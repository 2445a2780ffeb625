"""A test service written against grpc.aio's API (raw bytes in and out), and a runner
that serves it from a background thread's event loop with either petcd's h2 server or
grpc.aio, on a real loopback port."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import grpc
import grpc.aio
import pytest
import uvloop

from petcd.api.grpc_call import starts_inline
from petcd.api.h2 import GrpcServer, ServerConfig
from petcd.api.h2 import frames as F
from petcd.testing.memtransport import MemoryTransport

SERVICE = "test.Svc"
EVENTS: list[str] = []  # what handlers saw (cancellations, done callbacks); test-global
_EOF: Any = getattr(grpc.aio, "EOF")  # noqa: B009 - missing from the type stubs


async def echo(raw: bytes, context: Any) -> bytes:
    """Commands in the request: abort:<code>:<msg>, sleep:<s>:<tag>, big:<n>, meta,
    raise, trailing, setcode; anything else is echoed."""
    if raw.startswith(b"abort:"):
        _, code, msg = raw.decode().split(":", 2)
        await context.abort(grpc.StatusCode[code], msg)
    if raw.startswith(b"sleep:"):
        _, seconds, tag = raw.decode().split(":", 2)
        context.add_done_callback(lambda ctx: EVENTS.append(f"done:{tag}"))
        try:
            await asyncio.sleep(float(seconds))
        except asyncio.CancelledError:
            EVENTS.append(f"cancelled:{tag}")
            raise
        return b"slept"
    if raw.startswith(b"big:"):
        return b"x" * int(raw[4:])
    if raw == b"meta":
        md = [(m[0], m[1]) for m in context.invocation_metadata()]
        return repr((sorted(md), context.peer(), context.time_remaining() is not None)).encode()
    if raw == b"auth":  # the client's TLS identity as the handler sees it
        ctx = context.auth_context()
        keep = ("transport_security_type", "x509_common_name", "x509_subject_alternative_name",
                "peer_dns", "peer_ip", "x509_subject")
        return repr(({k: v for k, v in sorted(ctx.items()) if k in keep},
                     context.peer_identity_key(), context.peer_identities())).encode()
    if raw == b"raise":
        raise ValueError("boom")
    if raw == b"trailing":
        context.set_trailing_metadata((("x-trail", "t"), ("x-trail-bin", b"\x00\x01")))
        return b"with trailers"
    if raw == b"setcode":
        context.set_code(grpc.StatusCode.NOT_FOUND)
        context.set_details("set, not raised")
        return b""
    return raw


@starts_inline
async def echo_inline(raw: bytes, context: Any) -> bytes:
    """echo, started in the read callback by our h2 server (grpc.aio ignores the mark)."""
    return await echo(raw, context)


async def server_stream(raw: bytes, context: Any) -> AsyncIterator[bytes]:
    """Request "<count>:<size>": that many messages of that size (async generator)."""
    count, size = (int(x) for x in raw.split(b":"))
    for i in range(count):
        yield bytes([i % 256]) * size


async def server_stream_write(raw: bytes, context: Any) -> None:
    """Like server_stream, through context.write(); then waits to be cancelled if asked."""
    count, size, wait = (int(x) for x in raw.split(b":"))
    for i in range(count):
        await context.write(bytes([i % 256]) * size)
    if wait:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            EVENTS.append("cancelled:stream")
            raise


async def client_stream(requests: AsyncIterator[bytes], context: Any) -> bytes:
    total = count = 0
    async for r in requests:
        total += len(r)
        count += 1
    return b"%d:%d" % (count, total)


async def bidi_read_write(requests: AsyncIterator[bytes], context: Any) -> None:
    """Echoes each message with context.read()/write() until the client closes."""
    while True:
        msg = await context.read()
        if msg is _EOF:
            return
        if msg == b"abort":
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "asked to")
        await context.write(msg + b"!")


async def bidi_generator(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
    async for msg in requests:
        yield msg.upper()


def handlers() -> grpc.GenericRpcHandler[Any, Any]:
    return grpc.method_handlers_generic_handler(SERVICE, {
        "Echo": grpc.unary_unary_rpc_method_handler(echo),
        "EchoInline": grpc.unary_unary_rpc_method_handler(echo_inline),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
        "ServerStreamWrite": grpc.unary_stream_rpc_method_handler(server_stream_write),
        "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi_read_write),
        "BidiGen": grpc.stream_stream_rpc_method_handler(bidi_generator),
    })


async def _http(method: str, target: str, headers: Any, body: bytes) -> Any:
    return 200, [(b"Content-Type", b"text/plain")], f"{method} {target} over HTTP/1.1".encode()


class ServerThread:
    """Serves the test service on 127.0.0.1:<port> from its own thread and loop."""

    def __init__(self, kind: str, config: ServerConfig | None = None,
                 ssl: Any = None, grpc_credentials: Any = None) -> None:
        self.kind = kind
        self.ssl = ssl  # for h2: an ssl.SSLContext; for grpcio: grpc_credentials
        self.grpc_credentials = grpc_credentials
        self.config = config or ServerConfig(max_receive_message=4 * 1024 * 1024)
        self.port = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self.h2: GrpcServer | None = None
        self._grpc: grpc.aio.Server | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> ServerThread:
        self._thread.start()
        if not self._ready.wait(20) or self._error is not None:
            raise RuntimeError(f"server did not start: {self._error!r}")
        return self

    def _run(self) -> None:
        try:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                runner.run(self._main())
        except BaseException as e:  # reported by start()
            self._error = e
            self._ready.set()

    async def _main(self) -> None:
        from petcd.api.http import HttpProtocol

        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        if self.kind == "h2":
            self.h2 = GrpcServer(self.config, http_factory=lambda: HttpProtocol(_http))
            self.h2.add_generic_rpc_handlers((handlers(),))
            listener = await self.h2.listen_tcp("127.0.0.1", 0, ssl=self.ssl)
            self.port = listener.sockets[0].getsockname()[1]
        else:
            self._grpc = grpc.aio.server(options=[
                ("grpc.max_receive_message_length", self.config.max_receive_message)])
            self._grpc.add_generic_rpc_handlers((handlers(),))
            if self.grpc_credentials is not None:
                self.port = self._grpc.add_secure_port("127.0.0.1:0", self.grpc_credentials)
            else:
                self.port = self._grpc.add_insecure_port("127.0.0.1:0")
            await self._grpc.start()
        self._ready.set()
        await self._stop.wait()

    def call(self, fn: Callable[[], Any], timeout: float = 10) -> Any:
        """Run a coroutine function on the server's loop and wait for its result."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(fn(), self.loop).result(timeout)

    def stop(self, grace: float = 1.0) -> None:
        if self.loop is None or not self._thread.is_alive():
            return

        async def shutdown() -> None:
            if self.h2 is not None:
                await self.h2.stop(grace)
            if self._grpc is not None:
                await self._grpc.stop(grace)
            assert self._stop is not None
            self._stop.set()

        self.call(shutdown, timeout=grace + 10)
        self._thread.join(10)


@pytest.fixture(scope="module", params=["h2", "grpcio"])
def server(request: pytest.FixtureRequest) -> Iterator[ServerThread]:
    """The test service on either server: the same handlers must behave the same."""
    s = ServerThread(request.param).start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def h2_server() -> Iterator[ServerThread]:
    s = ServerThread("h2").start()
    yield s
    s.stop()


def in_memory_connection(handlers: dict[str, Any]) -> tuple[Any, Any]:
    """Our h2 server's protocol for one connection over a MemoryTransport, serving
    `handlers` (method name -> grpc method handler) as service "t.S", after the client's
    preface and an empty SETTINGS (default 64 KiB windows): (protocol, transport)."""
    server = GrpcServer(ServerConfig())
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("t.S", handlers)])
    proto: Any = server.protocol_factory()
    transport = MemoryTransport()
    proto.connection_made(transport)
    proto.data_received(F.PREFACE + F.settings_frame({}))
    return proto, transport


def split_frames(data: bytes | bytearray) -> list[tuple[int, int, int, bytes]]:
    """(type, flags, stream id, payload) of each whole frame a server wrote."""
    out = []
    pos = 0
    while pos + 9 <= len(data):
        n = int.from_bytes(data[pos:pos + 3], "big")
        out.append((data[pos + 3], data[pos + 4],
                    int.from_bytes(data[pos + 5:pos + 9], "big") & 0x7FFFFFFF,
                    bytes(data[pos + 9:pos + 9 + n])))
        pos += 9 + n
    return out
