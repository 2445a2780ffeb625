"""Watch guarantees on a real petcd process: many watchers on one stream under
concurrent writes, a reader that stops reading, resuming after a reconnect, and
shutdown with streams open."""

from __future__ import annotations

import asyncio
import random
import re
import threading
import time
import urllib.request
from typing import Any

import grpc

from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.pb.etcdserverpb import rpc_pb2_grpc as rpc_grpc
from petcd.server.watch import prefix_end
from petcd.testing import MemberProcess

from .client import CHANNEL_OPTIONS, WatchClient

Put = tuple[int, bytes, bytes]  # revision, key, value
RESPONSE_LIMIT = 1572864 + 512 * 1024  # --max-request-bytes default + gRPC allowance


async def _put_all(address: str, items: list[tuple[bytes, bytes]], concurrency: int) -> list[Put]:
    async with grpc.aio.insecure_channel(address) as ch:
        kv = rpc_grpc.KVStub(ch)
        todo = iter(items)
        out: list[Put] = []

        async def worker() -> None:
            for key, value in todo:
                resp = await kv.Put(rpc.PutRequest(key=key, value=value), timeout=30)
                out.append((resp.header.revision, key, value))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return sorted(out)


def put_all(address: str, items: list[tuple[bytes, bytes]], concurrency: int = 64) -> list[Put]:
    """Concurrent puts (so that the server batches them); (revision, key, value) each."""
    return asyncio.run(_put_all(address, items, concurrency))


def metric(member: MemberProcess, name: str) -> float:
    with urllib.request.urlopen(member.http_endpoint + "/metrics", timeout=5) as r:
        text = r.read().decode()
    m = re.search(rf"^{name} (\S+)$", text, re.M)
    assert m, name
    return float(m.group(1))


def received(client: WatchClient, watch_id: int) -> list[Put]:
    return [(e.kv.mod_revision, e.kv.key, e.kv.value) for e in client.events(watch_id)]


def test_thousand_watchers_one_stream_ten_thousand_puts(petcd: MemberProcess) -> None:
    rnd = random.Random(7)
    # 1000 watchers of every kind on one stream.
    specs: list[tuple[bytes, bytes]] = []
    specs += [(b"w/%03d/" % i, prefix_end(b"w/%03d/" % i)) for i in range(600)]
    specs += [(b"w/%03d/k%d" % (i, i % 7), b"") for i in range(300)]
    specs += [(b"w/%03d" % i, b"w/%03d" % (i + rnd.randrange(1, 20))) for i in range(0, 900, 10)]
    specs += [(b"w/%03d" % rnd.randrange(1000), b"\x00") for _ in range(10)]
    assert len(specs) == 1000
    with WatchClient(petcd.address) as client:
        for i, (key, end) in enumerate(specs):
            client.create(key, end, watch_id=i + 1, prev_kv=i % 3 == 0)
        client.wait_created(1000)
        items = [(b"w/%03d/k%d" % (r, r % 7), b"%d" % n)
                 for n, r in enumerate(rnd.randrange(1000) for _ in range(10_000))]
        puts = put_all(petcd.address, items)
        assert len({rev for rev, _, _ in puts}) == 10_000

        by_key: dict[bytes, list[Put]] = {}
        for p in puts:
            by_key.setdefault(p[1], []).append(p)

        def matching(key: bytes, end: bytes) -> list[Put]:
            if not end:
                return by_key.get(key, [])
            keys = [k for k in by_key if key <= k and (end == b"\x00" or k < end)]
            return sorted(p for k in keys for p in by_key[k])

        want = {i + 1: matching(key, end) for i, (key, end) in enumerate(specs)}
        total = sum(map(len, want.values()))
        client.wait(lambda rs: sum(len(r.events) for r in rs) >= total, timeout=120)
        client.settle(0.3)
        got: dict[int, list[Put]] = {}
        for r in client.responses:
            got.setdefault(r.watch_id, []).extend(
                (e.kv.mod_revision, e.kv.key, e.kv.value) for e in r.events)
        for wid, expected in want.items():
            assert got.get(wid, []) == expected, f"watcher {wid} {specs[wid - 1]}"
        # prev_kv is the key's value before each event.
        last: dict[bytes, bytes] = {}
        for e in client.events(1 + 600 + 3):  # a single-key watcher with prev_kv
            assert e.prev_kv.value == last.get(e.kv.key, b"")
            last[e.kv.key] = e.kv.value


