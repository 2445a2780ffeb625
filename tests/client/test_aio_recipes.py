"""The asyncio recipes against petcd and etcd 3.4 (as test_recipes checks the blocking
ones): STM transfers under contention keep the total, queue and priority-queue order and
timeouts, barriers, double barriers, and election observe() seeing every leader change in
order. Blocking and asyncio participants share keys, so some steps mix the two."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import pytest

from petcd.client import AsyncClient, Client
from petcd.client.errors import DeadlineExceededError
from petcd.client.recipes import Queue
from petcd.client.recipes.aio import (
    AsyncBarrier,
    AsyncDoubleBarrier,
    AsyncElection,
    AsyncPriorityQueue,
    AsyncQueue,
    AsyncSession,
    AsyncSTM,
    run_stm_async,
)
from petcd.testing import MemberProcess


def test_async_stm_transfers_keep_the_total(backend: MemberProcess, pfx: str) -> None:
    accounts = [f"{pfx}acct/{i}" for i in range(4)]
    runs = [0]

    async def worker(seed: int) -> None:
        rnd = random.Random(seed)
        async with AsyncClient(backend.address) as c:
            for _ in range(12):
                src, dst = rnd.sample(accounts, 2)
                amount = rnd.randint(1, 30)

                async def transfer(stm: AsyncSTM, src: str = src, dst: str = dst,
                                   amount: int = amount) -> None:
                    runs[0] += 1
                    s = int(await stm.get(src) or b"0")
                    d = int(await stm.get(dst) or b"0")
                    await asyncio.sleep(0)  # let the other workers interleave
                    if s >= amount:
                        stm.put(src, str(s - amount))
                        stm.put(dst, str(d + amount))
                await run_stm_async(c, transfer)

    async def main() -> None:
        async with AsyncClient(backend.address) as c:
            for a in accounts:
                await c.put(a, "100")
            await asyncio.gather(*(worker(i) for i in range(4)))
            values = [int((await c.get(a)).value or b"0") for a in accounts]
        assert sum(values) == 400 and min(values) >= 0
        assert runs[0] >= 48  # every transfer ran (conflicts rerun some)

    asyncio.run(main())


def test_async_queues(backend: MemberProcess, pfx: str) -> None:
    async def main() -> None:
        async with AsyncClient(backend.address) as c:
            q = AsyncQueue(c, pfx + "q")
            for i in range(4):
                await q.put(f"item{i}")
            with Client(backend.address) as sc:  # a blocking producer on the same queue
                Queue(sc, pfx + "q").put("item4")
            assert await q.size() == 5
            assert [await q.get() for _ in range(5)] == [f"item{i}".encode() for i in range(5)]
            with pytest.raises(DeadlineExceededError):
                await q.get(timeout=0.3)
            taker = asyncio.ensure_future(q.get(timeout=20))
            await asyncio.sleep(0.3)
            assert not taker.done()
            await q.put("late")
            assert await taker == b"late"

            pq = AsyncPriorityQueue(c, pfx + "pq")
            for value, prio in [("c", 5), ("a", 1), ("d", 5), ("b", 1), ("e", 9)]:
                await pq.put(value, prio)
            assert [await pq.get() for _ in range(5)] == [b"a", b"b", b"c", b"d", b"e"]
            with pytest.raises(ValueError):
                await pq.put("x", 70000)

    asyncio.run(main())


def test_async_barriers(backend: MemberProcess, pfx: str) -> None:
    async def main() -> None:
        async with AsyncClient(backend.address) as c:
            b = AsyncBarrier(c, pfx + "gate")
            await b.wait()  # not up: returns at once
            assert await b.hold() and not await b.hold()
            waiter = asyncio.ensure_future(b.wait())
            await asyncio.sleep(0.3)
            assert not waiter.done()
            with pytest.raises(DeadlineExceededError):
                await b.wait(timeout=0.2)
            await b.release()
            await asyncio.wait_for(waiter, 20)

            order: list[str] = []

            async def participant(i: int) -> None:
                async with AsyncClient(backend.address) as pc, \
                        AsyncSession(pc, ttl=10) as s:
                    db = AsyncDoubleBarrier(s, pfx + "db", 3)
                    await db.enter(timeout=30)
                    order.append(f"in{i}")
                    await db.leave(timeout=30)
                    order.append(f"out{i}")

            tasks = []
            for i in range(3):
                tasks.append(asyncio.ensure_future(participant(i)))
                await asyncio.sleep(0.2)
                if i < 2:
                    assert not order  # nobody enters before all 3 are there
            await asyncio.wait_for(asyncio.gather(*tasks), 60)
            assert len(order) == 6
            assert all(o.startswith("in") for o in order[:3]), order

    asyncio.run(main())


async def _until(cond: Callable[[], bool]) -> None:
    while not cond():
        await asyncio.sleep(0.02)


def test_async_election_observe(backend: MemberProcess, pfx: str) -> None:
    async def main() -> None:
        async with AsyncClient(backend.address) as c, AsyncSession(c, ttl=10) as s1, \
                AsyncSession(c, ttl=10) as s2, AsyncSession(c, ttl=10) as s3:
            name = pfx + "elect"
            watcher = AsyncElection(s3, name)
            seen: list[bytes] = []
            done = asyncio.Event()

            async def observe() -> None:
                obs = watcher.observe()
                try:
                    async for kv in obs:
                        seen.append(kv.value)
                        if kv.value == b"two-v2":
                            done.set()
                            return
                finally:
                    await obs.aclose()

            task = asyncio.ensure_future(observe())
            await asyncio.sleep(0.3)  # observing before there is any leader
            e1, e2 = AsyncElection(s1, name), AsyncElection(s2, name)
            await e1.campaign("one")
            # (the observer has seen the first leader before it proclaims again: a
            # loaded machine may start the observer late, and it reports the present)
            await asyncio.wait_for(_until(lambda: seen == [b"one"]), 20)
            await e1.proclaim("one-v2")
            second = asyncio.ensure_future(e2.campaign("two"))
            await asyncio.sleep(0.3)
            assert not second.done()
            with pytest.raises(DeadlineExceededError):
                await AsyncElection(s3, name).campaign("three", timeout=0.3)
            await e1.resign()
            await asyncio.wait_for(second, 20)
            await e2.proclaim("two-v2")
            await asyncio.wait_for(done.wait(), 20)
            await task
            assert seen == [b"one", b"one-v2", b"two", b"two-v2"]
            assert (await watcher.leader()).value == b"two-v2"  # type: ignore[union-attr]
            await e2.resign()
            assert await watcher.leader() is None

    asyncio.run(main())
