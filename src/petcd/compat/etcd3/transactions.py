"""python-etcd3's `etcd3.transactions`: comparisons and operations for `transaction()`."""

from __future__ import annotations

from typing import Any

from petcd.compat.etcd3 import utils
from petcd.pb.etcdserverpb import rpc_pb2 as rpc

_OPERATORS = {rpc.Compare.EQUAL: "==", rpc.Compare.NOT_EQUAL: "!=",
              rpc.Compare.LESS: "<", rpc.Compare.GREATER: ">"}


class BaseCompare:
    def __init__(self, key: Any, range_end: Any = None) -> None:
        self.key = key
        self.range_end = range_end
        self.value: Any = None
        self.op: Any = None

    def _set(self, op: Any, other: Any) -> BaseCompare:
        self.value, self.op = other, op
        return self

    def __eq__(self, other: object) -> BaseCompare:  # type: ignore[override]
        return self._set(rpc.Compare.EQUAL, other)

    def __ne__(self, other: object) -> BaseCompare:  # type: ignore[override]
        return self._set(rpc.Compare.NOT_EQUAL, other)

    def __lt__(self, other: Any) -> BaseCompare:
        return self._set(rpc.Compare.LESS, other)

    def __gt__(self, other: Any) -> BaseCompare:
        return self._set(rpc.Compare.GREATER, other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        keys = self.key if self.range_end is None else f"[{self.key}, {self.range_end})"
        return f"{self.__class__}: {keys} {_OPERATORS.get(self.op)} '{self.value}'"

    def build_compare(self, compare: rpc.Compare) -> None:
        raise NotImplementedError

    def build_message(self) -> rpc.Compare:
        compare = rpc.Compare(key=utils.to_bytes(self.key))
        if self.range_end is not None:
            compare.range_end = utils.to_bytes(self.range_end)
        if self.op is None:
            raise ValueError("op must be one of =, !=, < or >")
        compare.result = self.op
        self.build_compare(compare)
        return compare


class Value(BaseCompare):
    def build_compare(self, compare: rpc.Compare) -> None:
        compare.target = rpc.Compare.VALUE
        compare.value = utils.to_bytes(self.value)


class Version(BaseCompare):
    def build_compare(self, compare: rpc.Compare) -> None:
        compare.target = rpc.Compare.VERSION
        compare.version = int(self.value)


class Create(BaseCompare):
    def build_compare(self, compare: rpc.Compare) -> None:
        compare.target = rpc.Compare.CREATE
        compare.create_revision = int(self.value)


class Mod(BaseCompare):
    def build_compare(self, compare: rpc.Compare) -> None:
        compare.target = rpc.Compare.MOD
        compare.mod_revision = int(self.value)


class Put:
    def __init__(self, key: Any, value: Any, lease: Any = None, prev_kv: bool = False) -> None:
        self.key, self.value, self.lease, self.prev_kv = key, value, lease, prev_kv


class Get:
    def __init__(self, key: Any, range_end: Any = None) -> None:
        self.key, self.range_end = key, range_end


class Delete:
    def __init__(self, key: Any, range_end: Any = None, prev_kv: bool = False) -> None:
        self.key, self.range_end, self.prev_kv = key, range_end, prev_kv


class Txn:
    def __init__(self, compare: Any, success: Any = None, failure: Any = None) -> None:
        self.compare, self.success, self.failure = compare, success, failure


def to_request_ops(ops: Any) -> list[rpc.RequestOp]:
    """python-etcd3 operations as wire RequestOps."""
    out = []
    for op in ops or ():
        if isinstance(op, Put):
            out.append(rpc.RequestOp(request_put=rpc.PutRequest(
                key=utils.to_bytes(op.key), value=utils.to_bytes(op.value),
                lease=utils.lease_to_id(op.lease), prev_kv=op.prev_kv)))
        elif isinstance(op, Get):
            out.append(rpc.RequestOp(request_range=rpc.RangeRequest(
                key=utils.to_bytes(op.key),
                range_end=b"" if op.range_end is None else utils.to_bytes(op.range_end))))
        elif isinstance(op, Delete):
            out.append(rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(
                key=utils.to_bytes(op.key),
                range_end=b"" if op.range_end is None else utils.to_bytes(op.range_end),
                prev_kv=op.prev_kv)))
        elif isinstance(op, Txn):
            out.append(rpc.RequestOp(request_txn=txn_request(op.compare, op.success,
                                                             op.failure)))
        else:
            raise Exception(f"Unknown request class {op.__class__}")
    return out


def txn_request(compare: Any, success: Any, failure: Any) -> rpc.TxnRequest:
    return rpc.TxnRequest(compare=[c.build_message() for c in compare or ()],
                          success=to_request_ops(success), failure=to_request_ops(failure))