def test_txn_events_arrive_in_one_response(petcd: MemberProcess) -> None:
    with WatchClient(petcd.address) as client:
        client.create(b"tx/", prefix_end(b"tx/"))
        client.wait_created(1)
        ops = [rpc.RequestOp(request_put=rpc.PutRequest(key=b"tx/%d" % i, value=b"v"))
               for i in range(50)]
        rev = client.kv.Txn(rpc.TxnRequest(success=ops)).header.revision
        resps = client.wait(lambda rs: any(r.events for r in rs))
        (resp,) = [r for r in resps if r.events]
        assert [e.kv.key for e in resp.events] == [b"tx/%d" % i for i in range(50)]
        assert {e.kv.mod_revision for e in resp.events} == {rev}


def test_slow_reader_is_bounded_and_catches_up(petcd_factory: Any) -> None:
    m = petcd_factory()
    value = b"x" * 100_000
    channel = grpc.insecure_channel(m.address, options=CHANNEL_OPTIONS)
    requests = iter([rpc.WatchRequest(create_request=rpc.WatchCreateRequest(
        key=b"s/", range_end=prefix_end(b"s/"), watch_id=1))])
    stalled = rpc_grpc.WatchStub(channel).Watch(requests)  # nobody reads it for now
    try:
        with WatchClient(m.address) as fast:
            fast.create(b"s/", prefix_end(b"s/"))
            fast.wait_created(1)
            deadline = time.monotonic() + 30
            while metric(m, "etcd_debugging_mvcc_watcher_total") < 2:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            started = time.monotonic()
            puts = put_all(m.address, [(b"s/%d" % (i % 10), value) for i in range(400)], 8)
            written = time.monotonic() - started
            fast.wait_events(0, 400, timeout=60)  # a stalled stream holds nobody else up
            assert metric(m, "etcd_debugging_mvcc_slow_watcher_total") == 1
            queued = metric(m, "petcd_watch_queued_bytes")
            # 40 MB were written; queued at most: the high-water mark + one response.
            assert queued <= (4 << 20) + RESPONSE_LIMIT, queued
            # Now read: everything, in order, exactly once.
            got: list[Put] = []
            for resp in stalled:
                got += [(e.kv.mod_revision, e.kv.key, e.kv.value) for e in resp.events]
                if len(got) >= 400:
                    break
            assert got == puts
            assert metric(m, "etcd_debugging_mvcc_slow_watcher_total") == 0
            assert metric(m, "petcd_watch_catchup_rounds_total") >= 1
            assert written < 30
    finally:
        stalled.cancel()
        channel.close()


def test_resume_after_reconnect_without_loss_or_duplicates(petcd: MemberProcess) -> None:
    stop = threading.Event()
    written: list[Put] = []

    def writer() -> None:
        with grpc.insecure_channel(petcd.address) as ch:
            kv = rpc_grpc.KVStub(ch)
            for i in range(600):
                if stop.is_set():
                    return
                resp = kv.Put(rpc.PutRequest(key=b"re/%d" % (i % 13), value=b"%d" % i))
                written.append((resp.header.revision, b"re/%d" % (i % 13), b"%d" % i))

    with grpc.insecure_channel(petcd.address) as ch:
        start = rpc_grpc.KVStub(ch).Range(rpc.RangeRequest(key=b"re/")).header.revision + 1
    t = threading.Thread(target=writer)
    t.start()
    got: list[Put] = []
    next_rev = start
    try:
        hops = 0
        while len(got) < 600:  # reconnect again and again while writes go on
            hops += 1
            with WatchClient(petcd.address) as client:
                client.create(b"re/", prefix_end(b"re/"), start_revision=next_rev)
                more = min(20, 600 - len(got))
                client.wait(lambda rs, more=more: sum(len(r.events) for r in rs) >= more,
                            timeout=60)
                got += received(client, 0)
                next_rev = got[-1][0] + 1
    finally:
        stop.set()
        t.join()
    assert got == sorted(written) and hops > 1


def test_stop_with_open_streams(petcd_factory: Any) -> None:
    m = petcd_factory()
    clients = [WatchClient(m.address) for _ in range(3)]
    try:
        for c in clients:
            c.create(b"x")
            c.wait_created(1)
        started = time.monotonic()
        assert m.stop(timeout=10) == 0
        assert time.monotonic() - started < 5
        for c in clients:  # the server ended each stream, as etcd: clients retry elsewhere
            c._thread.join(5)
            assert c.error is not None and c.error.code() == grpc.StatusCode.UNAVAILABLE
            assert c.error.details() == "etcdserver: server stopped"
    finally:
        for c in clients:
            c.close()
