"""The h2 server's send thread (api/h2/sendoff.py) over real loopback sockets, with real
grpc clients and raw HTTP/2 ones. Each test keeps another connection busy (a call held
open) and sets the server's inline writes to 0, so that every write goes through the
thread; each checks that the thread did take writes (or, for TLS and unix sockets, that
it never did)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import hpack
import pytest
import uvloop
from h2_service import ServerThread

from petcd.api.h2 import frames as F
from petcd.api.h2.connection import H2Protocol
from petcd.api.h2.sendoff import SendThread
from petcd.testing_pki import self_signed

# Every channel its own connection (grpc shares subchannels of the same target otherwise).
OWN = [("grpc.use_local_subchannel_pool", 1)]
BIG = [*OWN, ("grpc.max_receive_message_length", 64 << 20)]


def wait_for(pred: Callable[[], object], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def hub_of(srv: ServerThread) -> SendThread:
    assert srv.h2 is not None and srv.h2.sendoff is not None
    return srv.h2.sendoff


def connections(srv: ServerThread) -> list[H2Protocol]:
    async def get() -> list[H2Protocol]:
        assert srv.h2 is not None
        return list(srv.h2._connections)
    return srv.call(get)  # type: ignore[no-any-return]


@pytest.fixture
def srv() -> Iterator[ServerThread]:
    s = ServerThread("h2").start()
    if s.h2 is None or s.h2.sendoff is None:
        s.stop()
        pytest.skip("PETCD_H2_SEND_THREAD=0")
    s.h2.sendoff.inline_writes = 0  # (set before any traffic)
    yield s
    s.stop()


@contextlib.contextmanager
def busy_elsewhere(srv: ServerThread, target: str = "",
                   creds: grpc.ChannelCredentials | None = None) -> Iterator[None]:
    """Another connection with a call open: the server is serving several clients."""
    target = target or f"127.0.0.1:{srv.port}"
    before = hub_of(srv).busy
    with (grpc.secure_channel(target, creds, options=OWN) if creds
          else grpc.insecure_channel(target, options=OWN)) as ch:
        held = ch.unary_stream("/test.Svc/ServerStreamWrite")(b"0:0:1", timeout=60)
        wait_for(lambda: hub_of(srv).busy > before)
        try:
            yield
        finally:
            held.cancel()


def check_mixed_calls(ch: grpc.Channel, tag: int) -> None:
    """Streams and unary calls in flight together on one connection, each checked."""
    stream = ch.unary_stream("/test.Svc/ServerStream")
    echo = ch.unary_unary("/test.Svc/Echo")
    sizes = [100 + (tag * 7 + i) * 37 % 3000 for i in range(12)]
    streams = [stream(b"40:%d" % n, timeout=60) for n in sizes]
    unaries = [echo.future(b"%d-%d|" % (tag, i) * (1 + i % 50), timeout=60)
               for i in range(150)]
    for n, it in zip(sizes, streams, strict=True):
        assert list(it) == [bytes([j]) * n for j in range(40)]
    for i, f in enumerate(unaries):
        assert f.result() == b"%d-%d|" % (tag, i) * (1 + i % 50)


def test_byte_order_through_partial_sends() -> None:
    """Writes of one connection through the thread, to a reader that takes small bites
    with pauses through tiny socket buffers: sends are cut short all the time, their
    rest goes back to the transport while later writes are already queued, and the
    reader still gets every byte in order."""
    rng = random.Random(7)
    chunks = [b"<%06d>" % i * rng.randint(1, 300) for i in range(4000)]
    expected = b"".join(chunks)
    received = bytearray()

    def reader(sock: socket.socket) -> None:
        sock.settimeout(30)
        while len(received) < len(expected):
            chunk = sock.recv(rng.randint(1, 16384))
            if not chunk:
                return
            received.extend(chunk)
            if rng.random() < 0.05:
                time.sleep(0.002)

    async def main() -> SendThread:
        with socket.create_server(("127.0.0.1", 0)) as listener:
            client = socket.socket()
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)  # (before connect)
            client.connect(listener.getsockname())
            server_sock, _ = listener.accept()
        server_sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
        loop = asyncio.get_running_loop()
        transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, server_sock)
        hub = SendThread()
        hub.busy, hub.inline_writes = 2, 0  # other connections busy: all to the thread
        outlet = hub.outlet(transport, lambda paused: None)
        assert outlet is not None
        reading = threading.Thread(target=reader, args=(client,))
        reading.start()
        for i, c in enumerate(chunks):
            outlet.write(c, False)
            if i % 3 == 0:
                await asyncio.sleep(0)
        while outlet.inflight or transport.get_write_buffer_size():
            await asyncio.sleep(0.01)
        await asyncio.to_thread(reading.join, 30)
        transport.close()
        outlet.release()
        hub.stop()
        client.close()
        return hub

    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)  # (three busy threads here: each waits less for the GIL)
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            hub = runner.run(main())
    finally:
        sys.setswitchinterval(switch)
    assert received == expected
    assert hub.batches > 20 and hub.handed_back > 0


def test_many_streams_keep_their_order(srv: ServerThread) -> None:
    with busy_elsewhere(srv):
        channels = [grpc.insecure_channel(f"127.0.0.1:{srv.port}", options=OWN)
                    for _ in range(3)]
        try:
            with ThreadPoolExecutor(3) as pool:
                list(pool.map(check_mixed_calls, channels, range(3)))
        finally:
            for ch in channels:
                ch.close()
    assert hub_of(srv).batches > 0


def test_large_responses_under_concurrency(srv: ServerThread) -> None:
    """Answers far above the socket buffers, several connections at once: partial sends
    hand the rest back to the transport, in order."""
    def big_calls(i: int) -> None:
        with grpc.insecure_channel(f"127.0.0.1:{srv.port}", options=BIG) as ch:
            echo = ch.unary_unary("/test.Svc/Echo")
            futures = [echo.future(b"big:%d" % (3_000_000 + i * 1000 + j), timeout=60)
                       for j in range(3)]
            stream = list(ch.unary_stream("/test.Svc/ServerStream")(b"4:1000000", timeout=60))
            assert stream == [bytes([j]) * 1_000_000 for j in range(4)]
            for j, f in enumerate(futures):
                assert f.result() == b"x" * (3_000_000 + i * 1000 + j)

    with busy_elsewhere(srv), ThreadPoolExecutor(4) as pool:
        list(pool.map(big_calls, range(4)))
    hub = hub_of(srv)
    assert hub.batches > 0 and hub.handed_back > 0


class RawClient:
    """An HTTP/2 client on a plain socket that reads only when told to."""

    def __init__(self, port: int, window: int = F.DEFAULT_WINDOW) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.enc = hpack.Encoder()
        settings = F.settings_frame({F.SETTINGS_INITIAL_WINDOW_SIZE: window})
        grow = F.frame(F.WINDOW_UPDATE, 0, 0, (window - F.DEFAULT_WINDOW).to_bytes(4, "big")
                       ) if window > F.DEFAULT_WINDOW else b""
        self.sock.sendall(F.PREFACE + settings + grow)

    def call(self, sid: int, method: str, body: bytes) -> None:
        block = bytes(self.enc.encode([(":method", "POST"), (":scheme", "http"),
                                       (":path", f"/test.Svc/{method}"), (":authority", "t"),
                                       ("content-type", "application/grpc")]))
        msg = b"\0" + len(body).to_bytes(4, "big") + body
        self.sock.sendall(F.frame(F.HEADERS, F.END_HEADERS, sid, block)
                          + F.frame(F.DATA, F.END_STREAM, sid, msg))

    def read_stream(self, sid: int, timeout: float = 60.0) -> bytes:
        """The DATA of stream `sid` up to its END_STREAM (frames must parse in order)."""
        self.sock.settimeout(timeout)
        buf = bytearray()
        data = bytearray()
        while True:
            chunk = self.sock.recv(1 << 20)
            assert chunk, "the connection ended before the stream did"
            buf += chunk
            frames, used = parse(bytes(buf))
            del buf[:used]
            for ftype, flags, fsid, payload in frames:
                assert ftype in (F.SETTINGS, F.HEADERS, F.DATA, F.WINDOW_UPDATE, F.PING), ftype
                if fsid == sid and ftype == F.DATA:
                    data += payload
                if fsid == sid and flags & F.END_STREAM:
                    return bytes(data)

    def read_to_eof(self, timeout: float = 20.0) -> bytes:
        self.sock.settimeout(timeout)
        out = bytearray()
        while chunk := self.sock.recv(1 << 20):
            out += chunk
        return bytes(out)


def held_bytes(srv: ServerThread) -> int:
    """What the server holds of its connections' output: transport buffers, bytes with
    the send thread, output not yet flushed."""
    async def get() -> int:
        assert srv.h2 is not None
        total = 0
        for c in srv.h2._connections:
            t = c._transport
            total += t.get_write_buffer_size() if t is not None else 0
            total += c._outlet.inflight_bytes if c._outlet is not None else 0
            total += sum(len(b) for b in c.h2.out)
        return total
    return srv.call(get)  # type: ignore[no-any-return]


def test_a_client_that_stops_reading_cannot_grow_memory(srv: ServerThread) -> None:
    """A stream of 40 MB to a client that grants every window and reads nothing: what
    the server holds stays near the transport's high-water mark (the bytes with the
    thread count like its buffer), the handler waits, reading stops. (A handler that
    writes without ever yielding fills the transport regardless of the thread.) When the
    client reads again, every message arrives, in order: the writes made while the
    thread's send was cut short followed the rest it handed back."""
    with busy_elsewhere(srv):
        raw = RawClient(srv.port, window=2**31 - 1)
        raw.call(1, "ServerStreamPaced", b"4000:10000")  # (several below the mark in flight)

        wait_for(lambda: any(c.h2.output_paused for c in connections(srv)))
        samples = []
        for _ in range(10):
            samples.append(held_bytes(srv))
            time.sleep(0.05)
        assert max(samples) < 8 << 20, samples
        hub = hub_of(srv)
        assert hub.batches > 0 and hub.handed_back > 0
        data = raw.read_stream(1)
        msg = 5 + 10_000
        assert len(data) == 4000 * msg
        for i in range(4000):
            assert data[i * msg:(i + 1) * msg] == (
                b"\0" + (10_000).to_bytes(4, "big") + bytes([i % 256]) * 10_000), i
        raw.sock.close()
        wait_for(lambda: len(connections(srv)) == 1)  # only the busy one is left
    wait_for(lambda: hub_of(srv).busy == 0)


