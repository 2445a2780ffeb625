"""The HTTP/1.1 side of the client port (/health, /version, /metrics; the JSON gateway
later): bounded bodies, headers and pipelined output, and timeouts for slow or idle
connections."""

from __future__ import annotations

import contextlib
import socket
import time

import pytest

from petcd.api import http
from petcd.testing import MemberProcess

from .kit import MiB, guarded, run_for

# (read at run time so that the suite also runs against builds without these bounds)
MAX_BODY_BYTES: int = getattr(http, "MAX_BODY_BYTES", 4 * MiB)
REQUEST_TIMEOUT: float = getattr(http, "REQUEST_TIMEOUT", 30.0)
IDLE_TIMEOUT: float = getattr(http, "IDLE_TIMEOUT", 120.0)


def _status(sock: socket.socket, timeout: float = 10.0) -> int:
    sock.settimeout(timeout)
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    assert data.startswith(b"HTTP/1.1 "), data[:100]
    return int(data.split()[1])


def test_huge_chunked_body(member: MemberProcess) -> None:
    """A chunked POST of up to 500 MiB: refused (413) once over the body limit."""
    s = socket.create_connection(("127.0.0.1", member.client_port), timeout=2)
    s.sendall(b"POST /health HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"%x\r\n%s\r\n" % (MiB, b"x" * MiB)
    sent = [0]

    def step() -> bool:
        try:
            s.sendall(chunk)
        except OSError:
            return False
        sent[0] += 1
        return sent[0] < 500

    with guarded(member) as g:
        run_for(10.0, g, step, per_second=100)
    g.check()
    assert sent[0] * MiB < 64 * MiB, f"{sent[0]} MiB accepted"
    assert _status(s) == 413
    s.close()


def test_declared_body_too_large(member: MemberProcess) -> None:
    s = socket.create_connection(("127.0.0.1", member.client_port), timeout=5)
    s.sendall(b"POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
              % (MAX_BODY_BYTES + 1))
    assert _status(s) == 413
    s.close()


def test_huge_headers(member: MemberProcess) -> None:
    s = socket.create_connection(("127.0.0.1", member.client_port), timeout=5)
    with contextlib.suppress(OSError):  # closed while we were still sending: fine
        s.sendall(b"GET /version HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"a" * MiB)
    assert _status(s) == 431
    s.close()


def test_pipelined_requests_from_a_client_that_does_not_read(member: MemberProcess) -> None:
    """/health requests (8 KB each, 8 MB/s) pipelined without reading the answers:
    the member reads no more while it answers one (nor while its answers back up)
    instead of buffering requests or answers without bound."""
    s = socket.create_connection(("127.0.0.1", member.client_port), timeout=2)
    req = (b"GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: %s\r\n\r\n" % (b"p" * 8000)) * 100

    def step() -> bool:
        try:
            s.sendall(req)
            return True
        except OSError:  # our send buffer is full: the member stopped reading
            return False

    with guarded(member) as g:
        run_for(8.0, g, step, per_second=10)
    s.close()
    # The member answers these as fast as it can (any client may ask that much of it):
    # the bound under test is memory; latency gets a CPU-load allowance.
    g.check(p99=0.25)


@pytest.mark.slow
def test_slow_request_times_out(member: MemberProcess) -> None:
    s = socket.create_connection(("127.0.0.1", member.client_port), timeout=5)
    s.sendall(b"GET /version HTTP/1.1\r\n")
    t0 = time.monotonic()
    while time.monotonic() - t0 < REQUEST_TIMEOUT - 1:
        s.sendall(b"X: y\r\n")  # a header every second: never done
        time.sleep(1)
    assert _status(s, REQUEST_TIMEOUT) == 408
    s.close()


@pytest.mark.slow
def test_idle_connection_is_closed(member: MemberProcess) -> None:
    s = socket.create_connection(("127.0.0.1", member.client_port), timeout=5)
    s.sendall(b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n")
    assert _status(s) == 200
    s.settimeout(IDLE_TIMEOUT + 10)
    while s.recv(65536):
        pass  # the rest of the answer, then EOF when the member closes
    s.close()
