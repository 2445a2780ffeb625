"""The driver's pieces on their own, with a stand-in for the Raft core's few calls:
ReadIndex batching (LinearizableReads) and the proposal tracker."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from petcd import errors
from petcd.errors import EtcdError
from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.raft import DropReason, ProposalDropped, ReadIndexDropped, ReadState
from petcd.server.apply import WaitPhysical
from petcd.server.raftnode.proposals import ProposalTracker
from petcd.server.raftnode.reads import READ_INDEX_RETRY, LinearizableReads


class FakeRaw:
    """What the pieces call on RawNode: read_index, propose_batch and a little state."""

    def __init__(self) -> None:
        self.asked: list[bytes] = []
        self.leader = True
        self.is_leader = True
        self.term = 3
        self.last_index = 10
        self.proposed: list[list[bytes]] = []
        self.drop: DropReason | None = None

    def read_index(self, ctx: bytes) -> None:
        if not self.leader:
            raise ReadIndexDropped(DropReason.NO_LEADER)
        self.asked.append(ctx)

    def propose_batch(self, datas: list[bytes]) -> None:
        if self.drop is not None:
            raise ProposalDropped(self.drop)
        self.proposed.append(datas)
        self.last_index += len(datas)


def reads(raw: FakeRaw, applied: list[int]) -> LinearizableReads:
    return LinearizableReads(raw, lambda: applied[0], lambda: None, lambda: False,
                             timeout=5.0)  # type: ignore[arg-type]


def test_reads_share_rounds_and_wait_for_the_applied_index() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        raw, applied = FakeRaw(), [5]
        r = reads(raw, applied)
        first = loop.create_future()
        r.wait(first)
        assert len(raw.asked) == 1  # the first read sends a round at once
        burst = [loop.create_future() for _ in range(20)]
        for f in burst:
            r.wait(f)  # arriving while it is out: they share the next round
        assert len(raw.asked) == 1
        r.on_read_states([ReadState(index=8, request_ctx=raw.asked[0])])
        assert len(raw.asked) == 2  # the next round went out at once, for all 20
        await asyncio.sleep(0)
        assert not first.done()  # applied 5 < read index 8
        applied[0] = 8
        r.release(8)
        await asyncio.sleep(0)
        assert first.done() and first.result() is None
        assert not any(f.done() for f in burst)
        r.on_read_states([ReadState(index=8, request_ctx=raw.asked[0])])  # stale: ignored
        assert not any(f.done() for f in burst)
        r.on_read_states([ReadState(index=8, request_ctx=raw.asked[1])])
        await asyncio.sleep(0)
        assert all(f.done() for f in burst) and len(raw.asked) == 2
    asyncio.run(main())


def test_read_rounds_and_leader_changes() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        raw, applied = FakeRaw(), [0]
        raw.leader = False
        r = reads(raw, applied)
        f = loop.create_future()
        r.wait(f)
        assert raw.asked == []  # no leader: nothing asked yet
        raw.leader = True
        r.on_leader_change(0, 2)  # a leader appeared: asked now
        assert len(raw.asked) == 1
        r.on_leader_change(2, 3)  # it changed while the round was out: etcd's answer
        with pytest.raises(EtcdError) as e:
            await f
        assert e.value.kind is errors.LEADER_CHANGED
        g = loop.create_future()
        r.wait(g)
        now = time.monotonic()
        r.on_tick(now + READ_INDEX_RETRY + 0.01)  # unanswered: asked again
        assert len(raw.asked) == 3
        r.on_tick(now + 6.0)  # past the request timeout
        with pytest.raises(EtcdError) as e:
            await g
        assert e.value.kind is errors.TIMEOUT
        h = loop.create_future()
        r.wait(h)
        r.fail(errors.STOPPED)
        with pytest.raises(EtcdError):
            await h
    asyncio.run(main())


def _put(tracker: ProposalTracker, key: bytes, deadline: float) -> asyncio.Future[Any]:
    req = rpc.PutRequest(key=key)
    return tracker.add("put", req.SerializeToString(), req, None, deadline)


def test_tracker_indexes_answers_and_deadlines() -> None:
    async def main() -> None:
        raw = FakeRaw()
        t = ProposalTracker(0xABC)
        far = time.monotonic() + 60
        a, b = _put(t, b"a", far), _put(t, b"b", far)
        assert t.flush(raw, 4096) and t.queue == []  # type: ignore[arg-type]
        assert sorted(t.by_index) == [11, 12] and t.by_index[11].term == 3
        assert len(raw.proposed[0]) == 2
        failed = t.answer([rpc.PutResponse(), errors.NO_SPACE],
                          [(0, t.by_index.pop(11)), (1, t.by_index.pop(12))], [],
                          lambda fut, r: None)
        assert failed == 1 and isinstance(a.result(), rpc.PutResponse)
        assert b.result().kind is errors.NO_SPACE
        # Answered: nothing of them is kept until their deadline (garbage for the GC).
        assert not t.deadlines
        # A follower forwards: known by id until the applied entry names it.
        raw.is_leader = False
        c = _put(t, b"c", far)
        t.flush(raw, 4096)  # type: ignore[arg-type]
        (pid,) = t.by_id
        t.answer([rpc.PutResponse()], [], [(0, pid)], lambda fut, r: None)
        assert c.done() and not t.by_id and not t.deadlines
        # No leader: kept queued; another refusal answers at once; deadlines expire.
        raw.drop = DropReason.NO_LEADER
        t = ProposalTracker(0xABC)
        d = _put(t, b"d", time.monotonic() - 1)
        assert not t.flush(raw, 4096) and len(t.queue) == 1  # type: ignore[arg-type]
        t.expire(time.monotonic(), lambda started: errors.TIMEOUT)
        assert d.result().kind is errors.TIMEOUT and t.queue == []
        raw.drop = DropReason.NOT_IN_CONFIG
        e = _put(t, b"e", far)
        t.flush(raw, 4096)  # type: ignore[arg-type]
        assert isinstance(e.result(), EtcdError) and e.result().code.name == "UNAVAILABLE"
        # Applied, but waiting for a compaction's physical part: no request deadline.
        raw.drop, raw.is_leader = None, True
        t = ProposalTracker(0xABC)
        w = _put(t, b"w", time.monotonic() - 1)
        t.flush(raw, 4096)  # type: ignore[arg-type]
        waiting: list[Any] = []
        t.answer([WaitPhysical(rpc.CompactionResponse())], [(0, t.by_index.popitem()[1])], [],
                 lambda fut, r: waiting.append(fut))
        t.expire(time.monotonic(), lambda started: errors.TIMEOUT)
        assert waiting == [w] and not w.done()
    asyncio.run(main())


def test_tracker_id_field_is_the_varint() -> None:
    """The proposal id's field, made from a reused tail, is protobuf's encoding."""
    from petcd.pb.wire import varint

    t = ProposalTracker(0xABC)
    ids = [t.new_id() for _ in range(300)] + [0, 5, 127, 128, 300, 2**63 - 1, 2**64 - 1]
    for rid in ids + [t.new_id() for _ in range(300)]:
        assert t._id_field(rid) == b"\x08" + varint(rid)


def test_tracker_entry_data_is_the_internal_request() -> None:
    """flush()'s hand-made entry data (its inline length, id and stamp fields) is
    protobuf's InternalRequest: every length's varint width, ids across a 128
    boundary within one batch, each kind of stamp; and the Pending is then the
    Committed entry at its index and term."""
    from petcd.pb.internalpb.internal_pb2 import InternalRequest
    from petcd.server.proposal import ANON, encode_stamp, varint

    async def main() -> None:
        raw = FakeRaw()
        t = ProposalTracker(0xABC)
        t._next_id = (t._next_id | 0x7F) - 5  # the batch crosses a 128 boundary
        far = time.monotonic() + 60
        cases = []
        sizes = [0, 6, 100, 127, 128, 200, 16383, 16384, 70000]
        for i, size in enumerate(sizes * 3):
            req = rpc.PutRequest()  # (a request of exactly `size` bytes)
            while req.ByteSize() < size:
                req = rpc.PutRequest(key=b"k", value=b"v" * max(size - 8, len(req.value) + 1))
            stamp = [None, ANON, ("alice", 7 + i)][i % 3]
            t.add("put", req.SerializeToString(), req, stamp, far)
            cases.append((req, stamp))
        assert [len(p.raw) for p in t.queue[:9]] == sizes
        ids = [p.id for p in t.queue]
        tag = varint((InternalRequest.DESCRIPTOR.fields_by_name["put"].number << 3) | 2)
        assert t.flush(raw, 4096)  # type: ignore[arg-type]
        for data, rid, (req, stamp) in zip(raw.proposed[0], ids, cases, strict=True):
            body = req.SerializeToString()
            assert data == (tag + varint(len(body)) + body + b"\x08" + varint(rid)
                            + b"\x10" + varint(0xABC) + encode_stamp(stamp))
            want = InternalRequest(id=rid, origin=0xABC, put=req)
            if stamp is not None:
                want.auth.username, want.auth.revision = stamp
            assert InternalRequest.FromString(data) == want
        for i, p in t.by_index.items():
            assert (p.index, p.term, p.data, p.kind) == (i, 3, b"", "put")
    asyncio.run(main())
