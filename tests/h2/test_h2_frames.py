"""petcd's HTTP/2 server at the frame level: raw frames and the h2 library as a client
for what gRPC clients never do on purpose (bad frames, tiny windows, padding,
CONTINUATION, resets, GOAWAY), and HTTP/1.1 on the same port."""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings
import hpack
import pytest
from h2_service import EVENTS, ServerThread, h2_server

from petcd.api.h2 import ServerConfig
from petcd.api.h2 import frames as F

__all__ = ["h2_server"]  # fixture

Frame = tuple[int, int, int, bytes]


def grpc_msg(body: bytes) -> bytes:
    return b"\0" + len(body).to_bytes(4, "big") + body


class Raw:
    """A client writing raw frames (hpack for its header blocks)."""

    def __init__(self, port: int, settings: dict[int, int] | None = None,
                 start: bool = True) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.enc = hpack.Encoder()
        self.dec = hpack.Decoder()
        self.buf = b""
        if start:
            self.send(F.PREFACE + F.settings_frame(settings or {}))

    def send(self, *frames: bytes) -> None:
        self.sock.sendall(b"".join(frames))

    def block(self, path: str = "/test.Svc/Echo", *extra: tuple[str, str]) -> bytes:
        return bytes(self.enc.encode([
            (":method", "POST"), (":scheme", "http"), (":path", path),
            (":authority", "test"), ("content-type", "application/grpc"), ("te", "trailers"),
            *extra]))

    def call(self, sid: int, body: bytes, path: str = "/test.Svc/Echo",
             *extra: tuple[str, str]) -> None:
        self.send(F.frame(F.HEADERS, F.END_HEADERS, sid, self.block(path, *extra)),
                  F.frame(F.DATA, F.END_STREAM, sid, grpc_msg(body)))

    def read_frame(self) -> Frame | None:
        while True:
            if len(self.buf) >= 9:
                hi, lo, ftype, flags, sid = F.HEADER.unpack_from(self.buf)
                n = hi << 16 | lo
                if len(self.buf) >= 9 + n:
                    payload = self.buf[9:9 + n]
                    self.buf = self.buf[9 + n:]
                    return ftype, flags, sid, payload
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                return None
            if not chunk:
                return None
            self.buf += chunk

    def frames(self, until: Any) -> list[Frame]:
        """Frames until `until(frame)` is true (included) or the connection closes."""
        out = []
        while (f := self.read_frame()) is not None:
            out.append(f)
            if until(f):
                break
        return out

    def goaway(self) -> tuple[int, int]:
        """(last stream id, error code) of the GOAWAY that must come."""
        fs = self.frames(lambda f: f[0] == F.GOAWAY)
        assert fs and fs[-1][0] == F.GOAWAY, fs
        payload = fs[-1][3]
        return F.u32(payload[:4]), F.u32(payload[4:8])

    def response(self, sid: int) -> tuple[list[list[tuple[str, str]]], bytes]:
        """Header blocks and data of one stream, until its END_STREAM."""
        blocks: list[list[tuple[str, str]]] = []
        data = b""
        for ftype, _flags, fsid, payload in self.frames(
                lambda f: f[2] == sid and f[1] & F.END_STREAM and f[0] in (F.HEADERS, F.DATA)):
            if ftype == F.HEADERS:
                decoded = self.dec.decode(payload, raw=True)
                if fsid == sid:
                    blocks.append([(k.decode(), v.decode()) for k, v in decoded])
            elif ftype == F.DATA and fsid == sid:
                data += payload
        return blocks, data

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw(h2_server: ServerThread) -> Iterator[Raw]:
    c = Raw(h2_server.port)
    yield c
    c.close()


def status_of(blocks: list[list[tuple[str, str]]]) -> tuple[str, str]:
    last = dict(blocks[-1])
    return last.get("grpc-status", "?"), last.get("grpc-message", "")


