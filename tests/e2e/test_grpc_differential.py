"""Raw gRPC requests (petcd's generated stubs) against real etcd 3.4 and petcd: the
responses (headers normalized) or the errors (status code and message) must match,
including requests etcdctl cannot send."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message

from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.pb.etcdserverpb import rpc_pb2_grpc as rpc_grpc
from petcd.testing import EtcdProcess, PetcdProcess, have_etcd

pytestmark = pytest.mark.skipif(not have_etcd(), reason="etcd/etcdctl 3.4 not installed")

MAX_REQUEST = 4096
ARGS = ["--max-txn-ops", "4", "--max-request-bytes", str(MAX_REQUEST),
        "--experimental-compaction-batch-limit", "3"]

Outcome = tuple[str, Any]


def outcome(call: Callable[[], Message]) -> Outcome:
    try:
        resp = call()
    except grpc.RpcError as e:
        return "error", (e.code(), e.details())
    return "ok", _strip(resp)


def _strip(msg: Message) -> Message:
    """The response without the fields that differ by design (IDs, term)."""
    out = type(msg)()
    out.CopyFrom(msg)
    if out.HasField("header"):  # type: ignore[attr-defined]
        h = out.header  # type: ignore[attr-defined]
        h.cluster_id = h.member_id = h.raft_term = 0
    return out


class Pair:
    def __init__(self, etcd: EtcdProcess, petcd: PetcdProcess) -> None:
        self.channels = [grpc.insecure_channel(m.address) for m in (etcd, petcd)]
        self.kv = [rpc_grpc.KVStub(c) for c in self.channels]

    def same(self, method: str, request: Message) -> Outcome:
        want, got = (outcome(lambda kv=kv: getattr(kv, method)(request, timeout=10))
                     for kv in self.kv)
        assert got == want, f"{method}({request})"
        return got

    def close(self) -> None:
        for c in self.channels:
            c.close()


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    base = tmp_path_factory.mktemp("grpc-diff")
    etcd = EtcdProcess(base / "etcd", args=ARGS)
    petcd = PetcdProcess(base / "petcd", args=ARGS)
    try:
        etcd.start()
        petcd.start()
        p = Pair(etcd, petcd)
        # Same starting history on both.
        for i in range(10):
            p.same("Put", rpc.PutRequest(key=b"k%d" % i, value=b"v%d" % i))
        for i in range(0, 10, 3):
            p.same("Put", rpc.PutRequest(key=b"k%d" % i, value=b"w%d" % i))
        yield p
        p.close()
    except BaseException:
        print(etcd.log_tail(), petcd.log_tail())
        raise
    finally:
        etcd.kill()
        petcd.kill()


def op_put(k: bytes, v: bytes = b"v", **kw: Any) -> rpc.RequestOp:
    return rpc.RequestOp(request_put=rpc.PutRequest(key=k, value=v, **kw))


def op_get(k: bytes, **kw: Any) -> rpc.RequestOp:
    return rpc.RequestOp(request_range=rpc.RangeRequest(key=k, **kw))


def op_del(k: bytes, **kw: Any) -> rpc.RequestOp:
    return rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=k, **kw))


R = rpc.RangeRequest


@pytest.mark.parametrize("req", [
    R(key=b"k1"), R(key=b"k", range_end=b"l"), R(key=b"k", range_end=b"l", limit=3),
    R(key=b"\x00", range_end=b"\x00"), R(key=b"k5", range_end=b"\x00", count_only=True),
    R(key=b"k", range_end=b"l", keys_only=True, limit=2),
    R(key=b"k", range_end=b"l", sort_order=R.DESCEND, sort_target=R.MOD, limit=4),
    R(key=b"k", range_end=b"l", sort_order=R.ASCEND, sort_target=R.VALUE),
    R(key=b"k", range_end=b"l", sort_order=R.NONE, sort_target=R.CREATE),
    R(key=b"k", range_end=b"l", min_mod_revision=5, max_mod_revision=9),
    R(key=b"k", range_end=b"l", min_create_revision=4, max_create_revision=6),
    R(key=b"k", range_end=b"l", revision=4), R(key=b"k", range_end=b"l", revision=99),
    R(key=b"k1", serializable=True), R(key=b""), R(key=b"", range_end=b"x"),
])
def test_range(pair: Pair, req: rpc.RangeRequest) -> None:
    pair.same("Range", req)


@pytest.mark.parametrize("req", [
    rpc.PutRequest(key=b"", value=b"x"),
    rpc.PutRequest(key=b"p", value=b"x", ignore_value=True),
    rpc.PutRequest(key=b"p", lease=7, ignore_lease=True),
    rpc.PutRequest(key=b"missing", ignore_value=True),
    rpc.PutRequest(key=b"p", value=b"x", lease=12345),
    rpc.PutRequest(key=b"p", value=b"y" * (MAX_REQUEST + 100)),
    rpc.PutRequest(key=b"", value=b"y" * (MAX_REQUEST + 100)),  # empty key reported first
])
def test_put_errors(pair: Pair, req: rpc.PutRequest) -> None:
    kind, _ = pair.same("Put", req)
    assert kind == "error"


def test_put_at_size_limit(pair: Pair) -> None:
    # Just under the limit works on both (the exact boundary differs by a few header bytes).
    pair.same("Put", rpc.PutRequest(key=b"size", value=b"s" * (MAX_REQUEST - 200)))
    pair.same("Range", R(key=b"size", keys_only=True))


def test_grpc_receive_limit(pair: Pair) -> None:
    """Beyond max-request-bytes + 512 KiB gRPC itself refuses (its message differs between
    gRPC implementations; the code is the same)."""
    req = rpc.PutRequest(key=b"huge", value=b"h" * (MAX_REQUEST + 600 * 1024))
    results = [outcome(lambda kv=kv: kv.Put(req, timeout=10)) for kv in pair.kv]
    assert [r[0] for r in results] == ["error", "error"]
    assert results[0][1][0] == results[1][1][0] == grpc.StatusCode.RESOURCE_EXHAUSTED


T = rpc.TxnRequest
C = rpc.Compare


@pytest.mark.parametrize("req", [
    T(compare=[C(key=b"k1", target=C.VALUE, result=C.EQUAL, value=b"v1")],
      success=[op_put(b"t1"), op_get(b"k1")], failure=[op_del(b"k1")]),
    T(compare=[C(key=b"k0", target=C.LEASE, result=C.EQUAL, lease=0)],
      success=[op_get(b"k0")], failure=[op_get(b"k1")]),
    T(compare=[C(key=b"k0", target=C.LEASE, result=C.GREATER, lease=0)],
      success=[op_get(b"k0")], failure=[op_get(b"k1")]),
    T(compare=[C(key=b"k", range_end=b"l", target=C.VERSION, result=C.GREATER, version=0)],
      success=[op_get(b"k", range_end=b"l", count_only=True)]),
    T(compare=[C(key=b"k", range_end=b"l", target=C.MOD, result=C.LESS, mod_revision=5)],
      success=[op_put(b"never")], failure=[op_get(b"k", range_end=b"l", limit=1)]),
    T(compare=[C(key=b"k3", target=C.CREATE, result=C.NOT_EQUAL, create_revision=4)],
      success=[op_put(b"k3", prev_kv=True)]),
    T(success=[rpc.RequestOp(request_txn=T(
        compare=[C(key=b"k3", target=C.VERSION, result=C.EQUAL, version=2)],
        success=[op_put(b"nested", b"a")], failure=[op_put(b"nested", b"b")]))]),
    T(success=[op_del(b"k8", prev_kv=True), op_put(b"k9", b"z", prev_kv=True)]),
    T(success=[op_get(b"k1", revision=2), op_get(b"k1", serializable=True)]),
    T(success=[op_put(b"a"), op_put(b"b"), op_put(b"c"), op_put(b"d"), op_put(b"e")]),
    T(compare=[C(key=b"a")] * 5),
    T(success=[op_put(b"d1"), op_put(b"d1")]),
    T(success=[op_put(b"d1")], failure=[op_put(b"d1")]),
    T(success=[op_put(b"k5"), op_del(b"k", range_end=b"l")]),
    T(success=[rpc.RequestOp(request_txn=T(success=[op_put(b"x")])), op_put(b"x")]),
    T(success=[rpc.RequestOp()]),
    T(success=[op_put(b"")]),
    T(compare=[C(key=b"")]),
    T(success=[op_put(b"ok"), op_get(b"ok", revision=1000)]),  # fails whole: nothing applied
    T(success=[op_put(b"ok"), op_put(b"k1", b"", ignore_value=True)]),
    T(success=[op_put(b"ok2"), op_put(b"missing", b"", ignore_value=True)]),  # nothing applied
    T(success=[op_put(b"ok3", lease=999)]),
])
def test_txn(pair: Pair, req: rpc.TxnRequest) -> None:
    pair.same("Txn", req)
    pair.same("Range", R(key=b"\x00", range_end=b"\x00"))  # same state afterwards


def test_delete(pair: Pair) -> None:
    pair.same("DeleteRange", rpc.DeleteRangeRequest(key=b""))
    pair.same("DeleteRange", rpc.DeleteRangeRequest(key=b"nothing"))
    pair.same("DeleteRange", rpc.DeleteRangeRequest(key=b"k7", range_end=b"k9", prev_kv=True))
    pair.same("Range", R(key=b"\x00", range_end=b"\x00"))


def test_compact(pair: Pair) -> None:
    pair.same("Compact", rpc.CompactionRequest(revision=10**6))
    pair.same("Compact", rpc.CompactionRequest(revision=6))
    pair.same("Compact", rpc.CompactionRequest(revision=6))
    pair.same("Compact", rpc.CompactionRequest(revision=0))
    pair.same("Compact", rpc.CompactionRequest(revision=8, physical=True))
    pair.same("Range", R(key=b"\x00", range_end=b"\x00", revision=7))
    pair.same("Range", R(key=b"\x00", range_end=b"\x00", revision=8))
    pair.same("Txn", T(success=[op_get(b"k1", revision=7)]))


def test_undecodable_request_is_an_internal_error(pair: Pair) -> None:
    codes = []
    for ch in pair.channels:
        put = ch.unary_unary("/etcdserverpb.KV/Put")
        with pytest.raises(grpc.RpcError) as e:
            put(b"\x0a\xff\xff", timeout=10)  # a length-delimited field running past the end
        codes.append(e.value.code())
    assert codes == [grpc.StatusCode.INTERNAL] * 2


def test_grpc_health_check(pair: Pair) -> None:
    results = []
    for ch in pair.channels:
        check = ch.unary_unary("/grpc.health.v1.Health/Check")
        ok = check(b"", timeout=10)
        with pytest.raises(grpc.RpcError) as e:
            check(b"\x0a\x03foo", timeout=10)  # service "foo"
        results.append((ok, e.value.code(), e.value.details()))
    assert results[0] == results[1] == (b"\x08\x01", grpc.StatusCode.NOT_FOUND, "unknown service")
