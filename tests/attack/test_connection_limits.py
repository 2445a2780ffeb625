"""Front-door bounds that depend on how a member wires its listeners: the connection
limit counts a separate --listen-client-http-urls port, and the grpc.aio fallback
(--experimental-grpc-server=grpcio) gets grpc-go's ping policy, the handshake timeout
and the connection limit too."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import grpc
import pytest

from petcd.api.h2 import frames as F
from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.testing import PetcdProcess

from .kit import PUT, Raw


def _connect(port: int, wait: float) -> socket.socket | None:
    """An HTTP/1.1 request started on a new connection; None if the member closed it
    without reading (EOF or reset within `wait` seconds)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=wait)
    try:
        s.sendall(b"GET /version HTTP/1.1\r\n")
        if s.recv(1) == b"":
            s.close()
            return None
    except (ConnectionResetError, BrokenPipeError):
        s.close()
        return None
    except TimeoutError:
        s.settimeout(10)
        return s  # held open: the request is not finished
    raise AssertionError("an unfinished request was answered")


def _fill(port: int, limit: int) -> list[socket.socket]:
    """Connections until one is refused. The readiness probe's connection may still be
    counted for a moment after it ended: limit - 1 or limit are held."""
    held: list[socket.socket] = []
    while (s := _connect(port, 0.5)) is not None:
        held.append(s)
        assert len(held) <= limit, "no connection refused"
    assert len(held) >= limit - 1
    return held


def _put(m: PetcdProcess) -> None:
    with grpc.insecure_channel(m.address) as ch:
        ch.unary_unary(PUT)(rpc.PutRequest(key=b"k", value=b"v").SerializeToString(),
                            timeout=10)


def _put_soon(m: PetcdProcess, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return _put(m)
        except grpc.RpcError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_separate_http_port_counts_against_the_limit(tmp_path: Path) -> None:
    m = PetcdProcess(tmp_path / "m", separate_http=True,
                     args=["--experimental-max-client-connections=3"])
    with m.start():
        assert m.http_port is not None
        held = _fill(m.http_port, 3)
        # one count for both ports: the gRPC port refuses now too
        assert _connect(m.client_port, 2.0) is None
        for s in held:
            s.close()
        _put_soon(m)  # given back


@pytest.fixture
def grpcio_member(tmp_path: Path) -> PetcdProcess:
    return PetcdProcess(tmp_path / "m", args=[
        "--experimental-grpc-server=grpcio", "--experimental-max-client-connections=3",
        "--experimental-client-handshake-timeout=2s"])


def test_grpcio_fallback_bounds(grpcio_member: PetcdProcess) -> None:
    m = grpcio_member
    with m.start():
        # grpc-go's ping policy: early pings are strikes, the third ends the connection
        c = Raw(m.client_port).reading()
        c.send(F.frame(F.PING, 0, 0, b"12345678") * 4)
        assert c.wait_closed(10)
        assert c.goaway is not None and c.goaway[1:] == (F.ENHANCE_YOUR_CALM,
                                                         b"too_many_pings")
        c.close()
        # a connection that says nothing is closed after the handshake timeout
        silent = socket.create_connection(("127.0.0.1", m.client_port), timeout=10)
        t0 = time.monotonic()
        assert silent.recv(1) == b""
        assert time.monotonic() - t0 < 8
        silent.close()
        # the connection limit counts what the mux accepts (HTTP/1.1 and gRPC)
        held = _fill(m.client_port, 3)
        with pytest.raises(grpc.RpcError):
            _put(m)
        for s in held:
            s.close()
        _put_soon(m)