def test_unary_call_frames(raw: Raw) -> None:
    raw.call(1, b"hi")
    blocks, data = raw.response(1)
    assert dict(blocks[0])[":status"] == "200"
    assert dict(blocks[0])["content-type"] == "application/grpc"
    assert data == grpc_msg(b"hi")
    assert status_of(blocks) == ("0", "")


def test_trailers_only_for_errors(raw: Raw) -> None:
    raw.call(1, b"", "/test.Svc/Missing")
    blocks, data = raw.response(1)
    assert len(blocks) == 1 and data == b""  # one HEADERS: status, content-type, grpc-status
    h = dict(blocks[0])
    assert (h[":status"], h["grpc-status"]) == ("200", "12")
    assert h["grpc-message"] == "unknown method Missing for service test.Svc"
    raw.call(3, b"abort:NOT_FOUND:100% gone\n")
    blocks, _ = raw.response(3)
    assert len(blocks) == 1 and status_of(blocks) == ("5", "100%25 gone%0A")


def test_compressed_requests_are_unimplemented(raw: Raw) -> None:
    raw.call(1, b"x", "/test.Svc/Echo", ("grpc-encoding", "gzip"))
    blocks, _ = raw.response(1)
    assert status_of(blocks) == (
        "12", 'grpc: Decompressor is not installed for grpc-encoding "gzip"')


def test_grpc_timeout_deadline(raw: Raw) -> None:
    raw.call(1, b"sleep:5:raw-deadline", "/test.Svc/Echo", ("grpc-timeout", "100m"))
    t0 = time.monotonic()
    blocks, _ = raw.response(1)
    assert status_of(blocks) == ("4", "Deadline Exceeded")
    assert time.monotonic() - t0 < 2
    raw.call(3, b"x", "/test.Svc/Echo", ("grpc-timeout", "soon"))
    assert status_of(raw.response(3)[0])[0] == "13"


def test_deadlines_of_a_connection_each_expire_on_time(raw: Raw) -> None:
    """One timer serves a connection's deadlines: a call with an earlier deadline
    than those open re-arms it, a call that ended leaves it armed harmlessly, and each
    call still expires at its own deadline."""
    raw.call(1, b"sleep:5:raw-late", "/test.Svc/Echo", ("grpc-timeout", "3S"))
    raw.call(3, b"x", "/test.Svc/Echo", ("grpc-timeout", "150m"))  # answered at once
    raw.call(5, b"sleep:5:raw-early", "/test.Svc/Echo", ("grpc-timeout", "200m"))
    t0 = time.monotonic()
    assert status_of(raw.response(3)[0])[0] == "0"
    assert status_of(raw.response(5)[0]) == ("4", "Deadline Exceeded")
    assert time.monotonic() - t0 < 2  # not held until the 3 s one
    assert status_of(raw.response(1)[0]) == ("4", "Deadline Exceeded")
    assert time.monotonic() - t0 >= 2


def test_rst_stream_cancels_the_handler(raw: Raw) -> None:
    raw.call(1, b"sleep:5:raw-rst")
    time.sleep(0.2)
    raw.send(F.rst_stream(1, F.CANCEL))
    deadline = time.monotonic() + 5
    while "cancelled:raw-rst" not in EVENTS or "done:raw-rst" not in EVENTS:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    raw.call(3, b"still alive")  # the connection goes on
    assert raw.response(3)[1] == grpc_msg(b"still alive")


def test_ping_is_acknowledged(raw: Raw) -> None:
    raw.send(F.frame(F.PING, 0, 0, b"12345678"))
    fs = raw.frames(lambda f: f[0] == F.PING)
    assert fs[-1] == (F.PING, F.ACK, 0, b"12345678")


