"""The h2 connection's bounds, without sockets: a fake transport records what the
connection writes and whether it reads; bytes are fed straight into data_received.
(The same bounds against a real member under attack: tests/attack.)"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import hpack
from h2_service import handlers

from petcd.api.h2 import GrpcServer, ServerConfig
from petcd.api.h2 import frames as F
from petcd.api.h2.budgets import MAX_PING_STRIKES, PingPolicy, TokenBucket
from petcd.api.h2.connection import H2Protocol
from petcd.api.h2.machine import FRAMES_PER_CALL as _FRAMES_PER_TURN
from petcd.api.h2.outbound import PUMP_BATCH as _PUMP_BATCH
from petcd.testing.memtransport import MemoryTransport


class FakeTransport(MemoryTransport):
    """Also parses what the connection wrote into frames."""

    def frames(self) -> list[tuple[int, int, int, bytes]]:
        out, buf = [], bytes(self.out)
        while len(buf) >= 9:
            hi, lo, ftype, flags, sid = F.HEADER.unpack_from(buf)
            n = hi << 16 | lo
            out.append((ftype, flags, sid, buf[9:9 + n]))
            buf = buf[9 + n:]
        return out


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(test())


def connect(server: GrpcServer, settings: dict[int, int] | None = None
            ) -> tuple[H2Protocol, FakeTransport]:
    conn = H2Protocol(server)
    t = FakeTransport()
    conn.connection_made(t)
    conn.data_received(F.PREFACE + F.settings_frame(settings or {}))
    return conn, t


def server(**kw: Any) -> GrpcServer:
    s = GrpcServer(ServerConfig(**kw))
    s.add_generic_rpc_handlers([handlers()])
    return s


def echo_call(enc: hpack.Encoder, sid: int, body: bytes = b"hi") -> bytes:
    block = bytes(enc.encode([(":method", "POST"), (":scheme", "http"),
                              (":path", "/test.Svc/Echo"), (":authority", "t"),
                              ("content-type", "application/grpc")]))
    msg = b"\0" + len(body).to_bytes(4, "big") + body
    return (F.frame(F.HEADERS, F.END_HEADERS, sid, block)
            + F.frame(F.DATA, F.END_STREAM, sid, msg))


async def turns(n: int = 1) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def test_ping_policy_as_grpc_go() -> None:
    p = PingPolicy(min_time=5.0)
    assert p.allow(0.0, streams_open=True)  # the first ping is always fine
    assert all(p.allow(1.0 + i, streams_open=True) for i in range(MAX_PING_STRIKES))
    assert not p.allow(3.5, streams_open=True)  # one strike too many
    p = PingPolicy(min_time=5.0)
    assert all(p.allow(10.0 * i, streams_open=True) for i in range(10))  # spaced out
    p = PingPolicy(min_time=5.0)
    assert p.allow(0.0, streams_open=False)
    assert p.allow(100.0, streams_open=False) and p.allow(200.0, streams_open=False)
    assert not p.allow(300.0, streams_open=False)  # idle: 2 hours between pings
    p.data_sent = True  # data sent forgives
    assert p.allow(301.0, streams_open=False)


def test_reset_budget() -> None:
    b = TokenBucket(burst=10, rate=5.0)
    assert all(b.spend(0.0) for _ in range(10))
    assert not b.spend(0.0)
    b = TokenBucket(burst=10, rate=5.0)
    assert all(b.spend(i * 0.2) for i in range(1000))  # within the refill rate forever


def test_too_many_settings() -> None:
    async def t() -> None:
        conn, tr = connect(server(settings_burst=50, settings_rate=1.0))
        conn.data_received(F.settings_frame({}) * 100)
        await turns(5)
        goaway = [f for f in tr.frames() if f[0] == F.GOAWAY]
        assert goaway and goaway[0][3][8:] == b"too_many_settings"
        assert tr.closed
    run(t)


def test_too_many_pings() -> None:
    async def t() -> None:
        conn, tr = connect(server(keepalive_min_time=5.0))
        conn.data_received(F.frame(F.PING, 0, 0, b"12345678") * 10)
        goaway = [f for f in tr.frames() if f[0] == F.GOAWAY]
        assert goaway and goaway[0][3][4:] == F.ENHANCE_YOUR_CALM.to_bytes(4, "big") + (
            b"too_many_pings")
        assert sum(f[0] == F.PING for f in tr.frames()) == 1 + MAX_PING_STRIKES  # ACKs
        assert tr.closed
    run(t)


def test_handshake_timeout() -> None:
    async def t() -> None:
        s = server(handshake_timeout=0.05)
        silent = H2Protocol(s)
        st = FakeTransport()
        silent.connection_made(st)
        half = H2Protocol(s)
        ht = FakeTransport()
        half.connection_made(ht)
        half.data_received(F.PREFACE)  # and no SETTINGS
        _ok, ot = connect(s)
        await asyncio.sleep(0.2)
        assert st.closed and st.out == b""
        assert ht.closed and [f[0] for f in ht.frames()][-1] == F.GOAWAY
        assert ht.frames()[-1][3][4:8] == F.SETTINGS_TIMEOUT.to_bytes(4, "big")
        assert not ot.closed
    run(t)


def test_connection_limit() -> None:
    async def t() -> None:
        s = server(max_connections=2)
        a, at = connect(s)
        _b, bt = connect(s)
        c, ct = connect(s)
        assert not at.closed and not bt.closed and ct.closed
        a.connection_lost(None)
        c.connection_lost(None)  # a refused one gives nothing back
        _d, dt = connect(s)
        assert not dt.closed and s.accepted == 2
    run(t)


def test_frames_per_turn_and_reading_paused_meanwhile() -> None:
    async def t() -> None:
        conn, tr = connect(server())
        before = len(tr.frames())
        conn.data_received(F.settings_frame({}) * 500)
        acks = len(tr.frames()) - before
        assert acks == _FRAMES_PER_TURN and not tr.reading
        await turns(10)
        assert len(tr.frames()) - before == 500 and tr.reading
    run(t)


def test_reading_stops_while_writes_back_up() -> None:
    async def t() -> None:
        conn, tr = connect(server())
        conn.pause_writing()
        assert not tr.reading
        conn.resume_writing()
        assert tr.reading
    run(t)


def test_settings_wake_blocked_streams_in_batches() -> None:
    """Streams waiting for their own window (the client's initial window is 0): a
    SETTINGS frame that opens it costs O(1); the streams go out _PUMP_BATCH per turn."""
    async def t() -> None:
        conn, tr = connect(server(), {F.SETTINGS_INITIAL_WINDOW_SIZE: 0})
        enc = hpack.Encoder()
        n = 3 * _PUMP_BATCH
        for i in range(n):
            conn.data_received(echo_call(enc, 1 + 2 * i))
        await turns(5)
        assert len(conn.h2.window_blocked) == n and len(conn.h2.streams) == n
        conn.data_received(F.settings_frame({F.SETTINGS_INITIAL_WINDOW_SIZE: 65535}))
        assert len(conn.h2.streams) == n  # nothing pumped inside the frame's handling
        await turns(1)
        assert len(conn.h2.streams) == n - _PUMP_BATCH
        await turns(5)
        assert not conn.h2.streams and not conn.h2.window_blocked
        assert sum(f[0] == F.DATA for f in tr.frames()) == n
    run(t)


def test_connection_window_update_wakes_streams_in_order() -> None:
    async def t() -> None:
        conn, _tr = connect(server())
        enc = hpack.Encoder()
        big = b"big:%d" % 60000
        for i in range(4):  # 4 x 60 KB answers: the 64 KB connection window runs out
            conn.data_received(echo_call(enc, 1 + 2 * i, big))
        await turns(5)
        assert len(conn.h2.conn_blocked) >= 1
        conn.data_received(F.window_update(0, 1 << 20))
        await turns(5)
        assert not conn.h2.streams
    run(t)


def test_held_request_bytes_bounded_by_the_connection_window() -> None:
    """Streams whose handlers do not read: the connection window is not refunded for
    what they hold, so the client cannot make the connection buffer more."""
    async def t() -> None:
        cw = 256 * 1024
        conn, tr = connect(server(connection_window=cw, initial_window=128 * 1024))
        enc = hpack.Encoder()
        block = bytes(enc.encode([(":method", "POST"), (":scheme", "http"),
                                  (":path", "/test.Svc/Bidi"), (":authority", "t"),
                                  ("content-type", "application/grpc")]))
        sent = 0
        for i in range(8):  # per stream: a 200 KB message declared, 96 KB of it sent
            sid = 1 + 2 * i
            conn.data_received(F.frame(F.HEADERS, F.END_HEADERS, sid, block))
            chunks = [b"\0" + (200_000).to_bytes(4, "big") + b"x" * 16000] + [b"x" * 16000] * 5
            for chunk in chunks:
                granted = F.DEFAULT_WINDOW + sum(F.u32(f[3]) for f in tr.frames()
                                                 if f[0] == F.WINDOW_UPDATE and f[2] == 0)
                if sent + len(chunk) > granted:
                    break  # as a client must: the connection window is used up
                conn.data_received(F.frame(F.DATA, 0, sid, chunk))
                sent += len(chunk)
            await turns(2)
        assert conn.h2.held <= cw
        conn.connection_lost(None)
    run(t)
