"""The v2 keys store as a state machine of the log (etcd's v2store, served behind
--enable-v2 by api/v2http). Every change is a `v2` InternalRequest applied in log
order on every member (whether or not it serves the v2 API, so that members agree);
its records live in the backend's `v2store` database, written in the applying batch,
so they are in every Raft snapshot and survive restarts with the consistent index.

TTLs: expiration times are chosen by the proposer; the leader proposes a SYNC with its
clock every SYNC_INTERVAL while TTL keys exist, and applying it expires the keys due,
so expiry is decided once and reaches every member through the log (as etcd)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from petcd.mvcc.backend import Backend, WriteBatch
from petcd.pb.internalpb.internal_pb2 import V2Request
from petcd.v2store import Event, Store, V2Error, codec

log = logging.getLogger("petcd.v2")

V2 = "v2"  # the InternalRequest kind
V2_DB = b"v2store"
SYNC_INTERVAL = 0.5  # etcd's: how often the leader expires due TTL keys

Propose = Callable[[str, bytes, Any], "asyncio.Future[Any]"]


class V2Keys:
    def __init__(self, backend: Backend, register: Callable[[str, Callable[[Any, Any], Any]],
                                                            None],
                 is_leader: Callable[[], bool], propose: Propose) -> None:
        self.store = Store()
        self._backend = backend
        self._db = backend.open_db(V2_DB)
        self._is_leader = is_leader
        self._propose = propose
        self._task: asyncio.Task[None] | None = None
        self.load()
        backend.reopen_hooks.append(self._reopen)
        register(V2, self._apply)

    def _reopen(self) -> None:
        self._db = self._backend.open_db(V2_DB)

    def load(self) -> None:
        """(Re)read the store from the backend (at start, and by the Node after a
        snapshot from the leader replaced the file)."""
        with self._backend.read() as txn:
            codec.load(self.store, txn.cursor(db=self._db))
        log.debug("v2 store loaded at index %d", self.store.index)

    # -- apply (on every member, in log order)
    def _apply(self, batch: WriteBatch, req: V2Request) -> Event | V2Error | None:
        """The request's event, or the V2Error it failed with (nothing changed)."""
        answer: Event | V2Error | None
        try:
            answer = self._run(req)
        except V2Error as e:
            answer = e
        self._flush(batch)
        return answer

    def _run(self, r: V2Request) -> Event | None:
        s = self.store
        m = r.method
        path, val, prev = _text(r.path), _text(r.val), _text(r.prev_value)
        if m == "PUT":
            refresh = r.refresh
            if r.HasField("prev_exist"):
                if r.prev_exist:
                    if r.prev_index == 0 and prev == "":
                        return s.update(path, val, r.expiration, refresh)
                    return s.compare_and_swap(path, prev, r.prev_index, val, r.expiration,
                                              refresh)
                return s.create(path, r.dir, val, False, r.expiration)
            if r.prev_index > 0 or prev:
                return s.compare_and_swap(path, prev, r.prev_index, val, r.expiration, refresh)
            return s.set(path, r.dir, val, r.expiration, refresh)
        if m == "POST":
            return s.create(path, r.dir, val, True, r.expiration)
        if m == "DELETE":
            if r.prev_index > 0 or prev:
                return s.compare_and_delete(path, prev, r.prev_index)
            return s.delete(path, r.dir, r.recursive)
        if m == "QGET":
            return s.get(path, r.recursive, r.sorted)
        if m == "SYNC":
            s.delete_expired(r.time)
            return None
        log.error("unknown v2 method %r at index %d; ignored", m, s.index)
        return None

    def _flush(self, batch: WriteBatch) -> None:
        """The store's changes into the batch: nodes, the index, the history window."""
        s = self.store
        if not s.journal and not s.new_events:
            return
        txn, db = batch.txn, self._db
        for path, node in s.journal:
            key = codec.node_key(path)
            if node is None:
                txn.delete(key, db=db)
                _delete_subtree(txn, db, path)
            elif not node.dead:
                txn.put(key, codec.encode_node(node), db=db)
        s.journal.clear()
        for e in s.new_events:
            txn.put(codec.event_key(e.index), codec.encode_event(e), db=db)
            old = e.index - len(s.hub.history.events)
            if old > 0:
                txn.delete(codec.event_key(old), db=db)
        s.new_events.clear()
        txn.put(codec.INDEX_KEY, codec.encode_index(s.index), db=db)

    # -- the leader's expiry clock
    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._sync_loop(), name="v2-sync")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _sync_loop(self) -> None:
        while True:
            await asyncio.sleep(SYNC_INTERVAL)
            if not self._is_leader() or not self.store.has_ttl_keys():
                continue
            req = V2Request(method="SYNC", time=time.time_ns())
            try:
                await self._propose(V2, req.SerializeToString(), req)
            except Exception:  # a lost SYNC is simply proposed again next round
                log.debug("v2 SYNC failed", exc_info=True)


def _text(raw: bytes) -> str:
    """Client bytes as the store's text (bytes that are not UTF-8 kept as they are)."""
    return raw.decode("utf-8", "surrogateescape")


def _delete_subtree(txn: Any, db: Any, path: str) -> None:
    """Every record under the directory `path` (long paths: by their whole path)."""
    scan, prefix = codec.subtree_scan(path)
    cursor = txn.cursor(db=db)
    if not cursor.set_range(scan):
        return
    while True:
        key = cursor.key()
        if not key.startswith(scan):
            return
        if codec.record_path(key, cursor.value()).startswith(prefix):
            if not cursor.delete():
                return
        elif not cursor.next():
            return
