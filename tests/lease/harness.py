"""A member's apply path without the network: a real LMDB backend, KV store, KV
applier, lessor and lease applier, fed log entries directly. The lessor's clock is a
settable number so expiry can be stepped through exactly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from petcd.lease.apply import LeaseApplier
from petcd.lease.lessor import Lessor
from petcd.mvcc.backend import Backend
from petcd.mvcc.kvstore import KVStore
from petcd.mvcc.types import KVEvent
from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.server.apply import Applier
from petcd.server.kv_requests import KVRequests
from petcd.server.proposal import Committed


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class ApplyHarness:
    def __init__(self, path: Path, *, min_ttl: int = 2, persist_checkpoints: bool = False,
                 clock: Clock | None = None) -> None:
        self.path = path
        self.clock = clock or Clock()
        self.backend = Backend(str(path), sync=False)
        self.store = KVStore(self.backend)
        self.kv = KVRequests(self.store)
        self.applier = Applier(self.backend, self.kv)
        self.lessor = Lessor(self.backend, min_ttl=min_ttl,
                             persist_checkpoints=persist_checkpoints, clock=self.clock)
        self.lessor.recover(self.store)
        self.store.lessor = self.lessor
        LeaseApplier(self.lessor, self.store).register(self.applier.register)
        self.events: list[KVEvent] = []
        self.applier.add_commit_listener(lambda events, rev: self.events.extend(events))

    def apply(self, *requests: tuple[str, Any]) -> list[Any]:
        """Apply (kind, request) pairs as one batch; their results in order."""
        first = self.applier.applied_index + 1
        entries = [Committed(first + i, 1, kind, req) for i, (kind, req) in enumerate(requests)]
        return self.applier.apply(entries)

    def one(self, kind: str, request: Any) -> Any:
        return self.apply((kind, request))[0]

    def grant(self, lease_id: int, ttl: int) -> Any:
        return self.one("lease_grant", rpc.LeaseGrantRequest(ID=lease_id, TTL=ttl))

    def revoke(self, lease_id: int) -> Any:
        return self.one("lease_revoke", rpc.LeaseRevokeRequest(ID=lease_id))

    def put(self, key: bytes, value: bytes = b"v", lease: int = 0, **kw: Any) -> Any:
        return self.one("put", rpc.PutRequest(key=key, value=value, lease=lease, **kw))

    def keys(self) -> list[bytes]:
        resp = self.kv.range(rpc.RangeRequest(key=b"\0", range_end=b"\0"))
        return [kv.key for kv in resp.kvs]

    def close(self) -> None:
        self.backend.close()
