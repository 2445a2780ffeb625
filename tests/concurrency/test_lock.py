"""The Lock service with concurrent gRPC clients: mutual exclusion under contention,
handover when the holder's lease expires or its process is killed, a waiter that gives
up leaves the queue, and a killed leader never lets two clients hold a lock at once."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.testing import MemberProcess

from .clients import Client, retry

ROOT = Path(__file__).resolve().parents[2]


def test_counter_under_lock_is_exact(petcd: MemberProcess) -> None:
    """8 clients each add 1 to a counter 10 times with a read-modify-write under the
    lock: any overlap would lose an increment."""
    clients = [Client(petcd.address) for _ in range(8)]
    inside = []
    overlaps = []
    errors: list[BaseException] = []

    def work(c: Client) -> None:
        try:
            lease = c.grant(30)
            for _ in range(10):
                key = c.lock(b"count-lock", lease).key
                inside.append(key)
                if len(inside) > 1:
                    overlaps.append(list(inside))
                kvs = c.get(b"counter").kvs
                n = int(kvs[0].value) if kvs else 0
                c.put(b"counter", str(n + 1).encode())
                inside.remove(key)
                c.unlock(key)
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for c in clients:
        c.close()
    assert not errors, errors
    assert not overlaps
    c = Client(petcd.address)
    assert c.get(b"counter").kvs[0].value == b"80"
    # every owner key is gone
    assert c.kv.Range(rpc.RangeRequest(key=b"count-lock/", range_end=b"count-lock0"),
                      timeout=10).count == 0
    c.close()


def test_key_format_reentry_and_errors(member: MemberProcess) -> None:
    c = Client(member.address)
    lease = c.grant(30)
    first = c.lock(b"fmt", lease)
    assert first.key == b"fmt/" + format(lease, "x").encode()
    # same lease again: re-entered at once, same key and create revision
    again = c.lock(b"fmt", lease)
    assert again.key == first.key
    kv = c.get(first.key).kvs[0]
    assert (kv.lease, kv.create_revision) == (lease, first.header.revision)
    assert first.header.cluster_id and first.header.member_id and first.header.raft_term
    c.unlock(first.key)
    with pytest.raises(grpc.RpcError) as err:
        c.lock(b"fmt", 0x1234)
    assert (err.value.code(), err.value.details()) == (
        grpc.StatusCode.UNKNOWN, "etcdserver: requested lease not found")
    # lease 0: the server grants a session lease of 60 s, as etcd's does
    auto = c.lock(b"fmt-auto", 0)
    lease_id = int(auto.key.rsplit(b"/", 1)[1], 16)
    ttl = c.lease.LeaseTimeToLive(rpc.LeaseTimeToLiveRequest(ID=lease_id), timeout=10)
    assert ttl.grantedTTL == 60
    c.close()


def test_handover_on_lease_expiry_and_waiter_giving_up(member: MemberProcess) -> None:
    a, b = Client(member.address), Client(member.address)
    la = a.grant(2)  # not kept alive
    lb = b.grant(30)
    ka = a.lock(b"exp", la).key
    # b gives up after 0.5 s: its queue key must be removed
    with pytest.raises(grpc.RpcError) as err:
        b.lock(b"exp", lb, timeout=0.5)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    kb = b"exp/" + format(lb, "x").encode()
    deadline = time.monotonic() + 10
    while b.get(kb).kvs:
        assert time.monotonic() < deadline, "the waiter's key stayed after it gave up"
        time.sleep(0.05)
    got = b.lock(b"exp", lb, timeout=30)
    assert got.key == kb
    assert not a.get(ka).kvs  # a's key went with its lease
    a.close()
    b.close()


def test_handover_when_holder_is_killed(member: MemberProcess) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "src")]))
    holder = subprocess.Popen(
        [sys.executable, "-m", "tests.concurrency.clients", member.address, "crash", "2"],
        stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        assert holder.stdout is not None
        line = holder.stdout.readline().split()
        assert line and line[0].startswith("crash/"), line
        c = Client(member.address)
        lease = c.grant(30)
        # held and kept alive: nobody else gets it
        with pytest.raises(grpc.RpcError) as err:
            c.lock(b"crash", lease, timeout=3)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        holder.kill()  # SIGKILL: no unlock, the lease stops being renewed
        holder.wait()
        killed = time.monotonic()
        got = c.lock(b"crash", lease, timeout=30)
        assert got.key.startswith(b"crash/")
        assert time.monotonic() - killed < 15
        assert not c.get(line[0].encode()).kvs
        c.close()
    finally:
        holder.kill()
        holder.wait()


def _claim(c: Client, me: bytes) -> bool:
    """Mark the protected resource as mine; False if someone else has it."""
    txn = rpc.TxnRequest(
        compare=[rpc.Compare(result=rpc.Compare.EQUAL, target=rpc.Compare.VERSION,
                             key=b"owner", version=0)],
        success=[rpc.RequestOp(request_put=rpc.PutRequest(key=b"owner", value=me))],
        failure=[rpc.RequestOp(request_range=rpc.RangeRequest(key=b"owner"))])
    resp: Any = retry(lambda: c.kv.Txn(txn, timeout=5))
    return bool(resp.succeeded) or resp.responses[0].response_range.kvs[0].value == me


def test_killed_leader_never_gives_the_lock_twice(cluster_factory: Any) -> None:
    cluster = cluster_factory(3)
    addrs = [m.address for m in cluster.members]
    clients = [Client(*(addrs[i % 3:] + addrs[:i % 3])) for i in range(6)]
    stop = threading.Event()
    violations: list[bytes] = []
    cycles = [0] * len(clients)
    errors: list[BaseException] = []

    def work(i: int, c: Client) -> None:
        me = f"client-{i}".encode()
        try:
            lease = retry(c.grant, 10)
            c.keep_alive(lease)
            while not stop.is_set():
                key = retry(c.lock, b"ha", lease).key
                if not _claim(c, me):
                    violations.append(me)
                retry(lambda: c.kv.DeleteRange(rpc.DeleteRangeRequest(key=b"owner"),
                                               timeout=5))
                retry(c.unlock, key)
                cycles[i] += 1
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i, c)) for i, c in enumerate(clients)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while sum(cycles) < 10 and time.monotonic() < deadline:
        time.sleep(0.1)
    leader = cluster.wait_leader()
    before = sum(cycles)
    leader.kill()
    cluster.wait_leader(exclude=[leader])
    deadline = time.monotonic() + 60
    while sum(cycles) < before + 20 and time.monotonic() < deadline and not errors:
        time.sleep(0.1)
    stop.set()
    for t in threads:
        t.join(60)
    for c in clients:
        c.close()
    assert not errors, errors
    assert not violations
    assert sum(cycles) >= before + 20, (before, cycles)
