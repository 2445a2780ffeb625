"""Taking a place in line under a name, as etcd's concurrency package does: the key
`<name>/<lease hex>`, created under the session's lease unless this session already has
one (then its place is kept). Shared by Lock, Election and their asyncio forms."""

from __future__ import annotations

from petcd.client.ops import Bytes, CreateRevision, Get, Put, Txn
from petcd.client.types import GetResult, KeyValue, TxnResult


def oldest(prefix: str) -> Get:
    """The first key in line (the holder, or the leader)."""
    return Get(prefix, prefix=True, sort_target="create", sort_order="ascend", limit=1)


def claim(prefix: str, lease: int, value: Bytes, *, with_holder: bool = False
          ) -> tuple[str, Txn]:
    """(our key, the Txn that queues it); with_holder: the Txn also reads the holder."""
    key = f"{prefix}{lease:x}"
    also = [oldest(prefix)] if with_holder else []
    return key, (Txn().when(CreateRevision(key) == 0)
                 .then(Put(key, value, lease=lease), *also).otherwise(Get(key), *also))


def place(r: TxnResult) -> tuple[int, KeyValue | None]:
    """(our key's create revision, our key as it was if we had queued before)."""
    if r.succeeded:
        return r.header.revision, None
    mine = r.responses[0]
    assert isinstance(mine, GetResult)
    return mine.kvs[0].create_revision, mine.kvs[0]


def holds(r: TxnResult, revision: int) -> bool:
    """Whether a `claim(..., with_holder=True)` found us first in line."""
    first = r.responses[1]
    assert isinstance(first, GetResult)
    return not first.kvs or first.kvs[0].create_revision == revision