def test_continuation_padding_priority_and_request_trailers(raw: Raw) -> None:
    block = raw.block()
    raw.send(
        F.frame(F.PRIORITY, 0, 1, b"\0\0\0\0\x10"),
        # HEADERS: padded, with priority, its block split over two CONTINUATIONs
        F.frame(F.HEADERS, F.PADDED | F.PRIORITY_FLAG, 1,
                b"\x03" + b"\0\0\0\0\x10" + block[:5] + b"\0\0\0"),
        F.frame(F.CONTINUATION, 0, 1, block[5:9]),
        F.frame(F.CONTINUATION, F.END_HEADERS, 1, block[9:]),
        # the message in two DATA frames, the first padded
        F.frame(F.DATA, F.PADDED, 1, b"\x04" + grpc_msg(b"split")[:4] + b"\0\0\0\0"),
        F.frame(F.DATA, 0, 1, grpc_msg(b"split")[4:]),
        # request trailers end the stream
        F.frame(F.HEADERS, F.END_HEADERS | F.END_STREAM, 1,
                bytes(raw.enc.encode([("x-request-trailer", "1")]))))
    blocks, data = raw.response(1)
    assert data == grpc_msg(b"split") and status_of(blocks) == ("0", "")


def test_concurrent_streams_in_one_write(raw: Raw) -> None:
    sids = range(1, 400, 2)
    raw.send(*(F.frame(F.HEADERS, F.END_HEADERS, s, raw.block()) +
               F.frame(F.DATA, F.END_STREAM, s, grpc_msg(b"s%d" % s)) for s in sids))
    got: dict[int, bytes] = {}
    ended: set[int] = set()
    while len(ended) < len(sids):
        f = raw.read_frame()
        assert f is not None
        ftype, flags, sid, payload = f
        if ftype == F.DATA:
            got[sid] = got.get(sid, b"") + payload
        elif ftype == F.HEADERS:
            raw.dec.decode(payload)
            if flags & F.END_STREAM:
                ended.add(sid)
    assert ended == set(sids)
    assert all(got[s] == grpc_msg(b"s%d" % s) for s in sids)


@pytest.mark.parametrize(("name", "frames", "code"), [
    ("DATA on stream 0", [F.frame(F.DATA, 0, 0, b"x")], F.PROTOCOL_ERROR),
    ("HEADERS on stream 0", [F.frame(F.HEADERS, F.END_HEADERS, 0, b"\x82")], F.PROTOCOL_ERROR),
    ("even stream id", [F.frame(F.HEADERS, F.END_HEADERS, 2, b"\x82")], F.PROTOCOL_ERROR),
    ("frame over max size", [F.frame(F.DATA, 0, 1, b"x" * 20000)], F.FRAME_SIZE_ERROR),
    ("bad HPACK index", [F.frame(F.HEADERS, F.END_HEADERS, 1, b"\xff\x7f")],
     F.COMPRESSION_ERROR),
    ("CONTINUATION alone", [F.frame(F.CONTINUATION, F.END_HEADERS, 1, b"\x82")],
     F.PROTOCOL_ERROR),
    ("frame between HEADERS and CONTINUATION",
     [F.frame(F.HEADERS, 0, 1, b"\x83"), F.frame(F.PING, 0, 0, b"x" * 8)], F.PROTOCOL_ERROR),
    ("PING of 7 bytes", [F.frame(F.PING, 0, 0, b"x" * 7)], F.FRAME_SIZE_ERROR),
    ("PING on a stream", [F.frame(F.PING, 0, 1, b"x" * 8)], F.PROTOCOL_ERROR),
    ("SETTINGS of 5 bytes", [F.frame(F.SETTINGS, 0, 0, b"x" * 5)], F.FRAME_SIZE_ERROR),
    ("SETTINGS ACK with payload", [F.frame(F.SETTINGS, F.ACK, 0, b"\0" * 6)],
     F.FRAME_SIZE_ERROR),
    ("initial window too large",
     [F.settings_frame({F.SETTINGS_INITIAL_WINDOW_SIZE: 2**31})], F.FLOW_CONTROL_ERROR),
    ("max frame size too small",
     [F.settings_frame({F.SETTINGS_MAX_FRAME_SIZE: 100})], F.PROTOCOL_ERROR),
    ("WINDOW_UPDATE of 0 on the connection", [F.window_update(0, 0)], F.PROTOCOL_ERROR),
    ("connection window overflow", [F.window_update(0, 2**31 - 1)], F.FLOW_CONTROL_ERROR),
    ("RST_STREAM on an idle stream", [F.rst_stream(5, F.CANCEL)], F.PROTOCOL_ERROR),
    ("DATA on an idle stream", [F.frame(F.DATA, 0, 7, b"x")], F.PROTOCOL_ERROR),
    ("PUSH_PROMISE from a client", [F.frame(F.PUSH_PROMISE, 0, 1, b"\0\0\0\2")],
     F.PROTOCOL_ERROR),
    ("padding beyond the frame", [F.frame(F.HEADERS, F.PADDED | F.END_HEADERS, 1, b"\x09\x82")],
     F.PROTOCOL_ERROR),
])
def test_connection_errors(raw: Raw, name: str, frames: list[bytes], code: int) -> None:
    raw.send(*frames)
    assert raw.goaway()[1] == code, name
    assert raw.read_frame() is None  # then the connection is closed


