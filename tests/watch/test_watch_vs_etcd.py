"""The same watches and writes against real etcd 3.4 and petcd: each watcher's stream
of responses (created, events, canceled, compacted, progress, fragments) must be the
same, headers normalized. etcd interleaves a stream's watchers in no fixed order, so
responses are compared per watch ID, each in arrival order."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.testing import EtcdProcess, MemberProcess, PetcdProcess, have_etcd

from .client import WatchClient, by_watch_id, normalized

pytestmark = pytest.mark.skipif(not have_etcd(), reason="etcd/etcdctl 3.4 not installed")

MAX_REQUEST = 4096  # fragments above 4096 + 512 KiB, etcd's gRPC allowance
ARGS = ["--max-request-bytes", str(MAX_REQUEST),
        "--experimental-watch-progress-notify-interval", "1s"]
FENCE = b"\x01fence"  # a key no test watches but the fence watcher
FENCE_ID = 100_000
NOPUT, NODELETE = rpc.WatchCreateRequest.NOPUT, rpc.WatchCreateRequest.NODELETE


class Side:
    """One member and one watch stream on it, driven step by step."""

    def __init__(self, member: MemberProcess) -> None:
        self.member = member
        self.w = WatchClient(member.address)
        self.kv = self.w.kv
        self.created = 0
        self.create(FENCE, watch_id=FENCE_ID)

    def create(self, key: bytes, end: bytes = b"", **kw: Any) -> rpc.WatchResponse:
        self.w.create(key, end, **kw)
        self.created += 1
        return self.w.wait_created(self.created)[-1]

    def put(self, key: bytes, value: bytes = b"v") -> int:
        return int(self.kv.Put(rpc.PutRequest(key=key, value=value), timeout=10).header.revision)

    def delete(self, key: bytes, end: bytes = b"") -> None:
        self.kv.DeleteRange(rpc.DeleteRangeRequest(key=key, range_end=end), timeout=10)

    def txn(self, *ops: rpc.RequestOp) -> None:
        self.kv.Txn(rpc.TxnRequest(success=ops), timeout=10)

    def compact(self, rev: int) -> None:
        self.kv.Compact(rpc.CompactionRequest(revision=rev, physical=True), timeout=10)

    def fence(self) -> None:
        """After this, every event of earlier writes has arrived (etcd and petcd send a
        stream's events revision by revision)."""
        rev = self.put(FENCE)
        self.w.wait(lambda rs: any(r.watch_id == FENCE_ID and r.events and
                                   r.events[-1].kv.mod_revision >= rev for r in rs))

    def streams(self) -> dict[int, list[rpc.WatchResponse]]:
        out = by_watch_id(self.w.responses)
        out.pop(FENCE_ID, None)
        return out

    def close(self) -> None:
        self.w.close()


class Pair:
    def __init__(self, etcd: MemberProcess, petcd: MemberProcess) -> None:
        self.etcd, self.petcd = etcd, petcd
        self.sides: list[Side] = []

    def open(self) -> tuple[Side, Side]:
        for s in self.sides:
            s.close()
        self.sides = [Side(self.etcd), Side(self.petcd)]
        return self.sides[0], self.sides[1]

    def both(self, step: Callable[[Side], object]) -> None:
        for s in self.sides:
            step(s)

    def same_streams(self) -> dict[int, list[rpc.WatchResponse]]:
        want, got = (s.streams() for s in self.sides)
        assert sorted(got) == sorted(want)
        for wid in want:
            assert got[wid] == want[wid], f"watch {wid}"
        return got

    def close(self) -> None:
        for s in self.sides:
            s.close()


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    base = tmp_path_factory.mktemp("watch-diff")
    etcd = EtcdProcess(base / "etcd", args=ARGS)
    petcd = PetcdProcess(base / "petcd", args=ARGS)
    p = Pair(etcd, petcd)
    try:
        etcd.start()
        petcd.start()
        yield p
    except BaseException:
        print(etcd.log_tail(), petcd.log_tail())
        raise
    finally:
        p.close()
        etcd.kill()
        petcd.kill()


def op_put(key: bytes, value: bytes = b"v") -> rpc.RequestOp:
    return rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=value))


def op_delete(key: bytes, end: bytes = b"") -> rpc.RequestOp:
    return rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=key, range_end=end))


def test_live_watchers_kinds_filters_ids_cancel_progress(pair: Pair) -> None:
    pair.open()

    def watches(s: Side) -> None:
        s.create(b"a")
        s.create(b"p/", b"p0")
        s.create(b"r1", b"r5", prev_kv=True)
        s.create(b"m", b"\x00")
        s.create(b"a", filters=[NOPUT], watch_id=50)
        s.create(b"a", filters=[NODELETE], prev_kv=True)
        s.create(b"a", watch_id=50)  # in use
        s.create(b"z", b"a")  # empty range
        s.create(b"", b"")  # the key "\0"
        rev = s.put(b"f")
        s.create(b"f", start_revision=rev + 3)  # in the future

    pair.both(watches)

    def writes(s: Side) -> None:
        s.put(b"a", b"1")
        s.put(b"p/1")
        s.put(b"r2", b"x")
        s.put(b"mm")
        s.put(b"\x00")
        s.txn(op_put(b"a", b"2"), op_put(b"p/2"), op_put(b"r2", b"y"), op_delete(b"mm"))
        for i in range(3):
            s.put(b"f", b"%d" % i)
        s.delete(b"p/", b"p0")
        s.delete(b"a")
        s.delete(b"r1", b"r5")
        s.fence()

    pair.both(writes)
    pair.same_streams()

    def cancels(s: Side) -> None:
        s.w.cancel(50)
        s.w.wait(lambda rs: any(r.canceled and r.watch_id == 50 and not r.created
                                for r in rs))
        s.w.cancel(777)  # unknown: no answer
        s.w.progress()
        s.w.wait(lambda rs: any(r.watch_id == -1 and not r.created for r in rs))
        s.put(b"a", b"3")
        s.fence()

    pair.both(cancels)
    streams = pair.same_streams()
    assert [r.canceled for r in streams[50]][-1] is True
    assert [len(r.events) for r in streams[0]] == [0, 1, 1, 1, 1]  # a: one per revision


