"""What a real grpc client (grpcio's C-core) receives from a petcd member for unary calls,
recorded by a TCP proxy between them: the wire properties that keep the client's work per
call small (bench/client_cost.py measures that work).

- Each answer is HEADERS, DATA, trailers (HEADERS with END_STREAM), written together:
  the client reads them in one go, never a part of an answer.
- The server sends no PING of its own (grpc-go's server, etcd's, sends a BDP probe with a
  connection WINDOW_UPDATE as requests arrive, which the client must read and acknowledge),
  and no WINDOW_UPDATE beyond its opening one while requests stay far below its windows.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from petcd.api.h2 import frames as F
from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.testing import PetcdProcess


class RecordingProxy:
    """Forwards one TCP connection to `target`, keeping what the server sent as the
    list of chunks the proxy's recv() returned (frame boundaries are found later)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.from_server: list[bytes] = []
        self._threads: list[threading.Thread] = []
        self._socks: list[socket.socket] = []
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self._threads.append(t)

    def _accept(self) -> None:
        try:
            client, _ = self.listener.accept()
        except OSError:
            return
        server = socket.create_connection(self.target)
        self._socks += [client, server]
        for src, dst, record in ((client, server, None), (server, client, self.from_server)):
            t = threading.Thread(target=self._pipe, args=(src, dst, record), daemon=True)
            t.start()
            self._threads.append(t)

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket, record: list[bytes] | None) -> None:
        try:
            while data := src.recv(1 << 16):
                if record is not None:
                    record.append(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.listener.close()
        for s in self._socks:
            s.close()
        for t in self._threads:
            t.join(10)


def server_frames(chunks: list[bytes]) -> list[tuple[int, int, int, bytes, int, int]]:
    """(type, flags, stream id, payload, chunk of its first byte, chunk of its last byte)."""
    data = b"".join(chunks)
    chunk_of: list[int] = []
    for i, c in enumerate(chunks):
        chunk_of += [i] * len(c)
    out = []
    pos = 0
    while pos + 9 <= len(data):
        n = int.from_bytes(data[pos:pos + 3], "big")
        end = pos + 9 + n
        assert end <= len(data), "the server's last frame is cut short"
        out.append((data[pos + 3], data[pos + 4], int.from_bytes(data[pos + 5:pos + 9], "big"),
                    data[pos + 9:end], chunk_of[pos], chunk_of[end - 1]))
        pos = end
    assert pos == len(data)
    return out


@pytest.fixture(scope="module")
def member(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PetcdProcess]:
    m = PetcdProcess(Path(tmp_path_factory.mktemp("client-wire")) / "m")
    try:
        m.start()
        yield m
    finally:
        m.stop()


@pytest.mark.parametrize("concurrent", [1, 16])
def test_answers_come_whole_and_the_server_sends_no_pings(member: PetcdProcess,
                                                          concurrent: int) -> None:
    host, port = member.address.rsplit(":", 1)
    proxy = RecordingProxy((host, int(port)))
    calls = 64
    try:
        with grpc.insecure_channel(proxy.address,
                                   options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
            put = ch.unary_unary("/etcdserverpb.KV/Put")

            def one(i: int) -> None:
                put(rpc.PutRequest(key=b"wire/%d" % i, value=b"v" * 256).SerializeToString(),
                    timeout=30)

            with ThreadPoolExecutor(concurrent) as pool:
                list(pool.map(one, range(calls)))
    finally:
        proxy.close()
    frames = server_frames(proxy.from_server)
    answers: dict[int, list[tuple[int, int, int, int]]] = {}
    for ftype, flags, sid, _, first, last in frames:
        if sid:
            answers.setdefault(sid, []).append((ftype, flags, first, last))
        elif ftype == F.PING:
            assert flags & F.ACK, "the server sent a PING of its own"
        elif ftype == F.WINDOW_UPDATE:
            # Only the opening one that raises the connection window.
            assert (ftype, flags, sid) == (F.WINDOW_UPDATE, 0, 0)
        else:
            assert ftype in (F.SETTINGS, F.GOAWAY), f"unexpected frame type {ftype}"
    assert sum(1 for f in frames if f[0] == F.WINDOW_UPDATE) == 1
    assert len(answers) == calls
    for sid, fs in answers.items():
        assert [(t, fl) for t, fl, _, _ in fs] == [
            (F.HEADERS, F.END_HEADERS), (F.DATA, 0),
            (F.HEADERS, F.END_HEADERS | F.END_STREAM)], f"stream {sid}: {fs}"
        assert fs[0][2] == fs[-1][3], f"stream {sid}'s answer arrived in pieces"
