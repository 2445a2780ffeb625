"""Small value types shared by the MVCC store and the layers that use it."""

from __future__ import annotations

from typing import NamedTuple, Protocol

from petcd.pb.mvccpb import kv_pb2

EVENT_PUT = kv_pb2.Event.PUT
EVENT_DELETE = kv_pb2.Event.DELETE


class KVEvent(NamedTuple):
    """One change made by a write, as a watcher will see it.

    `kv` and `prev_kv` are serialized mvccpb.KeyValue records: for a DELETE,
    `kv` holds only the key and the deleting revision (mod_revision), as etcd
    sends it. `prev_kv` is the key's record just before this change, or None
    if the key did not exist (or, for events read back from history, was not
    looked up).
    """

    revision: int
    type: int  # EVENT_PUT or EVENT_DELETE
    key: bytes
    kv: bytes
    prev_kv: bytes | None

    def to_pb(self, with_prev_kv: bool = False) -> kv_pb2.Event:
        ev = kv_pb2.Event(type=self.type)  # type: ignore[arg-type]
        ev.kv.MergeFromString(self.kv)
        if with_prev_kv and self.prev_kv is not None:
            ev.prev_kv.MergeFromString(self.prev_kv)
        return ev


class RangeResult:
    """What a range read found.

    kvs: serialized mvccpb.KeyValue records, in key order, at most `limit`.
    count: how many keys the range holds at that revision (limit ignored).
    revision: the store's revision as seen by the read (the response header
    revision), not the historical revision that was read.
    """

    __slots__ = ("count", "kvs", "revision")

    def __init__(self, kvs: list[bytes], count: int, revision: int) -> None:
        self.kvs = kvs
        self.count = count
        self.revision = revision

    def __repr__(self) -> str:
        return f"RangeResult(kvs={self.kvs!r}, count={self.count}, revision={self.revision})"


class LeaseHook(Protocol):
    """What the KV store needs from the lessor (issue 7).

    The store calls `attach`/`detach` once a request's changes are in the
    batch (never for a request that failed): a put with a lease attaches the
    key, a put that replaces a leased value or a delete detaches it.
    """

    def lease_exists(self, lease_id: int) -> bool: ...
    def attach(self, lease_id: int, key: bytes) -> None: ...
    def detach(self, lease_id: int, key: bytes) -> None: ...
