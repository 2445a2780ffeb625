"""Recipes against petcd and etcd 3.4: lock mutual exclusion across 8 processes, lock
fairness and fencing, election handover when the leader's process is killed, STM
transfers under contention, queue order, barriers."""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from petcd.client import Client, Put, Txn
from petcd.client.errors import DeadlineExceededError
from petcd.client.recipes import (
    Barrier,
    DoubleBarrier,
    Election,
    Lock,
    PriorityQueue,
    Queue,
    Session,
    run_stm,
)
from petcd.testing import SRC_DIR, MemberProcess

WORKER = textwrap.dedent("""
    import sys
    from petcd.client import Client, Put, Txn
    from petcd.client.recipes import Lock, Session
    address, name, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with Client(address, timeout=30) as c, Session(c, ttl=10) as s:
        lock = Lock(s, name + "/lock")
        for _ in range(n):
            with lock:
                v = int(c.get(name + "/counter").value or b"0")
                r = c.txn(Txn().when(lock.is_owner()).then(Put(name + "/counter", str(v + 1))))
                assert r.succeeded, "fenced out while holding the lock"
""")


def _spawn(code: str, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", code, *args],
                            env={"PYTHONPATH": str(SRC_DIR), "PATH": "/usr/bin:/bin"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_lock_excludes_8_processes(backend: MemberProcess, pfx: str) -> None:
    n = 3
    procs = [_spawn(WORKER, backend.address, pfx + "mx", str(n)) for _ in range(8)]
    for p in procs:
        _, err = p.communicate(timeout=180)
        assert p.returncode == 0, err.decode()
    with Client(backend.address) as c:
        assert c.get(pfx + "mx/counter").value == str(8 * n).encode()
        assert c.get(pfx + "mx/lock/", prefix=True).kvs == []  # every lock key released


def test_lock_fairness_and_fencing(backend: MemberProcess, pfx: str) -> None:
    with Client(backend.address) as c, Session(c, ttl=10) as s1, Session(c, ttl=10) as s2:
        a, b = Lock(s1, pfx + "l"), Lock(s2, pfx + "l")
        assert a.acquire() and a.is_acquired()
        assert b.acquire(timeout=0.5) is False  # a holds it
        assert c.get(pfx + "l/", prefix=True, count_only=True).count == 1  # b withdrew
        got = threading.Event()
        t = threading.Thread(target=lambda: (b.acquire(), got.set()))
        t.start()
        time.sleep(0.3)
        assert not got.is_set()
        stale = a.is_owner()
        a.release()
        t.join(20)
        assert got.is_set() and b.is_acquired()
        # a's old fencing condition no longer holds: its write is refused
        assert not c.txn(Txn().when(stale).then(Put(pfx + "fenced", "x"))).succeeded
        assert c.txn(Txn().when(b.is_owner()).then(Put(pfx + "fenced", "y"))).succeeded
        b.release()


HOLDER = textwrap.dedent("""
    import sys, time
    from petcd.client import Client
    from petcd.client.recipes import Election, Session
    with Client(sys.argv[1]) as c:
        s = Session(c, ttl=2)
        e = Election(s, sys.argv[2])
        e.campaign("first")
        e.proclaim("first-v2")
        print("leading", flush=True)
        time.sleep(600)
""")


def test_election_handover_on_holder_crash(backend: MemberProcess, pfx: str) -> None:
    name = pfx + "elect"
    holder = _spawn(HOLDER, backend.address, name)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == b"leading\n", holder.stderr.read()  # type: ignore[union-attr]
        with Client(backend.address) as c, Session(c, ttl=5) as s:
            e = Election(s, name)
            lead = e.leader()
            assert lead is not None and lead.value == b"first-v2"
            seen: list[bytes] = []
            observer = e.observe()

            def watch_leaders() -> None:
                for kv in observer:
                    seen.append(kv.value)
                    if kv.value == b"second":
                        return
            th = threading.Thread(target=watch_leaders)
            th.start()
            won = threading.Event()
            cand = threading.Thread(target=lambda: (e.campaign("second"), won.set()))
            cand.start()
            time.sleep(0.5)
            assert not won.is_set()  # the holder still leads
            holder.kill()            # crash: its session's lease expires after 2 s
            cand.join(30)
            assert won.is_set()
            lead = e.leader()
            assert lead is not None and lead.value == b"second"
            th.join(30)
            assert seen == [b"first-v2", b"second"]
            e.proclaim("second-v2")
            assert e.leader().value == b"second-v2"  # type: ignore[union-attr]
            e.resign()
            assert e.leader() is None
    finally:
        holder.kill()
        holder.wait()


def test_stm_transfers_keep_the_total(backend: MemberProcess, pfx: str) -> None:
    accounts = [f"{pfx}acct/{i}" for i in range(4)]
    runs = [0]
    with Client(backend.address) as c:
        for a in accounts:
            c.put(a, "100")

        def worker(seed: int) -> None:
            rnd = random.Random(seed)
            with Client(backend.address) as wc:
                for _ in range(15):
                    src, dst = rnd.sample(accounts, 2)
                    amount = rnd.randint(1, 30)

                    def transfer(stm: object, src: str = src, dst: str = dst,
                                 amount: int = amount) -> None:
                        runs[0] += 1
                        s = int(stm.get(src))  # type: ignore[attr-defined]
                        d = int(stm.get(dst))  # type: ignore[attr-defined]
                        if s >= amount:
                            stm.put(src, str(s - amount))  # type: ignore[attr-defined]
                            stm.put(dst, str(d + amount))  # type: ignore[attr-defined]
                    run_stm(wc, transfer)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        values = [int(c.get(a).value or b"0") for a in accounts]
        assert sum(values) == 400 and min(values) >= 0
        assert runs[0] >= 60  # every transfer ran at least once (conflicts rerun some)


def test_queues(backend: MemberProcess, pfx: str) -> None:
    with Client(backend.address) as c:
        q = Queue(c, pfx + "q")
        for i in range(5):
            q.put(f"item{i}")
        assert len(q) == 5
        assert [q.get() for _ in range(5)] == [f"item{i}".encode() for i in range(5)]
        with pytest.raises(DeadlineExceededError):
            q.get(timeout=0.3)
        threading.Timer(0.3, lambda: q.put("late")).start()
        assert q.get(timeout=20) == b"late"

        pq = PriorityQueue(c, pfx + "pq")
        for value, prio in [("c", 5), ("a", 1), ("d", 5), ("b", 1), ("e", 9)]:
            pq.put(value, prio)
        assert [pq.get() for _ in range(5)] == [b"a", b"b", b"c", b"d", b"e"]


def test_barriers(backend: MemberProcess, pfx: str) -> None:
    with Client(backend.address) as c:
        b = Barrier(c, pfx + "gate")
        b.wait()  # not up: returns at once
        assert b.hold() and not b.hold()
        passed = threading.Event()
        t = threading.Thread(target=lambda: (b.wait(), passed.set()))
        t.start()
        time.sleep(0.3)
        assert not passed.is_set()
        b.release()
        t.join(20)
        assert passed.is_set()

        order: list[str] = []
        lock = threading.Lock()

        def participant(i: int) -> None:
            with Client(backend.address) as pc, Session(pc, ttl=10) as s:
                db = DoubleBarrier(s, pfx + "db", 3)
                db.enter(timeout=30)
                with lock:
                    order.append(f"in{i}")
                db.leave(timeout=30)
                with lock:
                    order.append(f"out{i}")

        ts = [threading.Thread(target=participant, args=(i,)) for i in range(3)]
        for t in ts:
            t.start()
            time.sleep(0.2)
        for t in ts:
            t.join(60)
        assert len(order) == 6
        assert all(o.startswith("in") for o in order[:3]), order  # all entered first


def test_async_lock_and_election(backend: MemberProcess, pfx: str) -> None:
    import asyncio

    from petcd.client import AsyncClient
    from petcd.client.recipes.aio import AsyncElection, AsyncLock, AsyncSession

    async def main() -> None:
        async with AsyncClient(backend.address) as c, AsyncSession(c, ttl=10) as s1, \
                AsyncSession(c, ttl=10) as s2:
            a, b = AsyncLock(s1, pfx + "al"), AsyncLock(s2, pfx + "al")
            assert await a.acquire()
            assert await b.acquire(timeout=0.3) is False
            waiter = asyncio.ensure_future(b.acquire())
            await asyncio.sleep(0.2)
            assert not waiter.done()
            await a.release()
            assert await asyncio.wait_for(waiter, 20)
            assert (await c.txn(Txn().when(b.is_owner()))).succeeded
            await b.release()
            e1, e2 = AsyncElection(s1, pfx + "ae"), AsyncElection(s2, pfx + "ae")
            await e1.campaign("one")
            second = asyncio.ensure_future(e2.campaign("two"))
            await asyncio.sleep(0.2)
            assert not second.done() and (await e1.leader()).value == b"one"  # type: ignore[union-attr]
            await e1.resign()
            await asyncio.wait_for(second, 20)
            assert (await e2.leader()).value == b"two"  # type: ignore[union-attr]
            await e2.resign()

    asyncio.run(main())