def test_catch_up_compaction_and_start_revisions(pair: Pair) -> None:
    pair.open()
    marks: dict[str, int] = {}

    def history(s: Side) -> None:
        first = s.put(b"h/1", b"a")
        s.put(b"h/2", b"b")
        s.txn(op_put(b"h/1", b"c"), op_put(b"h/3", b"d"), op_delete(b"h/2"))
        mid = s.put(b"h/1", b"e")
        s.delete(b"h/", b"h0")
        s.put(b"h/2", b"f")
        s.put(b"h/3", b"g")
        last = s.put(b"h/1", b"h")
        s.compact(mid)
        marks.update(first=first, mid=mid, last=last)

    pair.both(history)

    def watches(s: Side) -> None:
        # Catching up is etcd's background work (every 100 ms, all unsynced watchers in
        # one pass): wait until the last watcher created got its history; the pass that
        # served it also served those created before.
        s.create(b"h/2", start_revision=marks["last"])  # no events for it: quiet
        s.create(b"h/", b"h0", start_revision=marks["first"])  # compacted
        s.create(b"h/1", start_revision=-1)  # compacted too (below the compact revision)
        s.create(b"h/", b"h0", start_revision=marks["mid"], prev_kv=True)  # at the compaction
        s.create(b"h/", b"h0", start_revision=marks["mid"] + 1, prev_kv=True)
        s.create(b"h/", b"h0", start_revision=marks["mid"] + 1, filters=[NOPUT])
        for wid in (1, 2):
            s.w.wait(lambda rs, wid=wid: any(r.watch_id == wid and r.compact_revision
                                             for r in rs))
        for wid, n in ((3, 6), (4, 5), (5, 2)):
            s.w.wait_events(wid, n)
        s.put(b"h/2", b"live")
        s.put(b"h/1", b"live")
        s.fence()

    pair.both(watches)
    streams = pair.same_streams()
    compacted = streams[1][-1]
    assert (compacted.canceled, compacted.compact_revision) == (True, marks["mid"])
    assert compacted.header.revision == 0
    assert len(streams[3][1].events) == 6  # history in one response, then live ones


def test_fragments_like_etcd(pair: Pair) -> None:
    pair.open()
    value = b"x" * 3000
    marks: dict[str, int] = {}

    def writes(s: Side) -> None:
        marks["start"] = s.put(b"g/0", b"first")
        for i in range(300):
            s.put(b"g/%03d" % i, value)

    pair.both(writes)

    def catch_up(s: Side) -> None:
        s.create(b"g/", b"g0", start_revision=marks["start"], fragment=True)
        s.create(b"g/", b"g0", start_revision=marks["start"])
        s.w.wait_events(0, 301)
        s.w.wait_events(1, 301)
        s.fence()

    pair.both(catch_up)
    etcd_side, petcd_side = pair.sides
    want, got = etcd_side.streams(), petcd_side.streams()
    # Fragmented: the very same responses (a piece stops before the limit).
    assert got[0] == want[0]
    assert [r.fragment for r in got[0][1:]] == [True, False]
    # Not fragmented: etcd sends one 900 KB response; petcd splits it between revisions
    # at the same limit. The events are the same.
    assert [e for r in got[1] for e in r.events] == [e for r in want[1] for e in r.events]
    assert all(r.ByteSize() < MAX_REQUEST + 512 * 1024 for r in got[1])

    def live_big_revision(s: Side) -> None:
        s.create(b"g/", b"g0", fragment=True, prev_kv=True)
        s.delete(b"g/", b"g0")  # one revision, 300 deletions with their previous values
        s.w.wait_events(2, 300)
        s.fence()

    pair.both(live_big_revision)
    want, got = etcd_side.streams(), petcd_side.streams()
    assert got[2] == want[2]
    assert [r.fragment for r in got[2][1:]] == [True, False]


def test_progress_notify_shape(pair: Pair) -> None:
    pair.open()

    def progress(s: Side) -> rpc.WatchResponse:
        s.put(b"loud")  # before: the revision does not move while we wait
        wid = s.create(b"quiet", progress_notify=True).watch_id
        resps = s.w.wait(lambda rs: any(r.watch_id == wid and not r.created for r in rs),
                         timeout=5)
        return normalized(next(r for r in resps if r.watch_id == wid and not r.created))

    want, got = (progress(s) for s in pair.sides)
    assert got == want
    assert not got.events and got.header.revision > 0
