"""The client's pure parts, without sockets: error mapping, the retry policy, the watch
protocol state (resume without gaps or repeats), request building."""

from __future__ import annotations

import grpc
import pytest

from petcd.client import errors as e
from petcd.client.connection import Action, Backoff, Deadline, decide, parse_endpoints
from petcd.client.ops import Get, Value, Version, key_range, prefix_end
from petcd.client.watch_state import CLOSED, Broken, Reconnect, WatchLoop, WatchSpec, WatchState
from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.pb.mvccpb import kv_pb2


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


U = grpc.StatusCode.UNAVAILABLE


def test_error_mapping() -> None:
    err = e.from_rpc_error(FakeRpcError(grpc.StatusCode.OUT_OF_RANGE,
                                        "etcdserver: mvcc: required revision has been compacted"))
    assert isinstance(err, e.CompactedError) and err.code == grpc.StatusCode.OUT_OF_RANGE
    assert isinstance(e.error_for(U, "etcdserver: no leader"), e.NoLeaderError)
    assert isinstance(e.error_for(U, "failed to connect to all addresses; ..."),
                      e.ConnectionFailedError)
    assert isinstance(e.error_for(U, "etcdserver: request timed out"), e.UnavailableError)
    assert type(e.error_for(grpc.StatusCode.INVALID_ARGUMENT, "something new")) is \
        e.InvalidArgumentError


def test_retry_policy() -> None:
    unsent = FakeRpcError(U, "failed to connect to all addresses; last error: refused")
    lost = FakeRpcError(U, "Socket closed")
    assert decide(unsent, False, can_reauth=False) is Action.FAILOVER
    assert decide(lost, False, can_reauth=False) is Action.RAISE  # a write may have landed
    assert decide(lost, True, can_reauth=False) is Action.FAILOVER  # a read may go again
    assert decide(FakeRpcError(U, "etcdserver: no leader"), False,
                  can_reauth=False) is Action.FAILOVER
    expired = FakeRpcError(grpc.StatusCode.UNAUTHENTICATED, "etcdserver: invalid auth token")
    assert decide(expired, False, can_reauth=True) is Action.REAUTH
    assert decide(expired, False, can_reauth=False) is Action.RAISE
    b = Backoff(3)
    assert [b.next_pause() for _ in range(6)] == [0, 0, 0.05, 0, 0, 0.1]
    assert not b.exhausted(Deadline(None)) and Deadline(0).passed()
    assert parse_endpoints("https://a:1, b:2") == (["a:1", "b:2"], True)


def _resp(rev: int, *mods: int, **kw: object) -> rpc.WatchResponse:
    return rpc.WatchResponse(header=rpc.ResponseHeader(revision=rev), events=[
        kv_pb2.Event(kv=kv_pb2.KeyValue(key=b"k", mod_revision=m)) for m in mods], **kw)


def test_watch_state_resumes_without_gaps_or_repeats() -> None:
    st = WatchState(WatchSpec.make("k", prefix=True))
    assert st.create_request().create_request.start_revision == 0
    assert st.on_response(_resp(10, created=True, watch_id=3)) is None
    assert st.next_rev == 11
    out = st.on_response(_resp(12, 11, 12))
    assert out is not None and [ev.kv.mod_revision for ev in out.events] == [11, 12]
    # a new stream asks for 13 and drops anything older that still arrives
    assert st.create_request().create_request.start_revision == 13
    st.on_response(_resp(14, created=True))
    assert st.on_response(_resp(14, 12)) is None
    out = st.on_response(_resp(14, 12, 13, 14))
    assert out is not None and [ev.kv.mod_revision for ev in out.events] == [13, 14]
    progress = st.on_response(_resp(20))
    assert progress is not None and progress.progress_notify and st.next_rev == 21
    with pytest.raises(e.CompactedError) as c:
        st.on_response(_resp(30, canceled=True, compact_revision=25))
    assert c.value.compact_revision == 25
    with pytest.raises(Reconnect) as r:
        st.on_response(_resp(30, canceled=True, cancel_reason="etcdserver: invalid auth token"))
    assert r.value.reauth
    with pytest.raises(e.PermissionDeniedError):
        st.on_response(_resp(30, canceled=True, cancel_reason="etcdserver: permission denied"))


