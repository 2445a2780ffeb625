"""The gRPC-layer checks answer etcd's errors, in etcd's order."""

from __future__ import annotations

import pytest

from petcd import errors
from petcd.api import validate
from petcd.errors import EtcdError
from petcd.pb.etcdserverpb import rpc_pb2 as rpc


def put(k: bytes) -> rpc.RequestOp:
    return rpc.RequestOp(request_put=rpc.PutRequest(key=k, value=b"v"))


def delete(k: bytes, end: bytes = b"") -> rpc.RequestOp:
    return rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=k, range_end=end))


def txn(success: list[rpc.RequestOp], failure: list[rpc.RequestOp] | None = None,
        compare: list[rpc.Compare] | None = None) -> rpc.TxnRequest:
    return rpc.TxnRequest(compare=compare or [], success=success, failure=failure or [])


def check(r: rpc.TxnRequest, max_ops: int = 128) -> EtcdError | None:
    try:
        validate.check_txn(r, max_ops)
    except EtcdError as e:
        return e
    return None


def test_put_checks() -> None:
    with pytest.raises(EtcdError) as e:
        validate.check_put(rpc.PutRequest())
    assert e.value.kind is errors.EMPTY_KEY
    with pytest.raises(EtcdError) as e:
        validate.check_put(rpc.PutRequest(key=b"k", value=b"v", ignore_value=True))
    assert e.value.kind is errors.VALUE_PROVIDED
    with pytest.raises(EtcdError) as e:
        validate.check_put(rpc.PutRequest(key=b"k", lease=5, ignore_lease=True))
    assert e.value.kind is errors.LEASE_PROVIDED


def test_txn_limits_and_empty_ops() -> None:
    assert check(txn([put(b"a"), put(b"b")]), max_ops=1).kind is errors.TOO_MANY_OPS
    assert check(txn([put(b"a")]), max_ops=1) is None
    assert check(txn([rpc.RequestOp()])).kind is errors.KEY_NOT_FOUND
    assert check(txn([put(b"")])).kind is errors.EMPTY_KEY
    assert check(txn([], compare=[rpc.Compare(key=b"")])).kind is errors.EMPTY_KEY


def test_duplicate_keys() -> None:
    assert check(txn([put(b"a"), put(b"a")])).kind is errors.DUPLICATE_KEY
    assert check(txn([put(b"a"), delete(b"a")])).kind is errors.DUPLICATE_KEY
    assert check(txn([put(b"b"), delete(b"a", b"c")])).kind is errors.DUPLICATE_KEY
    assert check(txn([put(b"c"), delete(b"a", b"c")])) is None
    # the same key in then/else of one nested txn is fine; twice in one branch is not
    nested = rpc.RequestOp(request_txn=txn([put(b"a")], [put(b"a")]))
    assert check(txn([nested])) is None
    assert check(txn([nested, put(b"a")])).kind is errors.DUPLICATE_KEY
    # success and failure of the top level are checked separately
    assert check(txn([put(b"a")], [put(b"a")])) is None
    # a "from key" delete (range end \0) does not conflict, as in etcd
    assert check(txn([put(b"b"), delete(b"a", b"\x00")])) is None
    # a lone nested txn is still checked inside (a branch of one op skips only itself)
    twice = rpc.RequestOp(request_txn=txn([put(b"a"), put(b"a")]))
    assert check(txn([twice])).kind is errors.DUPLICATE_KEY
    assert check(txn([put(b"x")], [twice])).kind is errors.DUPLICATE_KEY


def test_txn_reads_only() -> None:
    """check_txn says whether the txn is a read (ranges only, in both branches)."""
    rng = rpc.RequestOp(request_range=rpc.RangeRequest(key=b"a"))
    assert validate.check_txn(txn([rng], [rng]), 128) is True
    assert validate.check_txn(txn([]), 128) is True
    assert validate.check_txn(txn([rng], [put(b"a")]), 128) is False
    assert validate.check_txn(txn([rpc.RequestOp(request_txn=txn([rng]))]), 128) is False