def test_graceful_close_waits_for_the_thread(srv: ServerThread) -> None:
    """A server stop (GOAWAY) closes a connection as soon as its last call is answered:
    the answer, still with the send thread, reaches the client whole before the FIN."""
    hub = hub_of(srv)
    stopping: threading.Thread | None = None
    with busy_elsewhere(srv), grpc.insecure_channel(f"127.0.0.1:{srv.port}",
                                                    options=BIG) as ch:
        answer = ch.unary_unary("/test.Svc/Echo").future(b"later:0.3:6000000", timeout=60)
        wait_for(lambda: hub.busy == 2)

        def stop() -> None:
            assert srv.h2 is not None
            h2 = srv.h2
            srv.call(lambda: h2.stop(30), timeout=60)
        stopping = threading.Thread(target=stop)
        stopping.start()
        assert answer.result() == b"y" * 6_000_000
    stopping.join(60)
    assert not stopping.is_alive()
    assert hub.batches > 0 and hub.stopped


def test_connection_error_with_output_at_the_thread(srv: ServerThread) -> None:
    """A connection ended by a protocol error while its answers are with the thread: the
    client gets them, then GOAWAY, then the end of the connection (the thread's dup of
    the socket does not keep it open)."""
    with busy_elsewhere(srv):
        raw = RawClient(srv.port, window=2**31 - 1)
        for sid in range(1, 40, 2):
            raw.call(sid, "Echo", b"big:200000")
        raw.sock.sendall(F.frame(F.DATA, 0, 0, b"x"))  # DATA on stream 0: PROTOCOL_ERROR
        data = raw.read_to_eof()
        raw.sock.close()
    types = [f[0] for f in split(data)]
    assert types[-1] == F.GOAWAY
    assert types.count(F.HEADERS) >= 2  # (answers of the calls read before the error)
    assert hub_of(srv).batches > 0


