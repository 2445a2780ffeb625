"""HTTP/1.1 details of the gateway against etcd 3.4 and petcd side by side: a watch and
a lease keep-alive whose request body stays open (chunked) get answers as each
request arrives, as grpc-gateway feeds them; plain keep-alive requests (petcd's fast
path) and unusual ones (h11's path) are answered alike."""

from __future__ import annotations

import base64
import json
import socket
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from petcd.testing import EtcdProcess, MemberProcess, PetcdProcess, have_etcd

pytestmark = pytest.mark.skipif(not have_etcd(), reason="etcd 3.4 not installed")


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[MemberProcess]]:
    base = tmp_path_factory.mktemp("gw-streams")
    started: list[MemberProcess] = []
    try:
        for m in (EtcdProcess(base / "etcd"), PetcdProcess(base / "petcd")):
            started.append(m)
            m.start()
        yield started
    finally:
        for m in started:
            m.stop()


class Conn:
    """One raw HTTP/1.1 connection (the bytes on the wire are the point)."""

    def __init__(self, m: MemberProcess) -> None:
        self.sock = socket.create_connection(("127.0.0.1", m.client_port), timeout=20)
        self.buf = b""
        self.pending = b""  # a stream's bytes not yet a whole JSON line
        self.host = f"127.0.0.1:{m.client_port}"

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("connection closed")
        self.buf += data

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def head(self) -> tuple[int, dict[str, str]]:
        status = int(self._line().split()[1])
        headers = {}
        while line := self._line():
            k, v = line.decode().split(":", 1)
            headers[k.strip().lower()] = v.strip()
        return status, headers

    def body(self, headers: dict[str, str]) -> bytes:
        n = int(headers["content-length"])
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def chunk(self) -> bytes:
        size = int(self._line(), 16)
        while len(self.buf) < size + 2:
            self._fill()
        out, self.buf = self.buf[:size], self.buf[size + 2:]
        return out

    def message(self) -> Any:
        """The next JSON line of a chunked stream (etcd may split one across chunks)."""
        while b"\n" not in self.pending:
            self.pending += self.chunk()
        line, self.pending = self.pending.split(b"\n", 1)
        return json.loads(line)

    def close(self) -> None:
        self.sock.close()


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _open_stream(c: Conn, path: str, first: dict[str, Any]) -> None:
    c.send((f"POST {path} HTTP/1.1\r\nHost: {c.host}\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n").encode() + _chunk(json.dumps(first).encode()))


