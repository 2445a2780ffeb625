"""A client that grants every flow-control window and then reads nothing cannot make a
streaming handler's output pile up in the server: past WRITE_QUOTA bytes a connection's
streamed output goes to the transport at once, whose high-water mark pauses the writer
(connection.WRITE_QUOTA; grpc-go bounds it with its per-stream write quota). Raw HTTP/2
clients on real sockets, against the test service and against a real member (Snapshot,
whose handler writes 1 MiB chunks without ever waiting)."""

from __future__ import annotations

import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import hpack
import pytest
from h2_service import ServerThread

from petcd.api.h2 import frames as F
from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.testing import PetcdProcess

HUGE = 2**31 - 1


def wait_for(pred: Callable[[], object], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


class RawClient:
    """An HTTP/2 client on a plain socket that grants every window and reads only when
    told to."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.sock = socket.create_connection(address)
        self.enc = hpack.Encoder()
        self.sock.sendall(F.PREFACE + F.settings_frame({F.SETTINGS_INITIAL_WINDOW_SIZE: HUGE})
                          + F.frame(F.WINDOW_UPDATE, 0, 0,
                                    (HUGE - F.DEFAULT_WINDOW).to_bytes(4, "big")))

    def call(self, sid: int, path: str, body: bytes) -> None:
        block = bytes(self.enc.encode([(":method", "POST"), (":scheme", "http"),
                                       (":path", path), (":authority", "t"),
                                       ("content-type", "application/grpc")]))
        msg = b"\0" + len(body).to_bytes(4, "big") + body
        self.sock.sendall(F.frame(F.HEADERS, F.END_HEADERS, sid, block)
                          + F.frame(F.DATA, F.END_STREAM, sid, msg))

    def read_stream(self, sid: int, timeout: float = 60.0) -> bytes:
        """The DATA of stream `sid` up to its END_STREAM."""
        self.sock.settimeout(timeout)
        buf = bytearray()
        data = bytearray()
        while True:
            chunk = self.sock.recv(1 << 20)
            assert chunk, "the connection ended before the stream did"
            buf += chunk
            pos = 0
            while pos + 9 <= len(buf):
                n = int.from_bytes(buf[pos:pos + 3], "big")
                if pos + 9 + n > len(buf):
                    break
                ftype, flags = buf[pos + 3], buf[pos + 4]
                fsid = int.from_bytes(buf[pos + 5:pos + 9], "big") & 0x7FFFFFFF
                if fsid == sid and ftype == F.DATA:
                    data += buf[pos + 9:pos + 9 + n]
                pos += 9 + n
                if fsid == sid and flags & F.END_STREAM:
                    return bytes(data)
            del buf[:pos]


@pytest.fixture
def srv() -> Iterator[ServerThread]:
    s = ServerThread("h2").start()
    yield s
    s.stop()


def held_bytes(srv: ServerThread) -> int:
    """The server's output not yet in the kernel: transport buffers, unflushed frames."""
    async def get() -> int:
        assert srv.h2 is not None
        return sum((c._transport.get_write_buffer_size() if c._transport else 0)
                   + sum(len(b) for b in c.h2.out) for c in srv.h2._connections)
    return srv.call(get)  # type: ignore[no-any-return]


def paused(srv: ServerThread) -> bool:
    async def get() -> bool:
        assert srv.h2 is not None
        return any(c.h2.output_paused for c in srv.h2._connections)
    return srv.call(get)  # type: ignore[no-any-return]


def test_a_handler_that_never_yields_is_paused(srv: ServerThread) -> None:
    """40 MB written by a handler that never yields, to a client that reads nothing: the
    server holds about the high-water mark plus one message, not the 40 MB (it held all
    of it before WRITE_QUOTA); read later, every message arrives in order."""
    raw = RawClient(("127.0.0.1", srv.port))
    raw.call(1, "/test.Svc/ServerStreamWrite", b"400:100000:0")
    wait_for(lambda: paused(srv))
    samples = []
    for _ in range(5):
        samples.append(held_bytes(srv))
        time.sleep(0.05)
    assert max(samples) < 4 << 20, samples
    data = raw.read_stream(1)
    msg = 5 + 100_000
    assert len(data) == 400 * msg
    for i in range(400):
        assert data[i * msg:(i + 1) * msg] == (
            b"\0" + (100_000).to_bytes(4, "big") + bytes([i % 256]) * 100_000), i
    raw.sock.close()


def anon_mib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) // 1024
    raise AssertionError("no RssAnon")


def test_snapshot_to_a_client_that_reads_nothing() -> None:
    """A member's Snapshot (60 MB of data) to a client that grants every window and
    reads nothing: the member's anonymous memory grows by a few MiB, not by the data."""
    with tempfile.TemporaryDirectory(prefix="write-quota-") as tmp:
        m = PetcdProcess(Path(tmp) / "m")
        m.start()
        try:
            assert m.proc is not None
            with grpc.insecure_channel(m.address) as ch:
                put = ch.unary_unary("/etcdserverpb.KV/Put",
                                     request_serializer=rpc.PutRequest.SerializeToString,
                                     response_deserializer=rpc.PutResponse.FromString)
                for i in range(60):
                    put(rpc.PutRequest(key=b"big%d" % i, value=bytes([i]) * 1_000_000),
                        timeout=30)
            before = anon_mib(m.proc.pid)
            host, port = m.address.rsplit(":", 1)
            raw = RawClient((host, int(port)))
            raw.call(1, "/etcdserverpb.Maintenance/Snapshot", b"")
            time.sleep(1.5)  # (before WRITE_QUOTA the whole snapshot was queued by now)
            grown = anon_mib(m.proc.pid) - before
            raw.sock.close()
            assert grown < 25, f"member memory grew by {grown} MiB"
        finally:
            m.stop()