def test_first_frame_must_be_settings(h2_server: ServerThread) -> None:
    c = Raw(h2_server.port, start=False)
    c.send(F.PREFACE + F.frame(F.PING, 0, 0, b"x" * 8))
    assert c.goaway()[1] == F.PROTOCOL_ERROR
    c.close()


def test_stream_errors_keep_the_connection(raw: Raw) -> None:
    raw.call(1, b"sleep:1:stream-err")
    raw.send(F.window_update(1, 0), F.frame(F.PRIORITY, 0, 3, b"\0\0"))
    fs = raw.frames(lambda f: f[0] == F.RST_STREAM and f[2] == 3)
    resets = {(f[2], F.u32(f[3])) for f in fs if f[0] == F.RST_STREAM}
    assert resets == {(1, F.PROTOCOL_ERROR), (3, F.FRAME_SIZE_ERROR)}
    raw.call(5, b"ok")
    assert raw.response(5)[1] == grpc_msg(b"ok")


def test_unknown_frame_types_are_ignored(raw: Raw) -> None:
    raw.send(F.frame(0x42, 0xFF, 0, b"whatever"), F.frame(0x43, 0, 1, b""))
    raw.call(1, b"ok")
    assert raw.response(1)[1] == grpc_msg(b"ok")


def test_flow_control_respects_a_small_client_window(h2_server: ServerThread) -> None:
    """The client allows 1000 bytes per stream: the server sends no more until the
    client's WINDOW_UPDATEs, with the h2 library tracking windows on the client side."""
    cfg = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
    conn = h2.connection.H2Connection(cfg)
    conn.local_settings = h2.settings.Settings(client=True, initial_values={
        h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1000})
    conn.initiate_connection()
    sock = socket.create_connection(("127.0.0.1", h2_server.port), timeout=5)
    size = 300_000
    conn.send_headers(1, [(":method", "POST"), (":scheme", "http"),
                          (":path", "/test.Svc/Echo"), (":authority", "t"),
                          ("content-type", "application/grpc"), ("te", "trailers")])
    conn.send_data(1, grpc_msg(b"big:%d" % size), end_stream=True)
    sock.sendall(conn.data_to_send())
    received = 0
    unacked = 0
    ended = False
    status = None
    while not ended:
        chunk = sock.recv(65536)
        assert chunk, "connection closed"
        for ev in conn.receive_data(chunk):
            if isinstance(ev, h2.events.DataReceived):
                received += len(ev.data)
                unacked += ev.flow_controlled_length
                assert unacked <= 1000  # never beyond what the client allowed
            elif isinstance(ev, h2.events.TrailersReceived):
                status = dict(ev.headers)["grpc-status"]
            elif isinstance(ev, h2.events.StreamEnded):
                ended = True
        if unacked >= 700 and not ended:  # hand out credit late, in pieces
            conn.acknowledge_received_data(unacked, 1)
            unacked = 0
        sock.sendall(conn.data_to_send())
    assert received == size + 5 and status == "0"
    sock.close()


