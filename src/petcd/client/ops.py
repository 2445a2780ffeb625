"""Requests as values: operations (Get, Put, Delete, Txn) and comparisons, shared by the
sync and asyncio clients and usable inside transactions.

    from petcd.client import Txn, Value, Version, Put, Get
    txn = (Txn().when(Value("cfg") == "old", Version("lock") == 0)
               .then(Put("cfg", "new"))
               .otherwise(Get("cfg")))
    result = client.txn(txn)

Keys and values may be `str` (encoded as UTF-8) or `bytes`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

from petcd.pb.etcdserverpb import rpc_pb2 as rpc

Bytes = str | bytes
SortOrder = Literal["none", "ascend", "descend"]
SortTarget = Literal["key", "version", "create", "mod", "value"]

_SORT_ORDER = {"none": rpc.RangeRequest.NONE, "ascend": rpc.RangeRequest.ASCEND,
               "descend": rpc.RangeRequest.DESCEND}
_SORT_TARGET = {"key": rpc.RangeRequest.KEY, "version": rpc.RangeRequest.VERSION,
                "create": rpc.RangeRequest.CREATE, "mod": rpc.RangeRequest.MOD,
                "value": rpc.RangeRequest.VALUE}


def to_bytes(b: Bytes) -> bytes:
    return b.encode() if isinstance(b, str) else bytes(b)


def prefix_end(prefix: Bytes) -> bytes:
    """The range end covering every key that starts with `prefix` (b"\\0" for an empty
    prefix or one of only 0xff bytes: to the end of the keyspace)."""
    p = bytearray(to_bytes(prefix))
    while p:
        if p[-1] < 0xFF:
            p[-1] += 1
            return bytes(p)
        p.pop()
    return b"\x00"


def key_range(key: Bytes, range_end: Bytes | None = None, *, prefix: bool = False,
              from_key: bool = False) -> tuple[bytes, bytes]:
    """(key, range_end) on the wire for one key, a prefix, [key, range_end) or >= key."""
    k = to_bytes(key)
    if sum((range_end is not None, prefix, from_key)) > 1:
        raise ValueError("give at most one of range_end, prefix, from_key")
    if prefix:
        return (k or b"\x00"), prefix_end(k)
    if from_key:
        return (k or b"\x00"), b"\x00"
    return k, (b"" if range_end is None else to_bytes(range_end))


@dataclass(frozen=True, slots=True)
class Get:
    """A range read. `prefix`, `from_key` or `range_end` widen it from one key."""

    key: Bytes
    range_end: Bytes | None = None
    prefix: bool = False
    from_key: bool = False
    limit: int = 0
    revision: int = 0
    sort_order: SortOrder = "none"
    sort_target: SortTarget = "key"
    serializable: bool = False
    keys_only: bool = False
    count_only: bool = False
    min_mod_revision: int = 0
    max_mod_revision: int = 0
    min_create_revision: int = 0
    max_create_revision: int = 0

    def to_pb(self) -> rpc.RangeRequest:
        key, end = key_range(self.key, self.range_end, prefix=self.prefix,
                             from_key=self.from_key)
        return rpc.RangeRequest(
            key=key, range_end=end, limit=self.limit, revision=self.revision,
            sort_order=_SORT_ORDER[self.sort_order], sort_target=_SORT_TARGET[self.sort_target],
            serializable=self.serializable, keys_only=self.keys_only,
            count_only=self.count_only, min_mod_revision=self.min_mod_revision,
            max_mod_revision=self.max_mod_revision,
            min_create_revision=self.min_create_revision,
            max_create_revision=self.max_create_revision)

    def to_op(self) -> rpc.RequestOp:
        return rpc.RequestOp(request_range=self.to_pb())


@dataclass(frozen=True, slots=True)
class Put:
    key: Bytes
    value: Bytes = b""
    lease: int = 0
    prev_kv: bool = False
    ignore_value: bool = False
    ignore_lease: bool = False

    def to_pb(self) -> rpc.PutRequest:
        return rpc.PutRequest(key=to_bytes(self.key), value=to_bytes(self.value),
                              lease=self.lease, prev_kv=self.prev_kv,
                              ignore_value=self.ignore_value, ignore_lease=self.ignore_lease)

    def to_op(self) -> rpc.RequestOp:
        return rpc.RequestOp(request_put=self.to_pb())


@dataclass(frozen=True, slots=True)
class Delete:
    key: Bytes
    range_end: Bytes | None = None
    prefix: bool = False
    from_key: bool = False
    prev_kv: bool = False

    def to_pb(self) -> rpc.DeleteRangeRequest:
        key, end = key_range(self.key, self.range_end, prefix=self.prefix,
                             from_key=self.from_key)
        return rpc.DeleteRangeRequest(key=key, range_end=end, prev_kv=self.prev_kv)

    def to_op(self) -> rpc.RequestOp:
        return rpc.RequestOp(request_delete_range=self.to_pb())


# -- comparisons

_RESULT = {"==": rpc.Compare.EQUAL, "!=": rpc.Compare.NOT_EQUAL,
           "<": rpc.Compare.LESS, ">": rpc.Compare.GREATER}


@dataclass(frozen=True, slots=True)
class Compare:
    """One Txn condition; build it with Value/Version/CreateRevision/ModRevision/Lease."""

    target: int
    key: bytes
    op: str
    operand: bytes | int
    range_end: bytes = b""

    def to_pb(self) -> rpc.Compare:
        c = rpc.Compare(result=_RESULT[self.op], target=self.target,  # type: ignore[arg-type]
                        key=self.key, range_end=self.range_end)
        if self.target == rpc.Compare.VALUE:
            c.value = self.operand  # type: ignore[assignment]
        elif self.target == rpc.Compare.VERSION:
            c.version = self.operand  # type: ignore[assignment]
        elif self.target == rpc.Compare.CREATE:
            c.create_revision = self.operand  # type: ignore[assignment]
        elif self.target == rpc.Compare.MOD:
            c.mod_revision = self.operand  # type: ignore[assignment]
        else:
            c.lease = self.operand  # type: ignore[assignment]
        return c


class _Target:
    """`Target(key) == x` makes a Compare; `prefix=True` / `range_end` compare a range
    (every key in it must satisfy the condition)."""

    target: int = 0

    def __init__(self, key: Bytes, range_end: Bytes | None = None, *,
                 prefix: bool = False) -> None:
        self.key, self.range_end = key_range(key, range_end, prefix=prefix)

    def _cmp(self, op: str, other: Bytes | int) -> Compare:
        operand: bytes | int = other if isinstance(other, int) else to_bytes(other)
        if self.target == rpc.Compare.VALUE and isinstance(operand, int):
            raise TypeError("a value compares with str or bytes")
        if self.target != rpc.Compare.VALUE and not isinstance(operand, int):
            raise TypeError("versions, revisions and leases compare with int")
        return Compare(self.target, self.key, op, operand, self.range_end)

    def __eq__(self, other: object) -> Compare:  # type: ignore[override]
        return self._cmp("==", other)  # type: ignore[arg-type]

    def __ne__(self, other: object) -> Compare:  # type: ignore[override]
        return self._cmp("!=", other)  # type: ignore[arg-type]

    def __lt__(self, other: Bytes | int) -> Compare:
        return self._cmp("<", other)

    def __gt__(self, other: Bytes | int) -> Compare:
        return self._cmp(">", other)

    __hash__ = None  # type: ignore[assignment]


class Value(_Target):
    target = rpc.Compare.VALUE


class Version(_Target):
    target = rpc.Compare.VERSION


class CreateRevision(_Target):
    target = rpc.Compare.CREATE


class ModRevision(_Target):
    target = rpc.Compare.MOD


class LeaseId(_Target):
    target = rpc.Compare.LEASE


Op: TypeAlias = "Get | Put | Delete | Txn"


@dataclass(slots=True)
class Txn:
    """If every compare holds, run `success`, else `failure`, atomically at one revision.
    Also an op itself (a nested transaction)."""

    compare: list[Compare] = field(default_factory=list)
    success: list[Op] = field(default_factory=list)
    failure: list[Op] = field(default_factory=list)

    def when(self, *compares: Compare) -> Txn:
        self.compare.extend(compares)
        return self

    def then(self, *ops: Op) -> Txn:
        self.success.extend(ops)
        return self

    def otherwise(self, *ops: Op) -> Txn:
        self.failure.extend(ops)
        return self

    def to_pb(self) -> rpc.TxnRequest:
        return rpc.TxnRequest(compare=[c.to_pb() for c in self.compare],
                              success=[o.to_op() for o in self.success],
                              failure=[o.to_op() for o in self.failure])

    def to_op(self) -> rpc.RequestOp:
        return rpc.RequestOp(request_txn=self.to_pb())

    @property
    def read_only(self) -> bool:
        return all(isinstance(o, Get) or (isinstance(o, Txn) and o.read_only)
                   for o in (*self.success, *self.failure))


def make_txn(compare: Txn | Iterable[Compare] = (), success: Iterable[Op] = (),
             failure: Iterable[Op] = ()) -> Txn:
    if isinstance(compare, Txn):
        return compare
    return Txn(list(compare), list(success), list(failure))
