"""A unary answer made in pieces (pb.wire.LazyMessage, what a large range returns): a
piece is made only once the last one is out (the client's windows, the transport), a
piece that fails ends the call with its status, and a client that leaves stops it.
Driven in-process (H2Protocol on a fake transport, a real event loop)."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import hpack
from h2_service import in_memory_connection, split_frames

from petcd import errors
from petcd.api.h2 import frames as F
from petcd.pb.wire import LazyMessage
from petcd.testing.memtransport import MemoryTransport

PIECE = 40_000
PIECES = 10


class Pieces(LazyMessage):
    __slots__ = ("fail_at", "made")

    def __init__(self, fail_at: int = -1) -> None:
        super().__init__(PIECE * PIECES)
        self.made = 0
        self.fail_at = fail_at

    def next_chunk(self) -> bytes | None:
        if self.made == PIECES:
            return None
        if self.made == self.fail_at:
            raise errors.COMPACTED()
        self.made += 1
        return bytes([self.made]) * PIECE



def _data(out: bytes | bytearray) -> bytes:
    return b"".join(p for t, _, sid, p in split_frames(out) if t == F.DATA and sid == 1)


def _trailers(out: bytes | bytearray) -> dict[str, str]:
    dec = hpack.Decoder()
    fields: dict[str, str] = {}
    for t, _, sid, p in split_frames(out):
        if t == F.HEADERS and sid == 1:
            fields.update(dict(dec.decode(p)))
    return fields


async def _start(msg: Pieces) -> tuple[Any, MemoryTransport]:
    async def answer(request: bytes, context: Any) -> LazyMessage:
        return msg

    proto, transport = in_memory_connection({"Big": grpc.unary_unary_rpc_method_handler(answer)})
    block = hpack.Encoder().encode([
        (":method", "POST"), (":scheme", "http"), (":path", "/t.S/Big"), (":authority", "t"),
        ("content-type", "application/grpc")])
    proto.data_received(F.frame(F.HEADERS, F.END_HEADERS, 1, block)
                        + F.frame(F.DATA, F.END_STREAM, 1, b"\0\0\0\0\x02hi"))
    for _ in range(20):
        await asyncio.sleep(0)
    return proto, transport


def _window(proto: Any, n: int) -> None:
    proto.data_received(F.frame(F.WINDOW_UPDATE, 0, 0, n.to_bytes(4, "big"))
                        + F.frame(F.WINDOW_UPDATE, 0, 1, n.to_bytes(4, "big")))


def test_pieces_are_made_as_the_window_opens() -> None:
    async def main() -> None:
        msg = Pieces()
        proto, transport = await _start(msg)
        assert msg.made == 2  # 64 KiB window: the 2nd piece waits in the stream
        for _ in range(20):
            await asyncio.sleep(0)
        assert msg.made == 2
        while msg.made < PIECES:
            made = msg.made
            _window(proto, PIECE)
            for _ in range(5):
                await asyncio.sleep(0)
            assert msg.made <= made + 1  # one piece out, one more made
        _window(proto, 2 * PIECE)
        for _ in range(5):
            await asyncio.sleep(0)
        data = _data(transport.out)
        assert data[:5] == b"\0" + (PIECE * PIECES).to_bytes(4, "big")
        assert data[5:] == b"".join(bytes([i + 1]) * PIECE for i in range(PIECES))
        assert _trailers(transport.out)["grpc-status"] == "0"
        proto.connection_lost(None)

    asyncio.run(main())


def test_a_failing_piece_ends_the_call_with_its_status() -> None:
    async def main() -> None:
        msg = Pieces(fail_at=1)
        proto, transport = await _start(msg)
        _window(proto, PIECES * PIECE)
        for _ in range(10):
            await asyncio.sleep(0)
        fields = _trailers(transport.out)
        assert fields["grpc-status"] == str(grpc.StatusCode.OUT_OF_RANGE.value[0])
        assert "compacted" in fields["grpc-message"]
        assert len(_data(transport.out)) == 5 + PIECE  # the prefix and the one piece
        proto.connection_lost(None)

    asyncio.run(main())


def test_a_client_that_leaves_stops_the_pieces() -> None:
    async def main() -> None:
        msg = Pieces()
        proto, _ = await _start(msg)
        assert msg.made == 2
        proto.connection_lost(None)
        for _ in range(20):
            await asyncio.sleep(0)
        assert msg.made == 2

    asyncio.run(main())