def _put(c: Conn, key: str, value: str) -> int:
    body = json.dumps({"key": b64(key), "value": b64(value)}).encode()
    c.send((f"POST /v3/kv/put HTTP/1.1\r\nHost: {c.host}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body)
    status, headers = c.head()
    c.body(headers)
    return status


def _watchers(m: MemberProcess) -> float:
    text = urllib.request.urlopen(m.endpoint + "/metrics", timeout=20).read().decode()
    for family in text_string_to_metric_families(text):
        if family.name == "etcd_debugging_mvcc_watcher_total":
            return float(family.samples[0].value)
    raise AssertionError("no watcher gauge")


def _wait(cond: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _watch_on_open_body(m: MemberProcess, framing: str) -> list[Any]:
    """The watch starts at the first request while the body is still open (etcd's
    gateway sends each request on as it is decoded): a put made then, before the body
    ends, is the watch's first event. etcd's Go HTTP/1 server holds the answer until
    the body ends, so the answer is read after that."""
    w, p = Conn(m), Conn(m)
    try:
        first = json.dumps({"create_request": {"key": b64("ob/a")}}).encode()
        if framing == "chunked":
            _open_stream(w, "/v3/watch", {"create_request": {"key": b64("ob/a")}})
            rest = b"0\r\n\r\n"
        else:  # a Content-Length body of which only the first request has come
            rest = b" " * 1000
            w.send((f"POST /v3/watch HTTP/1.1\r\nHost: {w.host}\r\nContent-Length: "
                    f"{len(first) + len(rest)}\r\n\r\n").encode() + first)
        _wait(lambda: _watchers(m) >= 1, "the watch never started")
        assert _put(p, "ob/a", "1") == 200
        w.send(rest)
        status, headers = w.head()
        created = w.message()["result"]
        event = w.message()["result"]
        return [status, headers.get("transfer-encoding"), created.get("created"),
                [(e["kv"]["key"], e["kv"]["value"]) for e in event["events"]]]
    finally:
        w.close()
        p.close()
        _wait(lambda: _watchers(m) == 0, "the watch outlived its connection")


@pytest.mark.parametrize("framing", ["chunked", "length"])
def test_watch_starts_before_the_body_ends(members: list[MemberProcess], framing: str
                                           ) -> None:
    etcd, petcd = (_watch_on_open_body(m, framing) for m in members)
    assert petcd == etcd == [200, "chunked", True, [(b64("ob/a"), b64("1"))]]


def test_petcd_answers_each_request_as_it_arrives(members: list[MemberProcess]) -> None:
    """Full duplex (grpc-gateway's design; etcd's Go HTTP/1 server cannot, see above):
    created, an event, then a cancel sent through the same open body is answered."""
    petcd = members[1]
    w, p = Conn(petcd), Conn(petcd)
    try:
        _open_stream(w, "/v3/watch", {"create_request": {"key": b64("sw/a")}})
        assert w.head()[0] == 200
        created = w.message()["result"]
        assert created["created"] is True
        assert _put(p, "sw/a", "1") == 200
        assert [e["kv"]["key"] for e in w.message()["result"]["events"]] == [b64("sw/a")]
        w.send(_chunk(json.dumps({"cancel_request": {"watch_id": created.get(
            "watch_id", "0")}}).encode()))
        assert w.message()["result"]["canceled"] is True
        w.send(b"0\r\n\r\n")
    finally:
        w.close()
        p.close()
    _wait(lambda: _watchers(petcd) == 0, "the watch outlived its connection")


def test_petcd_lease_keepalive_stream(members: list[MemberProcess]) -> None:
    c = Conn(members[1])
    k = Conn(members[1])
    try:
        body = json.dumps({"TTL": "60"}).encode()
        c.send((f"POST /v3/lease/grant HTTP/1.1\r\nHost: {c.host}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode() + body)
        _, headers = c.head()
        lease = json.loads(c.body(headers))["ID"]
        _open_stream(k, "/v3/lease/keepalive", {"ID": lease})
        assert k.head()[0] == 200
        for _ in range(3):  # each request on the open body gets its answer
            got = k.message()["result"]
            assert (got["ID"], got["TTL"]) == (lease, "60")
            k.send(_chunk(json.dumps({"ID": lease}).encode()))
    finally:
        k.close()
        c.close()


def test_streamed_body_is_bounded(members: list[MemberProcess]) -> None:
    """A request still arriving may hold at most twice the message limit: a body of
    one endless JSON string ends the requests; the member keeps serving."""
    petcd = members[1]
    w = Conn(petcd)
    try:
        _open_stream(w, "/v3/watch", {"create_request": {"key": b64("bd/a")}})
        assert w.head()[0] == 200
        w.message()
        w.send(_chunk(b'{"create_request": {"key": "' + b"A" * 65536))
        for _ in range(200):  # ~13 MiB: far over 2 x (1.5 MiB + overhead)
            try:
                w.send(_chunk(b"A" * 65536))
            except OSError:
                break  # the member stopped reading (or closed): both are bounded
    finally:
        w.close()
    c = Conn(petcd)
    try:
        assert _put(c, "bd/b", "1") == 200
    finally:
        c.close()


def _wire(m: MemberProcess, raw: bytes, count: int, *, split: int = 0
          ) -> list[tuple[int, dict[str, str], bytes]]:
    c = Conn(m)
    c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        raw = raw.replace(b"HOST", c.host.encode())
        for i in range(0, len(raw), split or len(raw)):  # in pieces, as clients may send
            c.send(raw[i:i + (split or len(raw))])
        out = []
        for _ in range(count):
            status, headers = c.head()
            headers.pop("date", None)
            out.append((status, headers, c.body(headers)))
        return out
    finally:
        c.close()


PUT = (b"POST /v3/kv/range HTTP/1.1\r\nHost: HOST\r\nContent-Length: 15\r\n\r\n"
       b'{"key":"eHl6"} ')


def test_fast_and_h11_paths_answer_alike(members: list[MemberProcess]) -> None:
    """The same request alone (petcd's fast path), pipelined twice (h11 parses), with
    odd header case and blanks, and with a chunked body (h11)."""
    petcd = members[1]
    alone = _wire(petcd, PUT, 1)
    assert alone[0][0] == 200
    assert _wire(petcd, PUT + PUT, 2) == alone * 2
    assert _wire(petcd, PUT, 1, split=len(PUT) - 15) == alone  # head, then body
    assert _wire(petcd, PUT, 1, split=7) == alone
    odd = PUT.replace(b"Content-Length: 15", b"CONTENT-length:    15  ")
    assert _wire(petcd, odd, 1) == alone
    chunked = (b"POST /v3/kv/range HTTP/1.1\r\nHost: HOST\r\nTransfer-Encoding: chunked\r\n"
               b"\r\n" + _chunk(b'{"key":"eHl6"}') + b"0\r\n\r\n")
    assert _wire(petcd, chunked, 1) == alone
    # etcd answers the same headers (its Date aside) and the same JSON modulo header
    etcd_alone = _wire(members[0], PUT, 1)
    assert set(etcd_alone[0][1]) == set(alone[0][1])


@pytest.mark.parametrize("raw, status", [
    # obs-fold, a blank in a name, no Host, HTTP/1.0: h11 decides, as before the fast
    # path existed (and as Go's server does for these)
    (b"GET /version HTTP/1.1\r\nHost: HOST\r\nX-A: 1\r\n  folded\r\n\r\n", 200),
    (b"GET /version HTTP/1.1\r\nHost: HOST\r\nX A: b\r\n\r\n", 400),
    (b"GET /version HTTP/1.1\r\n\r\n", 400),
    (b"GET /version HTTP/1.0\r\n\r\n", 200),
])
def test_unusual_requests_go_to_h11(members: list[MemberProcess], raw: bytes,
                                    status: int) -> None:
    c = Conn(members[1])
    try:
        c.send(raw.replace(b"HOST", c.host.encode()))
        assert c.head()[0] == status
    finally:
        c.close()
