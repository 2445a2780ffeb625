"""When a unary call's answer is written: at once when it is the connection's last open
call, else batched with the others' once per event loop iteration. Driven in-process
(H2Protocol on a fake transport, a real event loop)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import hpack
from h2_service import in_memory_connection, split_frames

from petcd.api.h2 import frames as F


def _request(enc: hpack.Encoder, sid: int) -> bytes:
    block = enc.encode([(":method", "POST"), (":scheme", "http"), (":path", "/t.S/Wait"),
                        (":authority", "t"), ("content-type", "application/grpc")])
    return (F.frame(F.HEADERS, F.END_HEADERS, sid, block)
            + F.frame(F.DATA, F.END_STREAM, sid, b"\0\0\0\0\x02hi"))


def _data_frames(data: bytes | bytearray) -> list[int]:
    """Stream ids of the DATA frames written."""
    out = []
    pos = 0
    while pos + 9 <= len(data):
        n = int.from_bytes(data[pos:pos + 3], "big")
        if data[pos + 3] == F.DATA:
            out.append(int.from_bytes(data[pos + 5:pos + 9], "big") & 0x7FFFFFFF)
        pos += 9 + n
    return out


def test_last_open_call_is_written_at_once_others_batched() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        answers: list[asyncio.Future[bytes]] = []

        async def wait(request: bytes, context: Any) -> bytes:
            fut: asyncio.Future[bytes] = loop.create_future()
            answers.append(fut)
            return await fut

        proto, transport = in_memory_connection(
            {"Wait": grpc.unary_unary_rpc_method_handler(wait)})
        enc = hpack.Encoder()
        proto.data_received(_request(enc, 1) + _request(enc, 3))
        while len(answers) < 2:
            await asyncio.sleep(0)
        await asyncio.sleep(0)  # (the connection's SETTINGS are written by now)
        transport.out.clear()

        # Stream 1 answered while stream 3 is open: batched, written next iteration.
        answers[0].set_result(b"one")
        await asyncio.sleep(0)  # the handler's task finishes before this returns
        assert _data_frames(transport.out) == []
        await asyncio.sleep(0)
        assert _data_frames(transport.out) == [1]

        # Stream 3 is the last open call: written by the task that answered it.
        answers[1].set_result(b"three")
        await asyncio.sleep(0)
        assert _data_frames(transport.out) == [1, 3]
        await asyncio.sleep(0)
        assert _data_frames(transport.out) == [1, 3]  # (the scheduled flush: nothing)
        proto.connection_lost(None)

    asyncio.run(main())


def test_metadata_value_follows_each_request() -> None:
    """metadata_value is remembered with the request head the connection shares between
    calls whose header blocks are the same: each call still sees its own value."""
    async def main() -> None:
        seen: list[str | None] = []

        async def look(request: bytes, context: Any) -> bytes:
            seen.append(context.metadata_value("client-api-version"))
            seen.append(context.metadata_value("client-api-version"))  # (remembered)
            return b"ok"

        proto, _ = in_memory_connection({"Wait": grpc.unary_unary_rpc_method_handler(look)})
        enc = hpack.Encoder()
        versions = ["3.4", "3.4", "3.5", None, "3.4", None]
        for i, version in enumerate(versions):
            extra = [] if version is None else [("client-api-version", version)]
            block = enc.encode([(":method", "POST"), (":scheme", "http"),
                                (":path", "/t.S/Wait"), (":authority", "t"),
                                ("content-type", "application/grpc"), *extra])
            sid = 2 * i + 1
            proto.data_received(F.frame(F.HEADERS, F.END_HEADERS, sid, block)
                                + F.frame(F.DATA, F.END_STREAM, sid, b"\0\0\0\0\x02hi"))
            while len(seen) < 2 * (i + 1):
                await asyncio.sleep(0)
        assert seen == [v for v in versions for _ in range(2)]
        proto.connection_lost(None)

    asyncio.run(main())


def test_offer_writes_one_frame_or_falls_back_and_holds_the_flush() -> None:
    """Call.offer (the watch hub's direct write): a response that fits the windows goes
    out as one DATA frame, the bytes write() gives; with held=True no flush callback is
    scheduled (the caller flushes); once the stream's window is short it is split as
    write() does, and nothing more is taken until that is sent."""
    async def main() -> None:
        calls: list[Any] = []
        done = asyncio.Event()

        async def watch(requests: Any, context: Any) -> AsyncIterator[bytes]:
            calls.append(context.outlet())
            yield b"first"  # the response headers go out with it
            await done.wait()

        proto, transport = in_memory_connection(
            {"W": grpc.stream_stream_rpc_method_handler(watch)})
        # The client's window for new streams: 100 bytes.
        proto.data_received(F.settings_frame({F.SETTINGS_INITIAL_WINDOW_SIZE: 100}))
        enc = hpack.Encoder()
        block = enc.encode([(":method", "POST"), (":scheme", "http"), (":path", "/t.S/W"),
                            (":authority", "t"), ("content-type", "application/grpc")])
        proto.data_received(F.frame(F.HEADERS, F.END_HEADERS, 1, block))
        while not calls or not _data_frames(transport.out):
            await asyncio.sleep(0)
        await asyncio.sleep(0)
        call = calls[0]
        transport.out.clear()

        msg = b"m" * 40
        ready = asyncio.get_running_loop()._ready  # type: ignore[attr-defined]
        before = len(ready)
        assert call.offer(msg, held=True)
        assert len(ready) == before  # held: no flush callback was scheduled for it
        call.flush()
        assert bytes(transport.out) == F.frame(F.DATA, 0, 1, b"\0\0\0\0\x28" + msg)
        assert not proto._flush_scheduled
        transport.out.clear()

        # 45 of the stream's 100 bytes used (plus the first response's 10): 45 left.
        big = b"b" * 60
        assert call.offer(big)  # taken, sent in part (as write() would)
        assert proto._flush_scheduled  # (not held: the connection flushes it)
        await asyncio.sleep(0)
        assert _data_frames(transport.out) == [1]
        assert not call.offer(msg)  # the rest of `big` waits for the window
        proto.data_received(F.frame(F.WINDOW_UPDATE, 0, 1, (1000).to_bytes(4, "big")))
        await asyncio.sleep(0)
        assert call.offer(msg)
        await asyncio.sleep(0)
        data = b"".join(p for t, _, sid, p in split_frames(transport.out) if t == F.DATA)
        assert data == b"\0\0\0\0\x3c" + big + b"\0\0\0\0\x28" + msg
        done.set()
        proto.connection_lost(None)

    asyncio.run(main())


def test_one_callback_writes_every_connections_output() -> None:
    """Connections of a server with output in the same loop iteration are written by one
    callback (GrpcServer.flush_all), and a transport that fails does not hold back the
    others' output."""
    from petcd.api.h2 import GrpcServer, ServerConfig
    from petcd.testing.memtransport import MemoryTransport

    class Broken(MemoryTransport):
        broken = False

        def write(self, data: Any) -> None:
            if self.broken:
                raise RuntimeError("broken transport")
            super().write(data)

    async def main() -> None:
        server = GrpcServer(ServerConfig())
        conns = []
        for transport in (MemoryTransport(), Broken(), MemoryTransport()):
            proto: Any = server.protocol_factory()
            proto.connection_made(transport)
            conns.append((proto, transport))
            proto.data_received(F.PREFACE + F.settings_frame({}))
        await asyncio.sleep(0)  # (our SETTINGS and the ACK written)
        conns[1][1].broken = True
        ready = asyncio.get_running_loop()._ready  # type: ignore[attr-defined]
        before = len(ready)
        for proto, _ in conns:
            proto.h2.write(F.frame(F.PING, F.ACK, 0, b"12345678"))
        assert len(ready) == before + 1  # one callback for the three connections
        await asyncio.sleep(0)
        for proto, transport in conns:
            assert not proto._flush_scheduled
            if not isinstance(transport, Broken):
                assert split_frames(transport.out)[-1] == (F.PING, F.ACK, 0, b"12345678")
        assert server.flushing == []
    asyncio.run(main())