def test_refused_streams_beyond_the_limit() -> None:
    s = ServerThread("h2", ServerConfig(max_concurrent_streams=2)).start()
    try:
        c = Raw(s.port)
        for sid in (1, 3, 5):
            c.call(sid, b"sleep:0.5:limit%d" % sid)
        fs = c.frames(lambda f: f[0] == F.RST_STREAM)
        assert (fs[-1][2], F.u32(fs[-1][3])) == (5, F.REFUSED_STREAM)
        assert c.response(1)[1] == grpc_msg(b"slept")
        assert c.response(3)[1] == grpc_msg(b"slept")
        c.close()
    finally:
        s.stop()


def test_http1_on_the_same_port(h2_server: ServerThread) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", h2_server.port, timeout=5)
    for path in ("/health", "/version"):  # keep-alive: two requests, one connection
        conn.request("GET", path)
        r = conn.getresponse()
        assert (r.status, r.read()) == (200, f"GET {path} over HTTP/1.1".encode())
    conn.close()
    # A client that sends less than a preface's worth, then HTTP/1.1, is still served.
    sock = socket.create_connection(("127.0.0.1", h2_server.port), timeout=5)
    sock.sendall(b"P")
    time.sleep(0.05)
    sock.sendall(b"OST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n")
    assert b"POST /x over HTTP/1.1" in sock.recv(4096)
    sock.close()


def test_graceful_stop_finishes_calls_and_sends_goaway() -> None:
    s = ServerThread("h2").start()
    c = Raw(s.port)
    c.call(1, b"sleep:0.5:drain")
    time.sleep(0.1)
    stopper = threading.Thread(target=s.stop, kwargs={"grace": 5.0})
    stopper.start()
    fs = c.frames(lambda f: f[0] == F.GOAWAY)
    assert (F.u32(fs[-1][3][:4]), F.u32(fs[-1][3][4:8])) == (1, F.NO_ERROR)
    c.call(3, b"too late")  # after GOAWAY: refused (or ignored), never served
    blocks, data = c.response(1)
    assert data == grpc_msg(b"slept") and status_of(blocks) == ("0", "")
    rest = c.frames(lambda f: False)
    assert all(f[2] != 3 or f[0] == F.RST_STREAM for f in rest)
    stopper.join(10)
    c.close()


def test_grace_period_over_cancels_calls() -> None:
    s = ServerThread("h2").start()
    c = Raw(s.port)
    c.call(1, b"sleep:30:grace")
    time.sleep(0.1)
    t0 = time.monotonic()
    s.stop(grace=0.3)
    assert time.monotonic() - t0 < 3
    assert "cancelled:grace" in EVENTS
    c.close()


def test_keepalive_pings() -> None:
    """A client that answers the server's pings keeps its connection; one that does not
    loses it after the timeout."""
    s = ServerThread("h2", ServerConfig(keepalive_interval=0.1, keepalive_timeout=0.3)).start()
    try:
        good, bad = Raw(s.port), Raw(s.port)
        for _ in range(3):  # three rounds of pings, each answered
            f = good.frames(lambda f: f[0] == F.PING and not f[1] & F.ACK)[-1]
            good.send(F.frame(F.PING, F.ACK, 0, f[3]))
        good.call(1, b"alive")
        assert good.response(1)[1] == grpc_msg(b"alive")
        assert bad.goaway()[1] == F.NO_ERROR  # pinged, never answered: closed
        assert bad.read_frame() is None
        good.close()
        bad.close()
    finally:
        s.stop()
