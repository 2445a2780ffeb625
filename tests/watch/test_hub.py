"""The watch hub on a real store, without gRPC: delivery, ordering, catch-up in
windows, bounded queues for slow readers, gaps, response splitting, and a randomized
model check of exactly-once delivery."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from petcd.mvcc.kvstore import parse_rev_key
from petcd.mvcc.types import EVENT_DELETE, EVENT_PUT, KVEvent
from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.pb.mvccpb.kv_pb2 import Event, KeyValue
from petcd.server import watch as W
from petcd.server.watch import WatchStream, prefix_end
from petcd.server.watch.watchers import record_key

from .hubrig import FakeOutlet, HubRig, create

Test = Callable[[HubRig], Awaitable[None]]


def run(tmp_path: Path, test: Test, **hub_kw: Any) -> None:
    async def main() -> None:
        rig = HubRig(str(tmp_path), **hub_kw)
        try:
            await test(rig)
        finally:
            rig.close()

    asyncio.run(main())


def put(key: bytes, value: bytes = b"v") -> rpc.PutRequest:
    return rpc.PutRequest(key=key, value=value)


def delete(key: bytes, end: bytes = b"") -> rpc.DeleteRangeRequest:
    return rpc.DeleteRangeRequest(key=key, range_end=end)


def txn(*ops: Any) -> rpc.TxnRequest:
    req = rpc.TxnRequest()
    for op in ops:
        if isinstance(op, rpc.PutRequest):
            req.success.add(request_put=op)
        else:
            req.success.add(request_delete_range=op)
    return req


def evs(resps: list[rpc.WatchResponse],
        watch_id: int | None = None) -> list[tuple[int, int, bytes]]:
    return [(e.kv.mod_revision, e.type, e.kv.key) for r in resps
            if watch_id is None or r.watch_id == watch_id for e in r.events]


def test_created_then_live_events_one_response_per_batch(tmp_path: Path) -> None:
    async def t(rig: HubRig) -> None:
        s = rig.hub.open_stream()
        create(s, b"a")
        create(s, b"p/", prefix_end(b"p/"), watch_id=9)
        (created, created9) = await rig.take(s)
        assert (created.created, created.watch_id, created.header.revision) == (True, 0, 1)
        assert (created9.watch_id, created9.header.cluster_id, created9.header.member_id,
                created9.header.raft_term) == (9, 11, 22, 3)
        rig.apply(put(b"a"), put(b"p/1"), txn(put(b"p/2"), put(b"a", b"w"), delete(b"p/1")))
        resps = await rig.take(s)
        # One response per watcher per batch, events in revision order, header = batch rev.
        assert [(r.watch_id, r.header.revision) for r in resps] == [(0, 4), (9, 4)]
        assert evs(resps, 0) == [(2, EVENT_PUT, b"a"), (4, EVENT_PUT, b"a")]
        assert evs(resps, 9) == [(3, EVENT_PUT, b"p/1"), (4, EVENT_PUT, b"p/2"),
                                 (4, EVENT_DELETE, b"p/1")]
        assert resps[1].events[2].kv == KeyValue(key=b"p/1", mod_revision=4)

    run(tmp_path, t)


def test_filters_prev_kv_and_future_start(tmp_path: Path) -> None:
    async def t(rig: HubRig) -> None:
        s = rig.hub.open_stream()
        create(s, b"k", filters=[rpc.WatchCreateRequest.NOPUT], watch_id=1)
        create(s, b"k", filters=[rpc.WatchCreateRequest.NODELETE], prev_kv=True, watch_id=2)
        create(s, b"k", start_revision=4, watch_id=3)
        await rig.take(s)
        rig.apply(put(b"k", b"1"))
        rig.apply(put(b"k", b"2"), delete(b"k"), put(b"k", b"3"))
        resps = await rig.take(s)
        assert evs(resps, 1) == [(4, EVENT_DELETE, b"k")]
        assert evs(resps, 2) == [(2, EVENT_PUT, b"k"), (3, EVENT_PUT, b"k"), (5, EVENT_PUT, b"k")]
        two = [e for r in resps if r.watch_id == 2 for e in r.events]
        assert [e.prev_kv.value for e in two] == [b"", b"1", b""]
        assert not two[0].HasField("prev_kv") and not two[2].HasField("prev_kv")
        assert evs(resps, 3) == [(4, EVENT_DELETE, b"k"), (5, EVENT_PUT, b"k")]

    run(tmp_path, t)


def test_range_and_from_key_watchers(tmp_path: Path) -> None:
    async def t(rig: HubRig) -> None:
        s = rig.hub.open_stream()
        create(s, b"b", b"d", watch_id=1)
        create(s, b"c", b"\x00", watch_id=2)  # every key >= c
        create(s, b"", b"\x00", watch_id=3)  # every key
        create(s, b"\xff", prefix_end(b"\xff"), watch_id=4)  # prefix \xff: from-key \xff
        await rig.take(s)
        for k in (b"a", b"b", b"c", b"cz", b"d", b"\xff\x01"):
            rig.put(k)
        resps = await rig.take(s)
        keys = {i: [k for _, _, k in evs(resps, i)] for i in (1, 2, 3, 4)}
        assert keys == {1: [b"b", b"c", b"cz"], 2: [b"c", b"cz", b"d", b"\xff\x01"],
                        3: [b"a", b"b", b"c", b"cz", b"d", b"\xff\x01"], 4: [b"\xff\x01"]}

    run(tmp_path, t)


def test_catch_up_in_windows_of_revisions(tmp_path: Path) -> None:
    async def t(rig: HubRig) -> None:
        for i in range(0, 2500, 50):  # 2500 revisions, 50 per batch
            rig.apply(*[put(b"k%d" % (j % 7)) for j in range(i, i + 50)])
        s = rig.hub.open_stream()
        create(s, b"k", prefix_end(b"k"), start_revision=2, prev_kv=True)
        create(s, b"k3", start_revision=1000, watch_id=5)
        resps = []
        while rig.hub.unsynced:  # a reader that keeps up: it takes each round's output
            await asyncio.sleep(0)
            resps += await rig.take(s)
        assert [r.created for r in resps[:2]] == [True, True]
        main = [r for r in resps[2:] if r.watch_id == 0]
        # etcd's batches: at most 1000 revisions per response; header = current revision.
        assert [len(r.events) for r in main] == [1000, 1000, 500]
        assert {r.header.revision for r in main} == {2501}
        assert [e.kv.mod_revision for r in main for e in r.events] == list(range(2, 2502))
        first = main[0].events
        assert not first[0].HasField("prev_kv")  # created k0 at revision 2
        assert first[7].prev_kv.mod_revision == 2  # k0 again at 9: previous at 2
        assert evs(resps, 5) == [(r, EVENT_PUT, b"k3") for r in range(1000, 2502)
                                 if (r - 2) % 7 == 3]
        assert not rig.hub.unsynced and rig.hub.synced.size == 2
        rig.put(b"k3")
        assert evs(await rig.take(s)) == [(2502, EVENT_PUT, b"k3")] * 2

    run(tmp_path, t)


def test_slow_stream_is_bounded_and_catches_up(tmp_path: Path) -> None:
    async def t(rig: HubRig) -> None:
        slow, fast = rig.hub.open_stream(), rig.hub.open_stream()
        for s in (slow, fast):
            create(s, b"k", prefix_end(b"k"))
            create(s, b"k1")
        await rig.take(fast)
        value = b"x" * 1000
        for i in range(300):
            rig.apply(put(b"k%d" % (i % 3), value), put(b"j", value))
            await rig.take(fast)
        # The slow stream never took more than the limit plus one response.
        assert slow.queued < 8_000 + 2_000
        assert len(rig.hub.unsynced) == 2 and rig.hub.synced.size == 2
        got = await rig.take(slow)
        while slow.out or rig.hub.unsynced:
            await rig.settle()
            got += await rig.take(slow)
            assert slow.queued < 8_000 + 1_100_000  # one catch-up response at most
        assert evs(got, 0) == [(r, EVENT_PUT, b"k%d" % ((r - 2) // 2 % 3))
                               for r in range(2, 602, 2)]
        assert evs(got, 1) == [(r, EVENT_PUT, b"k1") for r in range(4, 602, 6)]
        assert rig.hub.catchup_rounds >= 1
        rig.put(b"k1")
        assert evs(await rig.take(slow)) == [(602, EVENT_PUT, b"k1")] * 2

    run(tmp_path, t, high_water=8_000, low_water=4_000)


def test_revision_gap_sends_everyone_to_the_store(tmp_path: Path) -> None:
    async def t(rig: HubRig) -> None:
        s = rig.hub.open_stream()
        create(s, b"a")
        await rig.take(s)
        rig.hub.notify([], 1)  # nothing new: ignored
        # Commits the hub is not told about (as when a snapshot is installed).
        listeners = rig.applier._commit_listeners
        saved = list(listeners)
        del listeners[-1]  # the hub's
        rig.put(b"a", b"1")
        rig.put(b"b")
        listeners[:] = saved
        rig.put(b"a", b"2")  # the hub sees revision 4 after 1: a gap
        await rig.settle()
        assert evs(await rig.take(s)) == [(2, EVENT_PUT, b"a"), (4, EVENT_PUT, b"a")]
        assert rig.hub.revision == 4 and not rig.hub.unsynced

    run(tmp_path, t)


def test_compacted_start_and_cancel(tmp_path: Path) -> None:
    async def t(rig: HubRig) -> None:
        for i in range(6):
            rig.put(b"a", b"%d" % i)
        rig.apply(rpc.CompactionRequest(revision=5))
        s = rig.hub.open_stream()
        create(s, b"a", start_revision=4, watch_id=1)
        create(s, b"a", start_revision=5, watch_id=2)
        await rig.settle()
        r = await rig.take(s)
        one = [x for x in r if x.watch_id == 1]
        assert one[1] == rpc.WatchResponse(
            header=rpc.ResponseHeader(cluster_id=11, member_id=22, raft_term=3),
            watch_id=1, canceled=True, compact_revision=5)
        assert evs(r, 2) == [(5, EVENT_PUT, b"a"), (6, EVENT_PUT, b"a"), (7, EVENT_PUT, b"a")]
        s.cancel(2)
        s.cancel(77)  # unknown: no answer
        rig.put(b"a")
        (canceled,) = await rig.take(s)
        assert (canceled.watch_id, canceled.canceled, canceled.header.revision) == (2, True, 7)
        assert rig.hub.watcher_count == 0

    run(tmp_path, t)


def test_progress_request_waits_for_catch_up(tmp_path: Path) -> None:
    async def t(rig: HubRig) -> None:
        for _ in range(5):
            rig.put(b"a")
        s = rig.hub.open_stream()
        create(s, b"a", start_revision=2)
        s.request_progress()
        assert len(await rig.take(s)) == 1  # only the created response so far
        await rig.settle()
        events, progress = await rig.take(s)
        assert len(events.events) == 5
        assert (progress.watch_id, progress.header.revision, len(progress.events)) == (-1, 6, 0)

    run(tmp_path, t)


def test_splitting_large_responses(tmp_path: Path) -> None:
    async def t(rig: HubRig) -> None:
        s = rig.hub.open_stream()
        create(s, b"k", prefix_end(b"k"), watch_id=1, fragment=True)
        create(s, b"k", prefix_end(b"k"), watch_id=2)
        await rig.take(s)
        big = b"x" * 1500
        rig.apply(txn(*[put(b"k%d" % i, big) for i in range(5)]),
                  txn(*[put(b"k%d" % i, big) for i in range(5, 8)]))
        resps = await rig.take(s)
        frag = [r for r in resps if r.watch_id == 1]
        # Fragments: a piece stops before reaching the limit; all but the last say so.
        assert [len(r.events) for r in frag] == [2, 2, 2, 2]
        assert [r.fragment for r in frag] == [True, True, True, False]
        assert all(r.ByteSize() < 4000 for r in frag)
        whole = [r for r in resps if r.watch_id == 2]
        # Without fragments: split only between revisions.
        assert [len(r.events) for r in whole] == [5, 3]
        assert not any(r.fragment for r in whole)

    run(tmp_path, t, response_limit=4000)


def test_watch_ids_and_refusals(tmp_path: Path) -> None:
    async def t(rig: HubRig) -> None:
        s = rig.hub.open_stream()
        create(s, b"a")
        create(s, b"a", watch_id=1)
        create(s, b"a")
        create(s, b"a", watch_id=1)
        create(s, b"b", b"a")
        resps = await rig.take(s)
        assert [(r.watch_id, r.canceled) for r in resps] == [
            (0, False), (1, False), (2, False), (-1, True), (-1, True)]
        assert [r.cancel_reason for r in resps[3:]] == [W.ERR_DUPLICATE_ID, W.ERR_EMPTY_RANGE]
        s.close()
        assert rig.hub.watcher_count == 0 and s not in rig.hub.streams

    run(tmp_path, t)


# -- a randomized model check -------------------------------------------------------

KEYS = [b"a", b"ab", b"b", b"ba", b"c", b"\xff"]


def _matches(key: bytes, start: bytes, end: bytes | None) -> bool:
    if end is None:
        return key == start
    return start <= key and (not end or key < end)


async def _random_run(rig: HubRig, seed: int) -> None:
    rnd = random.Random(seed)
    hub = rig.hub
    streams: list[WatchStream] = [hub.open_stream() for _ in range(3)]
    # Stream 0 reads only now and then (often full); the others read every step. Streams
    # 1 and 2 have outlets (the h2 call's direct writes): 1 takes everything it is
    # offered, 2 is often backed up (its responses queue and it catches up).
    streams[1].outlet = FakeOutlet()
    streams[2].outlet = FakeOutlet(lambda: rnd.random() < 0.4)
    received: dict[tuple[int, int], list[rpc.WatchResponse]] = {}
    specs: dict[tuple[int, int], tuple[bytes, bytes | None, int, rpc.WatchCreateRequest]] = {}
    canceled: set[tuple[int, int]] = set()
    compactions: set[int] = set()

    async def read(si: int) -> None:
        for r in await rig.take(streams[si]):
            if r.created:
                if not r.canceled:
                    received[(si, r.watch_id)] = []
                continue
            received[(si, r.watch_id)].append(r)

    for _step in range(120):
        op = rnd.random()
        if op < 0.2:
            si = rnd.randrange(3)
            key = rnd.choice(KEYS)
            kind = rnd.randrange(4)
            end = {0: b"", 1: prefix_end(key), 2: b"\x00", 3: rnd.choice(KEYS) + b"z"}[kind]
            start = rnd.choice([0, 0, rnd.randint(-1, rig.revision + 3)])
            filters = rnd.choice([[], [], [0], [1]])
            req = rpc.WatchCreateRequest(key=key, range_end=end, start_revision=start,
                                         filters=filters, prev_kv=rnd.random() < 0.5,
                                         fragment=rnd.random() < 0.3)
            streams[si].create(req)
            wid = max(w for w in streams[si].watchers) if streams[si].watchers else None
            created = streams[si].watchers.get(wid) if wid is not None else None
            if created is not None and (si, wid) not in specs:
                store_end = None if not end else (b"" if end == b"\x00" else end)
                first = start if 0 < start <= hub.revision else max(hub.revision + 1, start)
                if start < 0:
                    first = start
                specs[(si, wid)] = (key, store_end, first, req)
        elif op < 0.3 and specs:
            si, wid = rnd.choice(sorted(specs))
            if (si, wid) not in canceled and wid in streams[si].watchers:
                streams[si].cancel(wid)
                canceled.add((si, wid))
        elif op < 0.33:
            target = rig.revision - rnd.randint(0, 8)
            if target > max(rig.store.compact_revision, 0):
                rig.apply(rpc.CompactionRequest(revision=target))
                compactions.add(target)
        else:
            batch = []
            for _ in range(rnd.randint(1, 4)):
                k = rnd.choice(KEYS)
                r = rnd.random()
                if r < 0.6:
                    batch.append(put(k, b"%d" % rnd.randrange(100)))
                elif r < 0.8:
                    batch.append(delete(k))
                elif r < 0.9:
                    batch.append(delete(k, prefix_end(k)))
                else:
                    batch.append(txn(put(k + b"1"), put(k + b"2")))
            rig.apply(*batch)
        for s in streams[1:]:  # what an outlet took during a batch was flushed with it
            assert isinstance(s.outlet, FakeOutlet) and s.outlet.unflushed == 0
        if rnd.random() < 0.5:
            await asyncio.sleep(0)  # a catch-up round may run
        for si in (1, 2):
            await read(si)
        if rnd.random() < 0.2:
            await read(0)
    for _ in range(100):
        await rig.settle()
        for si in range(3):
            await read(si)
        if not hub.unsynced and not any(s.out for s in streams) and \
                not any(s.outlet.wire for s in streams[1:] if isinstance(s.outlet, FakeOutlet)):
            break
    assert not hub.unsynced

    history = rig.history
    final_compact = rig.store.compact_revision
    values: dict[tuple[bytes, int], bytes] = {}  # (key, revision) -> value, for prev_kv
    for e in history:
        if e.type == EVENT_PUT:
            values[(e.key, e.revision)] = KeyValue.FromString(e.kv).value

    for (si, wid), (key, end, first, req) in specs.items():
        resps = received[(si, wid)]
        got: list[Event] = []
        compacted = None
        for r in resps:
            assert compacted is None, "nothing after the compacted response"
            if r.compact_revision:
                compacted = r.compact_revision
                assert r.canceled and not r.events
            elif r.canceled:
                assert (si, wid) in canceled and r is resps[-1]
            got.extend(r.events)
            if not req.fragment:
                assert not r.fragment
        want = [e for e in history if e.revision >= first and _matches(e.key, key, end)
                and not (0 in req.filters and e.type == EVENT_PUT)
                and not (1 in req.filters and e.type == EVENT_DELETE)]
        # As etcd: a watcher starting exactly at the compacted revision gets the puts of
        # that revision but not its deletions (compaction removed those records).
        want = [e for e in want if not (e.type == EVENT_DELETE and e.revision in compactions)]
        got = [e for e in got if not (e.type == EVENT_DELETE and e.kv.mod_revision in compactions)]
        got_ids = [(e.kv.mod_revision, e.type, e.kv.key, e.kv.value) for e in got]
        want_ids = [(e.revision, e.type, e.key, KeyValue.FromString(e.kv).value) for e in want]
        context = f"seed {seed} watcher {si}/{wid} {req}"
        if compacted is not None or (si, wid) in canceled:
            assert got_ids == want_ids[:len(got_ids)], context
            if compacted is not None:  # it was behind the compaction when it caught up
                assert (got_ids[-1][0] + 1 if got_ids else first) < compacted, context
        else:
            assert got_ids == want_ids, context
        if req.prev_kv:
            for e, h in zip(got, want, strict=False):
                if h.prev_kv is not None and e.HasField("prev_kv"):
                    assert e.prev_kv.SerializeToString() == h.prev_kv, context
                elif h.prev_kv is not None:  # missing only if the revision before is gone
                    assert h.revision - 1 < final_compact, context
                else:
                    assert not e.HasField("prev_kv"), context


@pytest.mark.parametrize("seed", range(40))
def test_random_histories_exactly_once(tmp_path: Path, seed: int) -> None:
    # Small limits: streams fill up, responses split, catch-up takes many rounds.
    run(tmp_path, lambda rig: _random_run(rig, seed), high_water=600, low_water=300,
        response_limit=700, catchup_revisions=1 + seed % 4, catchup_records=1 + seed % 7,
        catchup_bytes=50 + 20 * seed)


def test_kvevent_helpers() -> None:
    assert prefix_end(b"a\xff") == b"b" and prefix_end(b"\xff\xff") == b"\x00"
    assert record_key(KeyValue(key=b"k" * 300, value=b"v").SerializeToString()) == b"k" * 300
    ev = KVEvent(3, EVENT_PUT, b"k", KeyValue(key=b"k").SerializeToString(), None)
    assert ev.to_pb().kv.key == b"k"


# 2960 histories: ~60 s of CPU, five times that in wall time when 2 shared cores are
# busy; pytest-timeout's default 300 s is for tests that wait, not for this.
@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_random_histories_soak(tmp_path: Path) -> None:
    for seed in range(40, 3000):
        (tmp_path / str(seed)).mkdir()
        run(tmp_path / str(seed), lambda rig, seed=seed: _random_run(rig, seed),  # type: ignore[misc]
            high_water=600, low_water=300, response_limit=700,
            catchup_revisions=1 + seed % 4, catchup_records=1 + seed % 7,
            catchup_bytes=50 + 20 * seed)


def test_queued_responses_take_more_events_until_sent(tmp_path: Path) -> None:
    async def t(rig: HubRig) -> None:
        s = rig.hub.open_stream()
        create(s, b"a")
        create(s, b"b")
        await rig.take(s)
        rig.put(b"a")
        rig.put(b"b")
        rig.put(b"a")
        resps = await rig.take(s)
        # a's second event joined its response still in the queue; the header is newer.
        assert [(r.watch_id, r.header.revision, [e.kv.mod_revision for e in r.events])
                for r in resps] == [(0, 4, [2, 4]), (1, 3, [3])]
        assert (resps[0].header.cluster_id, resps[0].header.raft_term) == (11, 3)
        rig.put(b"a")
        s.request_progress()  # a barrier: later events do not overtake it
        rig.put(b"a")
        resps = await rig.take(s)
        assert [(r.watch_id, r.header.revision, [e.kv.mod_revision for e in r.events])
                for r in resps] == [(0, 5, [5]), (-1, 5, []), (0, 6, [6])]
        rig.put(b"a")  # the last response was sent: a new one
        assert [len(r.events) for r in await rig.take(s)] == [1]

    run(tmp_path, t)


def test_long_keys_live_and_from_history(tmp_path: Path) -> None:
    async def t(rig: HubRig) -> None:
        long_key = b"L" * 700  # above LMDB's key limit: the store indexes a surrogate
        rig.put(long_key, b"1")
        rig.apply(delete(long_key))
        s = rig.hub.open_stream()
        create(s, long_key, start_revision=1, prev_kv=True, watch_id=1)
        create(s, b"L", prefix_end(b"L"), watch_id=2)
        await rig.settle()
        rig.put(long_key, b"2")
        resps = await rig.take(s)
        assert evs(resps, 1) == [(2, EVENT_PUT, long_key), (3, EVENT_DELETE, long_key),
                                 (4, EVENT_PUT, long_key)]
        one = [e for r in resps if r.watch_id == 1 for e in r.events]
        assert one[1].prev_kv.value == b"1" and one[1].kv.mod_revision == 3
        assert evs(resps, 2) == [(4, EVENT_PUT, long_key)]

    run(tmp_path, t)


def test_store_changes_by_revision(tmp_path: Path) -> None:
    async def t(rig: HubRig) -> None:
        rig.put(b"a")
        rig.apply(txn(put(b"b"), delete(b"a")))
        with rig.store.read() as view:
            got = [(parse_rev_key(k), KeyValue.FromString(v).key)
                   for k, v in view.changes(2)]
            assert got == [((2, 0, False), b"a"), ((3, 0, False), b"b"), ((3, 1, True), b"a")]
            assert [parse_rev_key(k)[0] for k, _ in view.changes(3, 3)] == [3, 3]
            assert list(view.changes(4)) == []

    run(tmp_path, t)


def test_outlet_failure_leaves_the_apply_and_the_events_whole(tmp_path: Path) -> None:
    async def t(rig: HubRig) -> None:
        s = rig.hub.open_stream()
        create(s, b"k")
        await rig.take(s)
        calls = []

        def refuse() -> bool:
            calls.append(1)
            if len(calls) == 1:
                raise RuntimeError("a broken connection")
            return False

        s.outlet = FakeOutlet(refuse)
        # The hub fails while notifying: the apply still answers, the watcher catches up.
        assert rig.put(b"k") == 2
        assert len(rig.hub.unsynced) == 1
        s.outlet.refuse = lambda: False
        await rig.settle()
        assert evs(await rig.take(s)) == [(2, EVENT_PUT, b"k")]
        rig.put(b"k")
        assert evs(await rig.take(s)) == [(3, EVENT_PUT, b"k")]
        assert s.outlet.flushes >= 1  # live events are flushed at the end of the batch

    run(tmp_path, t)
