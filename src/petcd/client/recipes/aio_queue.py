"""The asyncio forms of petcd.client.recipes.queue and .barrier: `AsyncQueue`,
`AsyncPriorityQueue`, `AsyncBarrier`, `AsyncDoubleBarrier`. Same keys and semantics as
the blocking ones, so blocking and asyncio participants can share one queue or barrier.

    q = AsyncQueue(client, "jobs")
    await q.put("job-1")
    item = await q.get(timeout=10)
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from petcd.client.aio import AsyncClient
from petcd.client.errors import DeadlineExceededError
from petcd.client.ops import Bytes, ModRevision, Put, Txn, Version
from petcd.client.ops import Delete as DeleteOp
from petcd.client.recipes._aio_wait import wait_event
from petcd.client.recipes._wait import deadline_of
from petcd.client.recipes.barrier import TooManyClientsError
from petcd.client.types import EventType, GetResult, KeyValue

if TYPE_CHECKING:
    from petcd.client.recipes.aio import AsyncSession


async def _claim(client: AsyncClient, kvs: list[KeyValue]) -> KeyValue | None:
    """Delete the first of `kvs` nobody else took (compare on its mod revision)."""
    for kv in kvs:
        r = await client.txn(Txn().when(ModRevision(kv.key) == kv.mod_revision)
                             .then(DeleteOp(kv.key)))
        if r.succeeded:
            return kv
    return None


class _AsyncBase:
    def __init__(self, client: AsyncClient, name: str) -> None:
        self.client = client
        self.prefix = name + "/"

    async def _first(self) -> GetResult:
        raise NotImplementedError

    async def get(self, timeout: float | None = None) -> bytes:
        """Take the item at the head (waits for one; DeadlineExceededError after
        `timeout` seconds)."""
        deadline = deadline_of(timeout)
        while True:
            r = await self._first()
            kv = await _claim(self.client, r.kvs)
            if kv is not None:
                return kv.value
            if r.more:
                continue
            try:
                await wait_event(self.client, self.prefix, r.header.revision + 1,
                                 (EventType.PUT,), deadline, prefix=True)
            except DeadlineExceededError:
                raise DeadlineExceededError("queue: nothing to take") from None

    async def size(self) -> int:
        return (await self.client.get(self.prefix, prefix=True, count_only=True)).count


class AsyncQueue(_AsyncBase):
    """A FIFO queue (keys `name/<time ns>`); see `Queue`."""

    async def put(self, value: Bytes) -> int:
        """Append an item; returns its revision."""
        while True:
            key = f"{self.prefix}{time.time_ns()}"
            r = await self.client.txn(Txn().when(Version(key) == 0).then(Put(key, value)))
            if r.succeeded:
                return r.header.revision

    async def _first(self) -> GetResult:
        return await self.client.get(self.prefix, prefix=True, sort_target="create",
                                     sort_order="ascend", limit=1)


class AsyncPriorityQueue(_AsyncBase):
    """Lowest priority first, FIFO within one; see `PriorityQueue`."""

    async def put(self, value: Bytes, priority: int) -> int:
        if not 0 <= priority <= 0xFFFF:
            raise ValueError("priority is 0..65535")
        sub = f"{self.prefix}{priority:05d}"
        guard = "__" + sub
        while True:
            last = await self.client.get(sub + "/", prefix=True, sort_target="key",
                                         sort_order="descend", limit=1)
            seq = int(last.kvs[0].key.rsplit(b"/", 1)[1]) + 1 if last.kvs else 0
            r = await self.client.txn(
                Txn().when(ModRevision(guard) < last.header.revision + 1)
                .then(Put(guard, ""), Put(f"{sub}/{seq:016d}", value)))
            if r.succeeded:
                return r.header.revision

    async def _first(self) -> GetResult:
        return await self.client.get(self.prefix, prefix=True, sort_target="key",
                                     sort_order="ascend", limit=1)


class AsyncBarrier:
    """Holds everyone who waits on it until it is released; see `Barrier`."""

    def __init__(self, client: AsyncClient, name: str) -> None:
        self.client = client
        self.key = name

    async def hold(self) -> bool:
        return (await self.client.txn(Txn().when(Version(self.key) == 0)
                                      .then(Put(self.key, "")))).succeeded

    async def release(self) -> None:
        await self.client.delete(self.key)

    async def wait(self, timeout: float | None = None) -> None:
        r = await self.client.get(self.key)
        if not r.kvs:
            return
        await wait_event(self.client, self.key, r.header.revision + 1, (EventType.DELETE,),
                         deadline_of(timeout))


class AsyncDoubleBarrier:
    """`count` participants enter together and leave together; see `DoubleBarrier`."""

    def __init__(self, session: AsyncSession, name: str, count: int) -> None:
        self.session = session
        self.client = session.client
        self.name = name
        self.count = count
        self.my_key = ""
        self.my_rev = 0

    async def enter(self, timeout: float | None = None) -> None:
        waiters = self.name + "/waiters/"
        while True:
            key = f"{waiters}{time.time_ns()}"
            r = await self.client.txn(Txn().when(Version(key) == 0)
                                      .then(Put(key, "", lease=self.session.lease)))
            if r.succeeded:
                self.my_key, self.my_rev = key, r.header.revision
                break
        n = (await self.client.get(waiters, prefix=True, count_only=True)).count
        if n > self.count:
            raise TooManyClientsError(f"double barrier: more than {self.count} entered")
        if n == self.count:
            await self.client.put(self.name + "/ready", "")
            return
        await wait_event(self.client, self.name + "/ready", self.my_rev, (EventType.PUT,),
                         deadline_of(timeout))

    async def leave(self, timeout: float | None = None) -> None:
        deadline = deadline_of(timeout)
        waiters = self.name + "/waiters/"
        me = self.my_key.encode()
        while True:
            r = await self.client.get(waiters, prefix=True)
            if not r.kvs:
                return
            lowest = min(r.kvs, key=lambda kv: kv.mod_revision)
            highest = max(r.kvs, key=lambda kv: kv.mod_revision)
            if len(r.kvs) == 1 and r.kvs[0].key == me:
                await self.client.delete(self.name + "/ready")
                await self.client.delete(self.my_key)
                return
            if lowest.key == me:
                await wait_event(self.client, highest.key, r.header.revision + 1,
                                 (EventType.DELETE,), deadline)
                continue
            await self.client.delete(self.my_key)
            await wait_event(self.client, lowest.key, r.header.revision + 1,
                             (EventType.DELETE,), deadline)
            return
