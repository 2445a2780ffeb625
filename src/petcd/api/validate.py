"""Request checks etcd makes in its gRPC layer before proposing (v3rpc), with the same
order and errors. Pure functions over parsed requests; raise EtcdError."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from petcd import errors
from petcd.pb.etcdserverpb import rpc_pb2 as rpc


def check_range(r: rpc.RangeRequest) -> None:
    if not r.key:
        raise errors.EMPTY_KEY()


def check_put(r: rpc.PutRequest) -> None:
    if not r.key:
        raise errors.EMPTY_KEY()
    if r.ignore_value and r.value:
        raise errors.VALUE_PROVIDED()
    if r.ignore_lease and r.lease:
        raise errors.LEASE_PROVIDED()


def check_delete(r: rpc.DeleteRangeRequest) -> None:
    if not r.key:
        raise errors.EMPTY_KEY()


def check_txn(r: rpc.TxnRequest, max_txn_ops: int) -> bool:
    """etcd's checks of a Txn; returns whether every op of both branches is a range
    (the txn is a read)."""
    kinds_then, kinds_else = _check_txn_ops(r, max_txn_ops)
    # Overlap checks come after the cheap ones, as in etcd (avoids quadratic work on
    # requests that are rejected anyway). A branch of one op other than a nested txn
    # cannot overlap itself (the common txn: a compare and one put).
    if len(kinds_then) > 1 or kinds_then == _NESTED:
        check_intervals(r.success)
    if len(kinds_else) > 1 or kinds_else == _NESTED:
        check_intervals(r.failure)
    # (list.count: no generator per call on the hot Txn path)
    return kinds_then.count("request_range") == len(kinds_then) and \
        kinds_else.count("request_range") == len(kinds_else)


_NESTED = ["request_txn"]


def _check_txn_ops(r: rpc.TxnRequest, max_txn_ops: int) -> tuple[list[str], list[str]]:
    """The per-op checks of a txn (nested ones included); the kinds of each branch's ops."""
    # (each repeated field is fetched once: every access builds a container object)
    compare, success, failure = r.compare, r.success, r.failure
    ops = max(len(compare), len(success), len(failure))
    if ops > max_txn_ops:
        raise errors.TOO_MANY_OPS()
    if compare:  # (iterating an empty repeated field is not free either)
        for c in compare:
            if not c.key:
                raise errors.EMPTY_KEY()
    left = max_txn_ops - ops
    return ([_check_op(op, left) for op in success] if success else [],
            [_check_op(op, left) for op in failure] if failure else [])


def _check_op(op: rpc.RequestOp, max_txn_ops: int) -> str:
    which = op.WhichOneof("request")
    if which == "request_range":
        check_range(op.request_range)
    elif which == "request_put":
        check_put(op.request_put)
    elif which == "request_delete_range":
        check_delete(op.request_delete_range)
    elif which == "request_txn":
        _check_txn_ops(op.request_txn, max_txn_ops)
    else:
        raise errors.KEY_NOT_FOUND()  # an empty op: etcd answers this
    return which  # type: ignore[no-any-return]  # (no cast(): a call per op)


# A delete's key span: [begin, end); end None means the single key `begin`. A range end
# that sorts before its key (e.g. "\x00", "from key") spans nothing here, which is how
# etcd's interval check treats it too.
_Span = tuple[bytes, bytes | None]


def _hits(spans: Iterable[_Span], key: bytes) -> bool:
    for begin, end in spans:
        if end is None:
            if key == begin:
                return True
        elif begin <= key < end:
            return True
    return False


def check_intervals(ops: Sequence[rpc.RequestOp]) -> tuple[set[bytes], list[_Span]]:
    """etcd's rule: within a txn branch (and the txns nested in it), no key may be put
    twice, nor put and deleted; then/else of one nested txn may put the same key."""
    dels: list[_Span] = []
    for op in ops:
        if op.WhichOneof("request") == "request_delete_range":
            d = op.request_delete_range
            dels.append((d.key, d.range_end or None))
    puts: set[bytes] = set()
    for op in ops:
        if op.WhichOneof("request") != "request_txn":
            continue
        puts_then, dels_then = check_intervals(op.request_txn.success)
        puts_else, dels_else = check_intervals(op.request_txn.failure)
        for k in puts_then:
            if k in puts or _hits(dels, k):
                raise errors.DUPLICATE_KEY()
            puts.add(k)
        for k in puts_else:
            if (k in puts and k not in puts_then) or _hits(dels, k):
                raise errors.DUPLICATE_KEY()
            puts.add(k)
        dels.extend(dels_then)
        dels.extend(dels_else)
    for op in ops:
        if op.WhichOneof("request") != "request_put":
            continue
        k = op.request_put.key
        if k in puts or _hits(dels, k):
            raise errors.DUPLICATE_KEY()
        puts.add(k)
    return puts, dels
