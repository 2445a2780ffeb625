"""Fuzzing (hypothesis) of what a stranger's bytes reach: the HTTP/2 connection (frame
parser, HPACK decoder, request header checks, gRPC message framing), the peer port's
framing, the WAL frame decoder and request decoding. No exception may escape, and what
a connection holds stays bounded. Short runs here; `make soak` runs them long."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import Callable
from typing import Any

import grpc
import hpack
import pytest
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from petcd.api.h2 import GrpcServer, ServerConfig
from petcd.api.h2 import frames as F
from petcd.api.h2.connection import H2Protocol
from petcd.api.h2.hpack_codec import Decoder, HeaderListTooLarge, HpackError
from petcd.api.h2.request_head import parse_request_head, parse_timeout
from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.testing.memtransport import MemoryTransport
from petcd.transport._inbound import InboundConnection, SnapshotChunks
from petcd.transport.wire import FRAME_HEADER, PROTOCOL_VERSION, Hello, Kind, Reply, Status
from petcd.wal import frame as wal_frame

SHORT = settings(max_examples=150, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
LONG = settings(max_examples=3000, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _slow(test: Callable[..., Any]) -> Any:
    return pytest.mark.slow(pytest.mark.timeout(1800)(test))


# --- HTTP/2 connection, no sockets ---------------------------------------------------

async def _echo(raw: bytes, context: Any) -> bytes:
    return raw


async def _collect(requests: Any, context: Any) -> bytes:
    n = 0
    async for r in requests:
        n += len(r)
    return str(n).encode()


def _server() -> GrpcServer:
    server = GrpcServer(ServerConfig(max_receive_message=64 * 1024,
                                     connection_window=256 * 1024))
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("f.S", {
        "Echo": grpc.unary_unary_rpc_method_handler(_echo),
        "Collect": grpc.stream_unary_rpc_method_handler(_collect),
    })])
    return server


_ENC = hpack.Encoder()
_GOOD_BLOCK = bytes(hpack.Encoder().encode([
    (":method", "POST"), (":scheme", "http"), (":path", "/f.S/Echo"),
    (":authority", "x"), ("content-type", "application/grpc")]))
_STREAM_BLOCK = bytes(hpack.Encoder().encode([
    (":method", "POST"), (":scheme", "http"), (":path", "/f.S/Collect"),
    (":authority", "x"), ("content-type", "application/grpc"),
    # a deadline no example outlives: with a short one, whether it fired would depend on
    # the machine's speed, and hypothesis could not replay a failure (Flaky)
    ("grpc-timeout", "100S")]))

_payloads = st.one_of(
    st.binary(max_size=64),
    st.sampled_from([_GOOD_BLOCK, _STREAM_BLOCK, b"\0\0\0\0\x05hello", b"\0\0\0\0\0",
                     b"\0\x7f\xff\xff\xff", b"\x01\0\0\0\x01x", b"\0\0\0\0\x01"]),
    st.builds(lambda k, v: struct.pack(">HL", k, v), st.integers(0, 7),
              st.integers(0, 2**32 - 1)),  # one SETTING
    st.builds(lambda v: struct.pack(">L", v), st.integers(0, 2**32 - 1)),
)
_frames = st.builds(
    lambda t, fl, sid, p: F.frame(t, fl, sid, p),
    st.integers(0, 10), st.integers(0, 255),
    st.sampled_from([0, 1, 2, 3, 5, 7, 2**31 - 1]), _payloads)


class _Bugs(logging.Handler):
    """Log records of internal errors (an exception the connection caught: a bug)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if "internal error" in msg or record.exc_info:
            self.seen.append(msg)


def _drive(chunks: list[bytes]) -> None:
    bugs = _Bugs()
    logger = logging.getLogger("petcd.h2")
    logger.addHandler(bugs)
    try:
        _drive_connection(chunks)
    finally:
        logger.removeHandler(bugs)
    assert not bugs.seen, bugs.seen


def _drive_connection(chunks: list[bytes]) -> None:
    async def run() -> None:
        conn = H2Protocol(_server())
        t = MemoryTransport()
        conn.connection_made(t)
        conn.data_received(F.PREFACE + F.settings_frame({}))
        for chunk in chunks:
            if t.closed:
                break
            conn.data_received(chunk)  # must not raise
            for _ in range(3):
                await asyncio.sleep(0)  # handlers, pumps, next turns
            # what one connection holds stays bounded
            assert 0 <= conn.h2.held <= 256 * 1024
            assert conn.h2.stream_memory >= 0
            assert len(t.out) < 4 * 1024 * 1024
        conn.connection_lost(None)
        await asyncio.sleep(0)

    asyncio.run(run())


def _frame_sequences(s: settings) -> Callable[..., Any]:
    @s
    @given(st.lists(_frames, max_size=30), st.integers(1, 64))
    def check(frames: list[bytes], split: int) -> None:
        data = b"".join(frames)
        _drive([data[i:i + split * 7] for i in range(0, len(data), split * 7)])
    return check


test_h2_frames = _frame_sequences(SHORT)
test_h2_frames_long = _slow(_frame_sequences(LONG))


@SHORT
@given(st.binary(max_size=2000))
def test_h2_raw_bytes(data: bytes) -> None:
    _drive([data])