def test_watch_state_joins_fragments() -> None:
    st = WatchState(WatchSpec.make("k", prefix=True, start_revision=5, fragment=True))
    assert st.create_request().create_request.fragment
    st.on_response(_resp(9, created=True))
    assert st.on_response(_resp(9, 5, 6, fragment=True)) is None  # a first piece
    assert st.on_response(_resp(9, 7, fragment=True)) is None
    out = st.on_response(_resp(9, 8))  # the last piece: one batch
    assert out is not None and [ev.kv.mod_revision for ev in out.events] == [5, 6, 7, 8]
    assert st.next_rev == 9
    # a stream lost mid-response: its pieces are dropped, the new stream resends them
    assert st.on_response(_resp(12, 9, 10, fragment=True)) is None
    assert st.create_request().create_request.start_revision == 9
    st.on_response(_resp(12, created=True))
    out = st.on_response(_resp(12, 9, 10, 11))
    assert out is not None and [ev.kv.mod_revision for ev in out.events] == [9, 10, 11]


class _Conn:
    def __init__(self, index: int) -> None:
        self.index = index


class _Client:
    """What WatchLoop.left touches on a client of either flavour."""

    def __init__(self) -> None:
        self._token: str | None = "t"
        self.gone: list[object] = []
        self.failed_over: list[int] = []

    def _watch_stream_gone(self, stream: object) -> None:
        self.gone.append(stream)

    def _failover(self, conn: _Conn) -> None:
        self.failed_over.append(conn.index)


def test_watch_loop_decides_for_both_flavours() -> None:
    loop = WatchLoop(WatchSpec.make("k", prefix=True), members=2)
    s1, s2 = object(), object()
    loop.pumping()
    created = loop.next((s1, _resp(10, created=True, watch_id=1)), s1, until_created=True)
    assert created.done and created.out is None
    assert not loop.next((s2, _resp(11, 11)), s1, False).done  # a stream it left: ignored
    batch = loop.next((s1, _resp(11, 11)), s1, False)
    assert batch.done and batch.out is not None and batch.out.events[0].kv.mod_revision == 11
    # a broken stream: leave it, fail over, pause once a round of members failed
    client = _Client()
    s1 = type("S", (), {"conn": _Conn(0)})()
    broken = loop.next((s1, Broken(FakeRpcError(grpc.StatusCode.UNAVAILABLE, "x"))), s1, False)
    assert broken.drop is not None and broken.drop.failover and broken.pause == 0.0
    loop.left(client, s1, broken.drop)
    assert client.failed_over == [0] and loop.reconnects == 1 and client._token == "t"
    again = loop.next((s1, Broken(FakeRpcError(grpc.StatusCode.UNAVAILABLE, "x"))), s1, False)
    assert again.pause > 0  # (both members failed: back off)
    # a stale token: authenticate again on a new stream, same member
    reauth = loop.next((s1, _resp(12, canceled=True,
                                  cancel_reason="etcdserver: invalid auth token")), s1, False)
    assert reauth.drop is not None and reauth.drop.reauth and not reauth.drop.failover
    loop.left(client, s1, reauth.drop)
    assert client._token is None and client.gone == [s1] and client.failed_over == [0]
    # errors no member cures end the watch; opening retries elsewhere
    fatal = loop.next((s1, Broken(FakeRpcError(grpc.StatusCode.PERMISSION_DENIED, "no"))), s1,
                      False)
    assert isinstance(fatal.error, e.PermissionDeniedError)
    loop.opening()
    assert loop.open_failed(client._failover, _Conn(1)) == 0.0 and client.failed_over[-1] == 1
    with pytest.raises(e.PermissionDeniedError):
        loop.open_failed(client._failover, _Conn(0),
                         e.error_for(grpc.StatusCode.PERMISSION_DENIED, "no"))
    assert loop.next(CLOSED, s1, False).stop
    loop.closed = True
    assert loop.next((s1, Broken(None)), s1, False).stop  # closed: no reconnect


def test_requests() -> None:
    assert prefix_end("a") == b"b" and prefix_end(b"\xff\xff") == b"\x00"
    assert key_range("", prefix=True) == (b"\x00", b"\x00")
    assert key_range("a", from_key=True) == (b"a", b"\x00")
    with pytest.raises(ValueError):
        key_range("a", "b", prefix=True)
    req = Get("k", limit=2, sort_order="descend", sort_target="mod").to_pb()
    assert (req.limit, req.sort_order, req.sort_target) == (2, rpc.RangeRequest.DESCEND,
                                                            rpc.RangeRequest.MOD)
    c = (Value("k") == "v").to_pb()
    assert (c.target, c.result, c.value) == (rpc.Compare.VALUE, rpc.Compare.EQUAL, b"v")
    assert (Version("k") > 2).to_pb().version == 2
    with pytest.raises(TypeError):
        Value("k") == 1  # noqa: B015
