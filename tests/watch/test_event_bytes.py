"""Live watch responses are written as bytes by hand (the header, the watch id, each
event): they must be exactly what protobuf serializes for the same response."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.pb.mvccpb.kv_pb2 import Event, KeyValue

from .hubrig import FakeOutlet, HubRig, create

IDS = [(0, 0), (1, 2), (0x7F, 0x80), (2**64 - 1, 2**63 + 5), (0xDEADBEEFCAFE, 1)]


@pytest.mark.parametrize(("cluster_id", "member_id"), IDS)
def test_header_is_protobufs_for_every_revision_and_term(
        tmp_path: Path, cluster_id: int, member_id: int) -> None:
    async def main() -> None:
        term = [0]
        rig = HubRig(str(tmp_path / f"{cluster_id}-{member_id}"))
        try:
            headers = rig.hub.headers
            headers.cluster_id, headers.member_id = cluster_id, member_id
            headers.term = lambda: term[0]
            for t in (0, 1, 3, 127, 128, 2**40, 2**64 - 1):
                term[0] = t
                for rev in (0, 1, 127, 128, 16383, 16384, 2**35, 2**63 - 1, 5):
                    body = rpc.ResponseHeader(cluster_id=cluster_id, member_id=member_id,
                                              revision=rev, raft_term=t).SerializeToString()
                    want = rpc.WatchResponse(header=rpc.ResponseHeader.FromString(body))
                    assert headers.header(rev) == want.SerializeToString(), (t, rev)
        finally:
            rig.close()

    asyncio.run(main())


def test_live_event_responses_are_protobufs(tmp_path: Path) -> None:
    """Every response a synced watcher is sent for a batch (puts, deletions, several
    events per batch, prev_kv, long values, high watch ids and revisions) equals the
    protobuf serialization of the same response built field by field."""
    async def main() -> None:
        rig = HubRig(str(tmp_path))
        try:
            hub = rig.hub
            hub.headers.cluster_id, hub.headers.member_id = 2**64 - 3, 300
            stream = hub.open_stream()
            outlet = stream.outlet = FakeOutlet()
            create(stream, b"a", b"b")  # watch id 0
            create(stream, b"a", b"b", prev_kv=True, watch_id=2**62)
            create(stream, b"ab", watch_id=200)  # a single key
            outlet.wire.clear()
            for i in range(140):  # revisions past one varint byte
                rig.put(b"zz%d" % i)
            rig.put(b"ab", b"x" * 300)
            rig.put(b"ab", b"y")
            rig.apply(rpc.DeleteRangeRequest(key=b"ab"),
                      rpc.PutRequest(key=b"ac", value=b"v" * 20000))
            rig.apply(rpc.TxnRequest(success=[
                rpc.RequestOp(request_put=rpc.PutRequest(key=b"a1")),
                rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(
                    key=b"a1", range_end=b"a2"))]))
            assert len(outlet.wire) == 3 + 3 + 3 + 2
            ranges = {0: (b"a", b"b"), 2**62: (b"a", b"b"), 200: (b"ab", b"ab\0")}
            deletions = 0
            for raw in outlet.wire:
                got = rpc.WatchResponse.FromString(raw)
                want = rpc.WatchResponse(
                    header=rpc.ResponseHeader(cluster_id=hub.headers.cluster_id,
                                              member_id=hub.headers.member_id,
                                              revision=got.header.revision, raft_term=3),
                    watch_id=got.watch_id)
                start, end = ranges[got.watch_id]
                revs = {e.kv.mod_revision for e in got.events}
                for rec in rig.history:  # the batch's events on the watcher's keys, in order
                    if rec.revision in revs and start <= rec.key < end:
                        ev = want.events.add(type=rec.type, kv=KeyValue.FromString(rec.kv))
                        if got.watch_id == 2**62 and rec.prev_kv is not None:
                            ev.prev_kv.CopyFrom(KeyValue.FromString(rec.prev_kv))
                        deletions += rec.type == Event.DELETE
                assert raw == want.SerializeToString(), got
            assert deletions == 5
        finally:
            rig.close()

    asyncio.run(main())


class _Outlet(FakeOutlet):
    def __init__(self, flush_fails: bool = False) -> None:
        super().__init__()
        self.flush_fails = flush_fails

    def flush(self) -> None:
        super().flush()
        if self.flush_fails:
            raise ConnectionError("a broken connection")


def test_every_held_response_is_flushed_whatever_fails(tmp_path: Path) -> None:
    """A response an outlet took with held=True (no flush of its own arranged) is flushed
    at the batch's end even when another connection's flush fails, or when the hub fails
    after the outlet took it; the apply goes on either way."""
    async def main() -> None:
        rig = HubRig(str(tmp_path))
        try:
            hub = rig.hub
            streams = [hub.open_stream() for _ in range(3)]
            outlets = [_Outlet(flush_fails=True), _Outlet(), _Outlet()]
            for s, o in zip(streams, outlets, strict=True):
                s.outlet = o
                create(s, b"k")
            rig.put(b"k")
            assert [len(o.wire) for o in outlets] == [2, 2, 2]  # created + the event
            assert [o.unflushed for o in outlets] == [0, 0, 0]
            assert all(o.flushes == 1 for o in outlets)

            # The hub fails after the first outlet took its response.
            deliver = hub._deliver
            seen: list[int] = []

            def failing(*a: object) -> None:
                seen.append(1)
                if len(seen) == 2:
                    raise RuntimeError("never expected")
                deliver(*a)  # type: ignore[arg-type]

            hub._deliver = failing  # type: ignore[method-assign]
            assert rig.put(b"k") == 3  # answered
            assert sum(len(o.wire) for o in outlets) == 7
            assert [o.unflushed for o in outlets] == [0, 0, 0]
            assert len(hub.unsynced) == 3  # everyone catches up from the store
        finally:
            rig.close()

    asyncio.run(main())