# --- HPACK and request heads -----------------------------------------------------------

def _hpack(s: settings) -> Callable[..., Any]:
    @s
    @given(st.lists(st.binary(max_size=300), max_size=8))
    def check(blocks: list[bytes]) -> None:
        d = Decoder(max_list_size=16 * 1024)
        for block in blocks:
            try:
                blk = d.decode(block)
            except (HpackError, HeaderListTooLarge):
                continue
            assert sum(len(k) + len(v) + 32 for k, v in blk.headers) <= 16 * 1024
            head = parse_request_head(blk.headers)
            if head.error is None and head.timeout is not None:
                parse_timeout(head.timeout)
        assert d._cache_bytes <= 128 * 1024 and len(d.block_cache) <= 256
    return check


test_hpack_decoder = _hpack(SHORT)
test_hpack_decoder_long = _slow(_hpack(LONG))

_header = st.tuples(st.text(min_size=1, max_size=20), st.text(max_size=40))


@SHORT
@given(st.lists(_header, max_size=10))
def test_hpack_round_trip(headers: list[tuple[str, str]]) -> None:
    """What a real encoder (indexing, Huffman) produces decodes to the same list."""
    raw = [(k.encode("utf-8"), v.encode("utf-8")) for k, v in headers]
    enc = hpack.Encoder()
    d = Decoder()
    for _ in range(2):  # the second time from the dynamic table
        got = d.decode(enc.encode(raw)).headers
        assert [(k.encode("latin-1"), v.encode("latin-1")) for k, v in got] == [
            (k, v) for k, v in raw]


@SHORT
@given(st.text(max_size=12))
def test_grpc_timeout(value: str) -> None:
    got = parse_timeout(value)
    assert got is None or got >= 0


# --- peer port framing -------------------------------------------------------------------

class _Host:
    def admit(self, hello: Hello, conn: InboundConnection) -> Reply:
        ok = hello.kind in (Kind.MESSAGES, Kind.REQUEST)
        return Reply(Status.OK if ok else Status.NOT_ACCEPTED, 1, 2)

    def deliver(self, payloads: list[bytes]) -> None:
        pass

    def snapshot_started(self, conn: InboundConnection, from_id: int, metadata: bytes,
                         chunks: SnapshotChunks) -> None:
        pass

    def request_received(self, conn: InboundConnection, from_id: int, payload: bytes) -> None:
        pass

    def inbound_closed(self, conn: InboundConnection) -> None:
        pass

    @property
    def received_bytes(self) -> dict[int, int]:
        return {}


def _peer(s: settings) -> Callable[..., Any]:
    @s
    @given(st.sampled_from([b"", Hello(PROTOCOL_VERSION, Kind.MESSAGES, 1, 3, 2).encode(),
                            Hello(PROTOCOL_VERSION, Kind.REQUEST, 0, 3, 0).encode()]),
           st.lists(st.one_of(st.binary(max_size=200),
                              st.builds(FRAME_HEADER.pack, st.integers(0, 2**32 - 1))),
                    max_size=20))
    def check(hello: bytes, parts: list[bytes]) -> None:
        async def run() -> None:
            conn = InboundConnection(_Host(), max_frame=1 << 20, hello_timeout=5,
                                     snapshot_buffer=1 << 20, snapshot_timeout=5,
                                     unadmitted={})
            t = MemoryTransport()
            conn.connection_made(t)
            data = hello + b"".join(parts)
            pos = 0
            while pos < len(data) and not t.closed:
                buf = conn.get_buffer(-1)
                n = min(len(buf), len(data) - pos, 97)
                buf[:n] = data[pos:pos + n]
                conn.buffer_updated(n)  # must not raise
                pos += n
                assert len(conn._buf) <= (1 << 20) + 4 * 1024 * 1024
            conn.connection_lost(None)

        asyncio.run(run())
    return check


test_peer_framing = _peer(SHORT)
test_peer_framing_long = _slow(_peer(LONG))


# --- WAL frames and request decoding -------------------------------------------------------

def _wal(s: settings) -> Callable[..., Any]:
    @s
    @given(st.binary(max_size=400), st.integers(0, 64))
    def check(data: bytes, off: int) -> None:
        wal_frame.is_intact_frame(data, off)
        # ValueError, IndexError, OverflowError: what WAL recovery reports as damage
        with contextlib.suppress(ValueError, IndexError, OverflowError):
            wal_frame.decode_batch(data)
        with contextlib.suppress(ValueError, IndexError, OverflowError):
            wal_frame.decode_segment_head(data)
    return check


test_wal_frames = _wal(SHORT)
test_wal_frames_long = _slow(_wal(LONG))

_REQUEST_TYPES = [rpc.RangeRequest, rpc.PutRequest, rpc.DeleteRangeRequest, rpc.TxnRequest,
                  rpc.CompactionRequest, rpc.LeaseGrantRequest, rpc.WatchRequest,
                  rpc.AuthenticateRequest, rpc.MemberAddRequest]


@SHORT
@given(st.sampled_from(_REQUEST_TYPES), st.binary(max_size=300))
def test_request_decoding(message_type: Any, raw: bytes) -> None:
    with contextlib.suppress(DecodeError):  # answered as gRPC-Go does (api/kv.py)
        message_type.FromString(raw)
