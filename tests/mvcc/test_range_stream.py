"""A large plain range made in pieces (server.range_encode.RangeStream): each piece is a
read of its own at the range's revision, so writes and compactions may land between
pieces. The whole must be the range at that revision, byte for byte; a compaction above
it ends the stream with etcd's COMPACTED error, one at or below it does not."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from petcd import errors
from petcd.errors import EtcdError
from petcd.pb.etcdserverpb import rpc_pb2 as pb
from petcd.server import range_encode
from petcd.server.range_encode import RangeStream

from .harness import Index, Member


@pytest.fixture
def member(tmp_path: object) -> Iterator[Member]:
    m = Member(str(tmp_path))
    try:
        yield m
    finally:
        m.close()


@pytest.fixture(autouse=True)
def small_pieces() -> Iterator[None]:
    """Stream past 1000 bytes of records, in pieces of 700 (a few records each)."""
    saved = range_encode.STREAM_AT, range_encode.CHUNK
    range_encode.STREAM_AT, range_encode.CHUNK = 1000, 700
    try:
        yield
    finally:
        range_encode.STREAM_AT, range_encode.CHUNK = saved


def load(m: Member, nxt: Index, n: int = 100) -> None:
    m.apply([(nxt(), pb.PutRequest(key=b"k%03d" % i, value=b"v" * 100)) for i in range(n)])


def pieces(s: RangeStream) -> list[bytes]:
    out = []
    while (chunk := s.next_chunk()) is not None:
        out.append(bytes(chunk))
    return out


def stream(m: Member, req: pb.RangeRequest) -> RangeStream:
    out = m.kv.range_bytes(req, b"")
    assert isinstance(out, RangeStream), "expected a streamed range"
    return out


def test_writes_between_pieces_do_not_show(member: Member) -> None:
    nxt = Index()
    load(member, nxt)
    rev = member.store.current_revision
    req = pb.RangeRequest(key=b"k", range_end=b"l")
    want = member.kv.range(req)
    s = stream(member, req)
    got = [bytes(s.next_chunk() or b"")]
    member.apply([(nxt(), pb.PutRequest(key=b"k050", value=b"new")),
                  (nxt(), pb.PutRequest(key=b"k0505", value=b"inserted")),
                  (nxt(), pb.DeleteRangeRequest(key=b"k060", range_end=b"k070"))])
    got.append(bytes(s.next_chunk() or b""))
    member.apply([(nxt(), pb.CompactionRequest(revision=rev))])  # at the range's: harmless
    got += pieces(s)
    assert len(got) > 5  # (it was made in pieces)
    whole = b"".join(got)
    assert len(whole) == s.size
    assert pb.RangeResponse.FromString(whole) == want
    assert want.count == 100 and len(want.kvs) == 100


def test_negative_revision_means_the_head_when_the_stream_began(member: Member) -> None:
    nxt = Index()
    load(member, nxt)
    req = pb.RangeRequest(key=b"k", range_end=b"l", revision=-1)
    want = member.kv.range(req)
    s = stream(member, req)
    got = [bytes(s.next_chunk() or b"")]
    member.apply([(nxt(), pb.DeleteRangeRequest(key=b"k", range_end=b"l"))])
    got += pieces(s)
    assert pb.RangeResponse.FromString(b"".join(got)) == want


def test_limit_count_and_more_when_streamed(member: Member) -> None:
    nxt = Index()
    load(member, nxt)
    for limit in (10, 50, 99, 100, 101):
        req = pb.RangeRequest(key=b"k", range_end=b"l", limit=limit)
        s = stream(member, req)
        got = pb.RangeResponse.FromString(b"".join(pieces(s)))
        assert got == member.kv.range(req), limit
        assert got.count == 100 and got.more == (limit < 100)
        assert len(got.kvs) == min(limit, 100)


def test_keys_only_streamed(member: Member) -> None:
    nxt = Index()
    load(member, nxt, 300)  # ~30 bytes a record without its value: past STREAM_AT
    member.apply([(nxt(), pb.PutRequest(key=b"k\x2a\x2a", value=b"*" * 200, lease=0))])
    for limit in (0, 150):
        req = pb.RangeRequest(key=b"k", range_end=b"l", keys_only=True, limit=limit)
        got = pb.RangeResponse.FromString(b"".join(pieces(stream(member, req))))
        assert got == member.kv.range(req)
        assert all(not kv.value and kv.version == 1 for kv in got.kvs)


def test_past_revision_streamed(member: Member) -> None:
    nxt = Index()
    load(member, nxt)
    rev = member.store.current_revision
    member.apply([(nxt(), pb.DeleteRangeRequest(key=b"k000", range_end=b"k050"))])
    req = pb.RangeRequest(key=b"k", range_end=b"l", revision=rev)
    got = pb.RangeResponse.FromString(b"".join(pieces(stream(member, req))))
    assert len(got.kvs) == 100 and got.header.revision == rev + 1


def test_compaction_above_the_range_ends_it(member: Member) -> None:
    nxt = Index()
    load(member, nxt)
    s = stream(member, pb.RangeRequest(key=b"k", range_end=b"l"))
    s.next_chunk()
    member.apply([(nxt(), pb.PutRequest(key=b"k001", value=b"x")),
                  (nxt(), pb.CompactionRequest(revision=member.store.current_revision + 1))])
    with pytest.raises(EtcdError) as e:
        pieces(s)
    assert e.value == errors.COMPACTED()


def test_small_ranges_are_one_buffer(member: Member) -> None:
    nxt = Index()
    load(member, nxt, 5)  # 5 records of ~120 bytes: under STREAM_AT
    out = member.kv.range_bytes(pb.RangeRequest(key=b"k", range_end=b"l"), b"")
    assert isinstance(out, bytearray)