def parse(data: bytes) -> tuple[list[tuple[int, int, int, bytes]], int]:
    """The whole frames at the start of `data`, and the bytes they take."""
    out = []
    pos = 0
    while pos + 9 <= len(data):
        n = int.from_bytes(data[pos:pos + 3], "big")
        if pos + 9 + n > len(data):
            break
        out.append((data[pos + 3], data[pos + 4],
                    int.from_bytes(data[pos + 5:pos + 9], "big") & 0x7FFFFFFF,
                    data[pos + 9:pos + 9 + n]))
        pos += 9 + n
    return out, pos


def split(data: bytes) -> list[tuple[int, int, int, bytes]]:
    out, used = parse(data)
    assert used == len(data), "a frame cut short or bytes out of order"
    return out


def test_tls_and_unix_connections_stay_on_the_transport(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path, "localhost", ca=True)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    s = ServerThread("h2", ssl=ctx).start()
    try:
        hub = hub_of(s)
        hub.inline_writes = 0
        path = str(tmp_path / "h2.sock")

        async def listen_unix() -> Any:
            assert s.h2 is not None
            return await asyncio.get_running_loop().create_unix_server(
                s.h2.protocol_factory, path)
        unix = s.call(listen_unix)
        creds = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        with busy_elsewhere(s, creds=creds):
            for ch in (grpc.secure_channel(f"127.0.0.1:{s.port}", creds, options=BIG),
                       grpc.insecure_channel(f"unix:{path}", options=BIG)):
                with ch:
                    check_mixed_calls(ch, 0)
                    assert ch.unary_unary("/test.Svc/Echo")(b"big:3000000",
                                                            timeout=60) == b"x" * 3_000_000
                    assert all(c._outlet is None for c in connections(s))
        assert hub.batches == 0
        s.call(lambda: _close(unix))
    finally:
        s.stop()


async def _close(server: Any) -> None:
    server.close()
