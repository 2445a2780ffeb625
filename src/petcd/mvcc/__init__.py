"""Multi-version key-value store on LMDB: etcd's mvcc in Python."""

from petcd.mvcc.backend import Backend, WriteBatch
from petcd.mvcc.kvstore import KVStore, KVView, ReadTxn, TxnWrite
from petcd.mvcc.types import EVENT_DELETE, EVENT_PUT, KVEvent, LeaseHook, RangeResult

__all__ = [
    "EVENT_DELETE",
    "EVENT_PUT",
    "Backend",
    "KVEvent",
    "KVStore",
    "KVView",
    "LeaseHook",
    "RangeResult",
    "ReadTxn",
    "TxnWrite",
    "WriteBatch",
]
