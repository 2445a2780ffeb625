"""Queue and PriorityQueue: multi-producer, multi-consumer queues in etcd keys
(etcd's contrib/recipes semantics)."""

from __future__ import annotations

import time

from petcd.client.errors import DeadlineExceededError
from petcd.client.ops import Bytes, ModRevision, Put, Txn, Version
from petcd.client.ops import Delete as DeleteOp
from petcd.client.recipes._wait import deadline_of, wait_event
from petcd.client.sync import Client
from petcd.client.types import EventType, GetResult, KeyValue


def _claim(client: Client, kvs: list[KeyValue]) -> KeyValue | None:
    """Delete the first of `kvs` nobody else took (compare on its mod revision)."""
    for kv in kvs:
        r = client.txn(Txn().when(ModRevision(kv.key) == kv.mod_revision)
                       .then(DeleteOp(kv.key)))
        if r.succeeded:
            return kv
    return None


class _Base:
    def __init__(self, client: Client, name: str) -> None:
        self.client = client
        self.prefix = name + "/"

    def _first(self) -> GetResult:
        raise NotImplementedError

    def get(self, timeout: float | None = None) -> bytes:
        """Take the item at the head (waits for one; DeadlineExceededError after
        `timeout` seconds)."""
        deadline = deadline_of(timeout)
        while True:
            r = self._first()
            kv = _claim(self.client, r.kvs)
            if kv is not None:
                return kv.value
            if r.more:
                continue
            try:
                e = wait_event(self.client, self.prefix, r.header.revision + 1,
                               (EventType.PUT,), deadline, prefix=True)
            except DeadlineExceededError:
                raise DeadlineExceededError("queue: nothing to take") from None
            # Something arrived: take the head again (it may not be the new item for a
            # priority queue, and another consumer may have taken it).
            del e

    def __len__(self) -> int:
        return self.client.get(self.prefix, prefix=True, count_only=True).count


class Queue(_Base):
    """A FIFO queue: items are keys `name/<time ns>`, taken in creation order.

        q = Queue(client, "jobs")
        q.put("job-1"); q.put("job-2")
        assert q.get() == b"job-1"
    """

    def put(self, value: Bytes) -> int:
        """Append an item; returns its revision."""
        while True:
            key = f"{self.prefix}{time.time_ns()}"
            r = self.client.txn(Txn().when(Version(key) == 0).then(Put(key, value)))
            if r.succeeded:
                return r.header.revision

    def _first(self) -> GetResult:
        return self.client.get(self.prefix, prefix=True, sort_target="create",
                               sort_order="ascend", limit=1)


class PriorityQueue(_Base):
    """A priority queue: the lowest `priority` (0..65535) first, FIFO within one.
    Items are keys `name/<priority:05d>/<sequence:016d>`.

        pq = PriorityQueue(client, "work")
        pq.put("later", 10); pq.put("urgent", 1)
        assert pq.get() == b"urgent"
    """

    def put(self, value: Bytes, priority: int) -> int:
        if not 0 <= priority <= 0xFFFF:
            raise ValueError("priority is 0..65535")
        sub = f"{self.prefix}{priority:05d}"
        guard = "__" + sub  # bumped by every put at this priority: serializes numbering
        while True:
            last = self.client.get(sub + "/", prefix=True, sort_target="key",
                                   sort_order="descend", limit=1)
            seq = int(last.kvs[0].key.rsplit(b"/", 1)[1]) + 1 if last.kvs else 0
            r = self.client.txn(Txn().when(ModRevision(guard) < last.header.revision + 1)
                                .then(Put(guard, ""), Put(f"{sub}/{seq:016d}", value)))
            if r.succeeded:
                return r.header.revision

    def _first(self) -> GetResult:
        return self.client.get(self.prefix, prefix=True, sort_target="key",
                               sort_order="ascend", limit=1)
