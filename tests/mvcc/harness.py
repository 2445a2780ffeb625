"""A store opened the way the server opens it, with a minimal apply loop
(skip entries at or below the consistent index, one batch per call)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from petcd.mvcc import Backend, KVStore, WriteBatch
from petcd.pb.etcdserverpb import rpc_pb2 as pb
from petcd.server.kv_requests import KVRequests

Request = pb.PutRequest | pb.DeleteRangeRequest | pb.TxnRequest | pb.CompactionRequest


class Index:
    """Raft indexes for Member.apply(): 1, 2, 3, ..."""

    def __init__(self) -> None:
        self.i = 0

    def __call__(self) -> int:
        self.i += 1
        return self.i


class Member:
    def __init__(self, data_dir: str, *, sync: bool = False) -> None:
        self.path = os.path.join(data_dir, "member", "snap", "db")
        self.sync = sync
        self.open()

    def open(self) -> None:
        self.backend = Backend(self.path, map_size=1 << 30, sync=self.sync)
        self.store = KVStore(self.backend)
        self.kv = KVRequests(self.store)

    def reopen(self) -> None:
        self.backend.close()
        self.open()

    def close(self) -> None:
        self.backend.close()

    def dispatch(self, batch: WriteBatch, req: Any) -> Any:
        if isinstance(req, pb.PutRequest):
            return self.kv.put(batch, req)
        if isinstance(req, pb.DeleteRangeRequest):
            return self.kv.delete_range(batch, req)
        if isinstance(req, pb.TxnRequest):
            return self.kv.txn(batch, req)
        if isinstance(req, pb.CompactionRequest):
            return self.kv.compact(batch, req)
        if isinstance(req, pb.RangeRequest):
            return self.kv.range(req, batch)
        raise TypeError(req)

    def apply(self, entries: Sequence[tuple[int, Any]], term: int = 1) -> list[Any]:
        """Apply (index, request) entries in one batch, as the server's apply
        loop does: entries already applied are skipped; a request's
        EtcdError is its result."""
        from petcd.errors import EtcdError

        applied, _ = self.backend.consistent_index()
        results: list[Any] = []
        todo = [(i, r) for i, r in entries if i > applied]
        if not todo:
            return results
        with self.backend.begin_write() as batch:
            for _, req in todo:
                try:
                    results.append(self.dispatch(batch, req))
                except EtcdError as err:
                    results.append(err)
            batch.set_consistent_index(todo[-1][0], term)
        return results

    def kv_records(self) -> dict[bytes, bytes]:
        with self.backend.read() as txn:
            return dict(txn.cursor(db=self.store._kv))
