"""The asyncio recipes: `AsyncSession`, `AsyncLock`, `AsyncElection` here, and (re-exported)
`AsyncSTM`/`run_stm_async`, `AsyncQueue`, `AsyncPriorityQueue`, `AsyncBarrier`,
`AsyncDoubleBarrier`, with the same keys and semantics as their blocking twins (a
blocking `Lock` and an `AsyncLock` on the same name exclude each other).

    async with AsyncClient(endpoints) as c, AsyncSession(c, ttl=10) as s:
        async with AsyncLock(s, "jobs/lock") as lock:
            await c.txn(Txn().when(lock.is_owner()).then(Put("jobs/state", "mine")))
        e = AsyncElection(s, "svc/leader")
        await e.campaign("node-1")
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from petcd.client.aio import AsyncClient
from petcd.client.aio_streams import AsyncKeepAlive
from petcd.client.errors import DeadlineExceededError, EtcdError
from petcd.client.ops import Bytes, Compare, CreateRevision, Delete, Put, Txn, to_bytes
from petcd.client.recipes._aio_wait import wait_deletes
from petcd.client.recipes._claim import claim, holds, place
from petcd.client.recipes._wait import deadline_of
from petcd.client.recipes.aio_queue import (
    AsyncBarrier,
    AsyncDoubleBarrier,
    AsyncPriorityQueue,
    AsyncQueue,
)
from petcd.client.recipes.aio_stm import AsyncSTM, run_stm_async
from petcd.client.recipes.election import NotLeaderError
from petcd.client.types import EventType, KeyValue

__all__ = ["AsyncBarrier", "AsyncDoubleBarrier", "AsyncElection", "AsyncLock",
           "AsyncPriorityQueue", "AsyncQueue", "AsyncSTM", "AsyncSession", "run_stm_async"]


class AsyncSession:
    """A lease kept alive by a task; see `Session`. Create with `await
    AsyncSession.create(client, ttl)` or `async with AsyncSession(client, ttl)`."""

    def __init__(self, client: AsyncClient, ttl: int = 60) -> None:
        self.client = client
        self.ttl = ttl
        self.lease = 0
        self._keepalive: AsyncKeepAlive | None = None

    @classmethod
    async def create(cls, client: AsyncClient, ttl: int = 60) -> AsyncSession:
        s = cls(client, ttl)
        await s.open()
        return s

    async def open(self) -> None:
        self.lease = (await self.client.lease_grant(self.ttl)).id
        self._keepalive = self.client.keep_alive(self.lease)

    @property
    def done(self) -> bool:
        return self._keepalive is not None and self._keepalive.lost is not None

    async def wait_done(self, timeout: float | None = None) -> EtcdError | None:
        assert self._keepalive is not None
        return await self._keepalive.wait_lost(timeout)

    async def close(self) -> None:
        if self._keepalive is not None:
            await self._keepalive.stop()
        with contextlib.suppress(EtcdError):
            await self.client.lease_revoke(self.lease)

    async def __aenter__(self) -> AsyncSession:
        if not self.lease:
            await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class AsyncLock:
    """A fair mutex (creation order); see `Lock`. `acquire(timeout)` returns False when
    the timeout passed (the queue entry is withdrawn)."""

    def __init__(self, session: AsyncSession, name: str) -> None:
        self.session = session
        self.client = session.client
        self.prefix = name + "/"
        self.key = ""
        self.revision = -1

    async def acquire(self, timeout: float | None = None) -> bool:
        self.key, txn = claim(self.prefix, self.session.lease, "", with_holder=True)
        r = await self.client.txn(txn)
        self.revision, _ = place(r)
        if holds(r, self.revision):
            return True
        try:
            await wait_deletes(self.client, self.prefix, self.revision - 1,
                               deadline_of(timeout))
        except DeadlineExceededError:
            await self._abandon()
            return False
        except BaseException:
            await self._abandon()
            raise
        return True

    async def _abandon(self) -> None:
        with contextlib.suppress(EtcdError):
            await self.client.delete(self.key)
        self.key, self.revision = "", -1

    async def release(self) -> None:
        await self.client.delete(self.key)
        self.key, self.revision = "", -1

    def is_owner(self) -> Compare:
        return CreateRevision(self.key or "\0") == self.revision

    async def __aenter__(self) -> AsyncLock:
        await self.acquire()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.release()


class AsyncElection:
    """Leader election; see `Election`."""

    def __init__(self, session: AsyncSession, name: str) -> None:
        self.session = session
        self.client = session.client
        self.prefix = name + "/"
        self.key = ""
        self.revision = -1

    async def campaign(self, value: Bytes, timeout: float | None = None) -> None:
        """Become leader (waits until then; DeadlineExceededError after `timeout`, and
        the candidacy is withdrawn)."""
        deadline = deadline_of(timeout)
        self.key, txn = claim(self.prefix, self.session.lease, value)
        self.revision, before = place(await self.client.txn(txn))
        if before is not None and before.value != to_bytes(value):
            await self.proclaim(value)
        try:
            await wait_deletes(self.client, self.prefix, self.revision - 1, deadline)
        except BaseException:
            with contextlib.suppress(EtcdError):
                await self.resign()
            raise

    def is_leader(self) -> Compare:
        return CreateRevision(self.key or "\0") == self.revision

    async def proclaim(self, value: Bytes) -> None:
        if not self.key:
            raise NotLeaderError("election: not leader")
        r = await self.client.txn(Txn().when(self.is_leader())
                                  .then(Put(self.key, value, lease=self.session.lease)))
        if not r.succeeded:
            self.key = ""
            raise NotLeaderError("election: not leader")

    async def resign(self) -> None:
        if self.key:
            await self.client.txn(Txn().when(self.is_leader()).then(Delete(self.key)))
        self.key, self.revision = "", -1

    async def leader(self) -> KeyValue | None:
        r = await self.client.get(self.prefix, prefix=True, sort_target="create",
                                  sort_order="ascend", limit=1)
        return r.kvs[0] if r.kvs else None

    async def observe(self) -> AsyncIterator[KeyValue]:
        """Every leader and every proclamation, in order, as they happen (an async
        generator; `aclose()` it, or break out, to stop)."""
        while True:
            r = await self.client.get(self.prefix, prefix=True, sort_target="create",
                                      sort_order="ascend", limit=1)
            rev = r.header.revision + 1
            if r.kvs:
                leader = r.kvs[0]
            else:  # no leader yet: wait for the first candidate
                leader = await self._first_put(rev)
                rev = leader.mod_revision + 1
            yield leader
            async with await self.client.watch(leader.key, start_revision=rev) as w:
                gone = False
                async for batch in w:
                    for e in batch.events:
                        if e.type is EventType.DELETE:
                            gone = True
                            break
                        yield e.kv
                    if gone:
                        break

    async def _first_put(self, rev: int) -> KeyValue:
        async with await self.client.watch(self.prefix, prefix=True,
                                           start_revision=rev) as w:
            async for batch in w:
                for e in batch.events:
                    if e.type is EventType.PUT:
                        return e.kv
        raise EtcdError("election: watch ended")
