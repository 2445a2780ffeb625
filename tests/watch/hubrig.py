"""A watch hub on a real store (LMDB in a temporary directory) driven by the real
Applier, without gRPC: requests are applied in batches of our choosing, the hub is
notified from the commit listener, and streams are drained by the tests."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

from petcd.mvcc.backend import Backend
from petcd.mvcc.kvstore import KVStore
from petcd.mvcc.types import KVEvent
from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.server import proposal as P
from petcd.server.apply import Applier
from petcd.server.kv_requests import KVRequests
from petcd.server.proposal import Committed
from petcd.server.watch import WatchHub, WatchStream

KINDS = {rpc.PutRequest: P.PUT, rpc.DeleteRangeRequest: P.DELETE_RANGE, rpc.TxnRequest: P.TXN,
         rpc.CompactionRequest: P.COMPACTION}


class HubRig:
    """Must be created inside a running event loop (the hub schedules on it)."""

    def __init__(self, data_dir: str, **hub_kw: Any) -> None:
        self.backend = Backend(os.path.join(data_dir, "db"), map_size=1 << 30, sync=False)
        self.store = KVStore(self.backend)
        self.applier = Applier(self.backend, KVRequests(self.store))
        kw: dict[str, Any] = {"response_limit": 1 << 20, "progress_interval": 0.0}
        kw.update(hub_kw)
        self.hub = WatchHub(self.store, cluster_id=11, member_id=22, term=lambda: 3, **kw)
        self.history: list[KVEvent] = []  # every event, with prev_kv, for the model
        self.applier.add_commit_listener(lambda evs, rev: self.history.extend(evs))
        self.applier.add_commit_listener(self.hub.commit_listener())  # as a member does
        self._iters: dict[WatchStream, AsyncIterator[bytes]] = {}

    def apply(self, *requests: Any) -> list[Any]:
        """One batch; returns the results (responses or EtcdErrors)."""
        first = self.applier.applied_index + 1
        return self.applier.apply([Committed(first + i, 1, KINDS[type(r)], r)
                                   for i, r in enumerate(requests)])

    def put(self, key: bytes, value: bytes = b"v") -> int:
        resp = self.apply(rpc.PutRequest(key=key, value=value))[0]
        return int(resp.header.revision)

    @property
    def revision(self) -> int:
        return self.store.current_revision

    async def take(self, stream: WatchStream, limit: int = 1 << 30) -> list[rpc.WatchResponse]:
        """Up to `limit` responses already queued on the stream (never waits for more),
        after those its outlet (if it is a FakeOutlet) took since the last take."""
        it = self._iters.get(stream)
        if it is None:
            it = self._iters[stream] = stream.messages()
        out = []
        if isinstance(stream.outlet, FakeOutlet):
            # Taken only while nothing was queued: they came before what is queued now.
            out = [rpc.WatchResponse.FromString(m) for m in stream.outlet.wire]
            stream.outlet.wire.clear()
        while stream.out and len(out) < limit:
            out.append(rpc.WatchResponse.FromString(await anext(it)))
        return out

    async def settle(self) -> None:
        """Let scheduled catch-up rounds run until the hub has nothing to do."""
        for _ in range(10_000):
            await asyncio.sleep(0)
            if not self.hub._sync_scheduled:
                return
        raise AssertionError("catch-up never settles")

    def close(self) -> None:
        for s in list(self.hub.streams):
            s.close()
        self.backend.close()


class FakeOutlet:
    """A client's end of a stream that takes responses directly (as petcd's h2 Call
    does) unless `refuse()` says it is backed up."""

    def __init__(self, refuse: Any = lambda: False) -> None:
        self.wire: list[bytes] = []
        self.refuse = refuse
        self.flushes = 0
        self.unflushed = 0  # responses taken with held=True and not flushed since

    def offer(self, msg: bytes, held: bool = False) -> bool:
        if self.refuse():
            return False
        self.wire.append(bytes(msg))
        if held:
            self.unflushed += 1
        return True

    def flush(self) -> None:
        self.flushes += 1
        self.unflushed = 0


def create(stream: WatchStream, key: bytes, end: bytes = b"", **kw: Any) -> None:
    stream.create(rpc.WatchCreateRequest(key=key, range_end=end, **kw))
