"""A Txn's compares evaluated against the state before it, as etcd does: every compare
(nested txns' too) and every check runs on that state, and only then are the ops of the
chosen branches applied (server/kv_requests.py runs the plan). Pure reads of a `KVView`.
"""

from __future__ import annotations

from typing import Any

from petcd import errors
from petcd.mvcc.kvstore import KVView
from petcd.pb.etcdserverpb import rpc_pb2 as pb
from petcd.pb.mvccpb.kv_pb2 import KeyValue

_VALUE = pb.Compare.VALUE
_CMP_VERSION = pb.Compare.VERSION
_CMP_MOD = pb.Compare.MOD
_CMP_CREATE = pb.Compare.CREATE
_CMP_LEASE = pb.Compare.LEASE
_EQUAL = pb.Compare.EQUAL
_NOT_EQUAL = pb.Compare.NOT_EQUAL
_GREATER = pb.Compare.GREATER
_LESS = pb.Compare.LESS
_CMP_FIELDS: dict[int, tuple[str, str]] = {
    # target -> (KeyValue field, Compare field)
    pb.Compare.VERSION: ("version", "version"),
    pb.Compare.CREATE: ("create_revision", "create_revision"),
    pb.Compare.MOD: ("mod_revision", "mod_revision"),
    pb.Compare.VALUE: ("value", "value"),
    pb.Compare.LEASE: ("lease", "lease"),
}
# A txn with its compares evaluated: whether they held, and the ops of the
# branch that runs as (kind, request, plan of a nested txn).
Plan = tuple[bool, list[tuple[str | None, Any, "Plan | None"]]]


def range_end(raw: bytes) -> bytes | None:
    """etcd's range_end convention to the store's: empty means the single
    key (None), b"\\0" means every key >= key (b"")."""
    if not raw:
        return None
    if raw == b"\x00":
        return b""
    return raw


def holds(view: KVView, req: pb.TxnRequest) -> bool:
    """Whether every compare of `req` holds (evaluation stops at the first that
    fails)."""
    compares = req.compare
    return all(compare(view, compares[i]) for i in range(len(compares)))


def plan(view: KVView, req: pb.TxnRequest) -> Plan:
    """Evaluate the compares of `req` and of the nested txns that will
    run; returns (succeeded, [(kind, request, nested plan)...])."""
    ok = holds(view, req)
    return ok, plan_ops(view, req.success if ok else req.failure)


def plan_ops(view: KVView, branch: Any) -> list[tuple[str | None, Any, Plan | None]]:
    ops: list[tuple[str | None, Any, Plan | None]] = []
    for op in branch:
        kind = op.WhichOneof("request")
        if kind is None:
            ops.append((None, None, None))
            continue
        sub = getattr(op, kind)
        ops.append((kind, sub, plan(view, sub) if kind == "request_txn" else None))
    return ops


def flatten(plan: Plan, puts: list[pb.PutRequest], ranges: list[pb.RangeRequest]) -> bool:
    """Collect the puts and ranges that will run, in order; True if
    anything will write."""
    writes = False
    for kind, sub, nested in plan[1]:
        if kind == "request_put":
            puts.append(sub)
            writes = True
        elif kind == "request_range":
            ranges.append(sub)
        elif kind == "request_delete_range":
            writes = True
        elif nested is not None:
            writes = flatten(nested, puts, ranges) or writes
    return writes


def check_ranges(view: KVView, ranges: list[pb.RangeRequest]) -> None:
    for r in ranges:
        rev = r.revision
        if rev > view.rev:
            raise errors.FUTURE_REV()
        if 0 < rev < view.compact_rev:
            raise errors.COMPACTED()


def compare(view: KVView, c: pb.Compare) -> bool:
    target = c.target
    if target == _VALUE or c.range_end:
        fields = _CMP_FIELDS.get(target)
        if fields is None:
            return True
        kv_field, cmp_field = fields
        want = getattr(c, cmp_field)
        raws = view.range(c.key, range_end(c.range_end)).kvs
        if not raws:
            if target == _VALUE:
                return False  # a missing key has no value to compare
            haves = [0]
        else:
            haves = [getattr(KeyValue.FromString(raw), kv_field) for raw in raws]
    else:
        # One key, a number: the index entry has it, no record to read.
        state = view.key_state(c.key)
        if target == _CMP_VERSION:
            have, want = (state[2] if state else 0), c.version
        elif target == _CMP_MOD:
            have, want = (state[1] if state else 0), c.mod_revision
        elif target == _CMP_CREATE:
            have, want = (state[0] if state else 0), c.create_revision
        elif target == _CMP_LEASE:
            have, want = (state[3] if state else 0), c.lease
        else:
            return True
        haves = [have]
    result = c.result
    for have in haves:
        if result == _EQUAL:
            ok = have == want
        elif result == _NOT_EQUAL:
            ok = have != want
        elif result == _GREATER:
            ok = have > want
        elif result == _LESS:
            ok = have < want
        else:
            ok = True
        if not ok:
            return False
    return True
