"""A range whose response is several MB (server.range_encode: streamed past 1 MiB of
records): the same answers as etcd 3.4, and the member's memory grows by a small part of
the response, not by the response (etcd #12342), also while a client does not read it
or goes away halfway."""

from __future__ import annotations

import socket
import time
from typing import Any

import grpc
import hpack
import pytest
from google.protobuf.message import Message

from petcd.api.h2 import frames as F
from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.testing import MemberProcess, have_etcd
from petcd.testing.memory import PeakAnon, proc_mem

KEYS = 2000
VALUE = 4000  # bytes: KEYS * VALUE = 8 MB of values
BIG = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
RANGE = "/etcdserverpb.KV/Range"


def load(address: str) -> None:
    """The same history on every member: 100 keys per revision (a Txn each)."""
    with grpc.insecure_channel(address, options=BIG) as ch:
        txn = ch.unary_unary("/etcdserverpb.KV/Txn")
        for start in range(0, KEYS, 100):
            ops = [rpc.RequestOp(request_put=rpc.PutRequest(
                key=b"big/%05d" % i, value=(b"%05d" % i) * (VALUE // 5)))
                for i in range(start, start + 100)]
            txn(rpc.TxnRequest(success=ops).SerializeToString(), timeout=30)


@pytest.fixture(scope="module")
def loaded(petcd: MemberProcess) -> MemberProcess:
    load(petcd.address)
    return petcd


def whole_range(address: str) -> bytes:
    with grpc.insecure_channel(address, options=BIG) as ch:
        raw: bytes = ch.unary_unary(RANGE)(rpc.RangeRequest(
            key=b"big/", range_end=b"big0").SerializeToString(), timeout=60)
    return raw


def test_memory_grows_by_much_less_than_the_response(loaded: MemberProcess) -> None:
    assert loaded.proc is not None
    pid = loaded.proc.pid
    whole_range(loaded.address)  # warm: pages of the file, allocator arenas
    growths = []
    for _ in range(3):
        with PeakAnon(pid) as pk:
            raw = whole_range(loaded.address)
        growths.append(pk.growth)
    size = len(raw)
    resp = rpc.RangeResponse.FromString(raw)
    assert len(resp.kvs) == KEYS and resp.count == KEYS and size > KEYS * VALUE
    # Built whole, the member held the response and more (1.45x measured, and etcd
    # about 1.3x); streamed it holds about STREAM_AT + a piece.
    assert max(growths) < size // 3, (growths, size)


def test_a_stalled_reader_holds_little_and_leaving_frees_it(loaded: MemberProcess) -> None:
    assert loaded.proc is not None
    pid = loaded.proc.pid
    before = proc_mem(pid)["RssAnon"]
    stalled = []
    for _ in range(4):  # four connections whose clients never read (nor open windows)
        sock = _raw_range(int(loaded.address.rsplit(":", 1)[1]))
        stalled.append(sock)
    time.sleep(0.5)
    # Each holds at most a piece and its first part (~1.3 MB); the responses are 8 MB.
    assert proc_mem(pid)["RssAnon"] - before < 4 * (3 << 20), proc_mem(pid)["RssAnon"] - before
    # Everyone else is served: reads, writes, and a defragment (no read is held open).
    with grpc.insecure_channel(loaded.address, options=BIG) as ch:
        ch.unary_unary("/etcdserverpb.KV/Put")(
            rpc.PutRequest(key=b"other", value=b"v").SerializeToString(), timeout=10)
        ch.unary_unary("/etcdserverpb.Maintenance/Defragment")(
            rpc.DefragmentRequest().SerializeToString(), timeout=60)
    for sock in stalled:
        sock.close()
    resp = rpc.RangeResponse.FromString(whole_range(loaded.address))
    assert len(resp.kvs) == KEYS


def _raw_range(port: int) -> socket.socket:
    """A connection sending one big Range and then reading nothing: the server may send
    the default 64 KB window and must then wait."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    block = hpack.Encoder().encode([
        (":method", "POST"), (":scheme", "http"), (":path", RANGE), (":authority", "x"),
        ("content-type", "application/grpc"), ("te", "trailers")])
    body = rpc.RangeRequest(key=b"big/", range_end=b"big0").SerializeToString()
    msg = b"\0" + len(body).to_bytes(4, "big") + body
    sock.sendall(F.PREFACE + F.settings_frame({})
                 + F.frame(F.HEADERS, F.END_HEADERS, 1, bytes(block))
                 + F.frame(F.DATA, F.END_STREAM, 1, msg))
    return sock


def _strip(msg: Message) -> Message:
    out = type(msg)()
    out.CopyFrom(msg)
    h = out.header  # type: ignore[attr-defined]
    h.cluster_id = h.member_id = h.raft_term = 0
    return out


@pytest.mark.skipif(not have_etcd(), reason="etcd/etcdctl 3.4 not installed")
def test_same_answers_as_etcd(loaded: MemberProcess, etcd: MemberProcess) -> None:
    load(etcd.address)
    # (the tests before may have written one key more to petcd: ask at a fixed revision
    # or about the loaded keys only)
    rev = KEYS // 100 + 1
    def whole(**kw: Any) -> rpc.RangeRequest:
        return rpc.RangeRequest(**{"key": b"big/", "range_end": b"big0", "revision": rev,
                                   **kw})

    requests = [
        whole(),  # streamed
        whole(serializable=True),
        whole(limit=1500),  # streamed, more
        whole(limit=200),  # one buffer, more
        whole(revision=rev - 10),  # half the keys, streamed
        rpc.RangeRequest(key=b"big/01000", range_end=b"\0", revision=rev),  # to the end
        whole(count_only=True),
        whole(keys_only=True),  # the message path
        whole(sort_order=rpc.RangeRequest.DESCEND),
    ]
    with grpc.insecure_channel(etcd.address, options=BIG) as e, \
            grpc.insecure_channel(loaded.address, options=BIG) as p:
        calls = [ch.unary_unary(RANGE, request_serializer=rpc.RangeRequest.SerializeToString,
                                response_deserializer=rpc.RangeResponse.FromString)
                 for ch in (e, p)]
        for req in requests:
            want, got = (call(req, timeout=60) for call in calls)
            want.header.revision = got.header.revision = 0  # (petcd's may be ahead)
            assert _strip(got) == _strip(want), req
