"""The grpcio client against the test service, served by petcd's h2 server and by
grpc.aio: the same handlers (grpc.aio's API) must give the same results on both."""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import pytest
from h2_service import EVENTS, ServerThread, h2_server, server

__all__ = ["h2_server", "server"]  # fixtures


@pytest.fixture(scope="module")
def channel(server: ServerThread) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}", options=[
            ("grpc.max_receive_message_length", 64 * 1024 * 1024)]) as ch:
        yield ch


@pytest.fixture(params=["Echo", "EchoInline"])
def echo(request: pytest.FixtureRequest) -> str:
    """The echo method, run by a task or started inline (h2.call.Call.start)."""
    return request.param  # type: ignore[no-any-return]


def unary(ch: grpc.Channel, method: str = "Echo") -> grpc.UnaryUnaryMultiCallable:
    return ch.unary_unary(f"/test.Svc/{method}")


def error_of(fn: grpc.UnaryUnaryMultiCallable, req: bytes, **kw: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as e:
        fn(req, timeout=kw.pop("timeout", 10), **kw)
    return e.value


def wait_for(pred: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_unary_echo(channel: grpc.Channel, echo: str) -> None:
    assert unary(channel, echo)(b"hello", timeout=10) == b"hello"
    assert unary(channel, echo)(b"", timeout=10) == b""


def test_abort_status_and_percent_encoded_message(channel: grpc.Channel, echo: str) -> None:
    msg = "etcdserver: bad 100% — ünïcode\nline"
    e = error_of(unary(channel, echo), f"abort:INVALID_ARGUMENT:{msg}".encode())
    assert (e.code(), e.details()) == (grpc.StatusCode.INVALID_ARGUMENT, msg)


def test_handler_exception_is_unknown(channel: grpc.Channel, echo: str) -> None:
    e = error_of(unary(channel, echo), b"raise")
    assert e.code() is grpc.StatusCode.UNKNOWN
    assert "boom" in (e.details() or "")


def test_set_code_without_raising(channel: grpc.Channel, echo: str) -> None:
    e = error_of(unary(channel, echo), b"setcode")
    assert (e.code(), e.details()) == (grpc.StatusCode.NOT_FOUND, "set, not raised")


def test_unknown_method_and_service(server: ServerThread, channel: grpc.Channel) -> None:
    e1 = error_of(channel.unary_unary("/test.Svc/Nope"), b"")
    e2 = error_of(channel.unary_unary("/other.Svc/Echo"), b"")
    assert e1.code() is e2.code() is grpc.StatusCode.UNIMPLEMENTED
    if server.kind == "h2":  # grpc-go's words, as etcd answers
        assert e1.details() == "unknown method Nope for service test.Svc"
        assert e2.details() == "unknown service other.Svc"


def test_metadata_peer_and_deadline(channel: grpc.Channel, echo: str) -> None:
    out = unary(channel, echo)(b"meta", timeout=10, metadata=(
        ("authorization", "token-1"), ("x-bin", b"\x00\xff")))
    md, peer, has_deadline = eval(out)  # our own test server's repr
    assert ("authorization", "token-1") in md and ("x-bin", b"\x00\xff") in md
    assert peer.startswith("ipv4:127.0.0.1:")
    assert has_deadline


def test_trailing_metadata(channel: grpc.Channel, echo: str) -> None:
    resp, call = unary(channel, echo).with_call(b"trailing", timeout=10)
    assert resp == b"with trailers"
    trailing = dict(call.trailing_metadata() or ())
    assert trailing["x-trail"] == "t"
    assert trailing["x-trail-bin"] == b"\x00\x01"


def test_deadline_exceeded_cancels_the_handler(channel: grpc.Channel, echo: str) -> None:
    tag = f"deadline-{echo}-{id(channel)}"
    e = error_of(unary(channel, echo), f"sleep:5:{tag}".encode(), timeout=0.3)
    assert e.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    wait_for(lambda: f"cancelled:{tag}" in EVENTS and f"done:{tag}" in EVENTS)


def test_client_cancel_cancels_the_handler(channel: grpc.Channel, echo: str) -> None:
    tag = f"cancel-{echo}-{id(channel)}"
    fut = unary(channel, echo).future(f"sleep:5:{tag}".encode(), timeout=10)
    time.sleep(0.3)
    fut.cancel()
    wait_for(lambda: f"cancelled:{tag}" in EVENTS)


def test_large_unary_response(channel: grpc.Channel, echo: str) -> None:
    n = 8 * 1024 * 1024  # far beyond any flow-control window: needs WINDOW_UPDATEs
    assert unary(channel, echo)(b"big:%d" % n, timeout=30) == b"x" * n


def test_request_over_the_receive_limit(channel: grpc.Channel, echo: str) -> None:
    e = error_of(unary(channel, echo), b"y" * (5 * 1024 * 1024))
    assert e.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert unary(channel, echo)(b"y" * (3 * 1024 * 1024), timeout=30) == b"y" * (3 * 1024 * 1024)


def test_concurrent_calls(channel: grpc.Channel, echo: str) -> None:
    futures = [unary(channel, echo).future(b"c%d" % i, timeout=30) for i in range(300)]
    assert [f.result() for f in futures] == [b"c%d" % i for i in range(300)]


def test_server_streaming(channel: grpc.Channel) -> None:
    for method in ("ServerStream", "ServerStreamWrite"):
        stream = channel.unary_stream(f"/test.Svc/{method}")
        req = b"50:1000" if method == "ServerStream" else b"50:1000:0"
        got = list(stream(req, timeout=10))
        assert [m[0] for m in got] == list(range(50)) and {len(m) for m in got} == {1000}
        big = list(stream(b"20:500000" + (b"" if method == "ServerStream" else b":0"),
                          timeout=30))
        assert sum(len(m) for m in big) == 20 * 500000
        assert list(stream(b"0:1" + (b"" if method == "ServerStream" else b":0"),
                           timeout=10)) == []


def test_cancel_a_server_stream(channel: grpc.Channel) -> None:
    EVENTS.clear()
    call = channel.unary_stream("/test.Svc/ServerStreamWrite")(b"2:10:1", timeout=10)
    it = iter(call)
    assert len(next(it)) == 10 and len(next(it)) == 10
    call.cancel()
    wait_for(lambda: "cancelled:stream" in EVENTS)


def test_client_streaming(channel: grpc.Channel) -> None:
    fn = channel.stream_unary("/test.Svc/ClientStream")
    assert fn(iter([b"a" * 10, b"b" * 20, b""]), timeout=10) == b"3:30"
    assert fn(iter([]), timeout=10) == b"0:0"
    many = [b"z" * 100000 for _ in range(60)]  # 6 MB: beyond the stream window
    assert fn(iter(many), timeout=30) == b"60:6000000"


def test_bidi_streaming(channel: grpc.Channel) -> None:
    rw = channel.stream_stream("/test.Svc/Bidi")
    assert list(rw(iter([b"a", b"b", b"c"]), timeout=10)) == [b"a!", b"b!", b"c!"]
    gen = channel.stream_stream("/test.Svc/BidiGen")
    assert list(gen(iter([b"x", b"y"]), timeout=10)) == [b"X", b"Y"]
    call = rw(iter([b"1", b"abort"]), timeout=10)
    with pytest.raises(grpc.RpcError) as e:
        list(call)
    assert e.value.code() is grpc.StatusCode.FAILED_PRECONDITION


def test_bidi_interleaved(channel: grpc.Channel) -> None:
    """A response comes back before the next request is sent (a real conversation)."""
    import queue

    q: queue.Queue[bytes | None] = queue.Queue()

    def requests() -> Iterator[bytes]:
        while (item := q.get(timeout=10)) is not None:
            yield item

    call = channel.stream_stream("/test.Svc/Bidi")(requests(), timeout=10)
    it = iter(call)
    for i in range(5):
        q.put(b"%d" % i)
        assert next(it) == b"%d!" % i
    q.put(None)
    assert list(it) == []
