"""The peer port of a member dialled by a stranger: garbage, a request with a huge
length prefix, hundreds of connections that never say hello. The member keeps serving
(a concurrent client's puts) and its memory stays bounded."""

from __future__ import annotations

import contextlib
import socket
import time
from urllib.parse import urlsplit

from petcd.testing import MemberProcess
from petcd.transport.wire import FRAME_HEADER, PROTOCOL_VERSION, REPLY, Hello, Kind

from .kit import MiB, guarded, run_for


def _peer_addr(member: MemberProcess) -> tuple[str, int]:
    u = urlsplit(member.peer_url)
    assert u.hostname is not None and u.port is not None
    return u.hostname, u.port


def test_garbage_from_strangers(member: MemberProcess) -> None:
    addr = _peer_addr(member)

    def step() -> bool:
        with socket.create_connection(addr, timeout=5) as s:
            s.sendall(b"GET / HTTP/1.1\r\n\r\n" + b"\xff" * 60000)
            s.settimeout(5)
            try:
                while s.recv(65536):
                    pass  # closed by the member
            except ConnectionResetError:
                pass
        return True

    with guarded(member) as g:
        run_for(4.0, g, step, per_second=50)
    g.check()


def test_huge_request_length_prefix(member: MemberProcess) -> None:
    """An anonymous REQUEST (what a joining member may send) declaring 60 MiB: refused
    before any memory is set aside for it."""
    addr = _peer_addr(member)
    socks = []
    with guarded(member) as g:
        for _ in range(3):
            s = socket.create_connection(addr, timeout=5)
            s.sendall(Hello(PROTOCOL_VERSION, Kind.REQUEST, 0, 0x1234, 0).encode()
                      + FRAME_HEADER.pack(60 * MiB) + b"x" * 1000)
            socks.append(s)
        time.sleep(1.0)
    g.check()
    for s in socks:
        s.settimeout(5)
        reply = s.recv(REPLY.size)
        assert len(reply) == REPLY.size  # the hello was answered, then the cut:
        with contextlib.suppress(ConnectionResetError):
            assert s.recv(65536) == b""
        s.close()


def test_many_idle_connections(member: MemberProcess) -> None:
    """Hundreds of connections that never say hello: each costs a small buffer, and only
    a bounded number are kept."""
    addr = _peer_addr(member)
    socks: list[socket.socket] = []

    def step() -> bool:
        try:
            socks.append(socket.create_connection(addr, timeout=5))
        except OSError:
            return False
        return len(socks) < 600

    with guarded(member) as g:
        run_for(4.0, g, step, per_second=300)
        time.sleep(0.5)
    for s in socks:
        s.close()
    g.check()
