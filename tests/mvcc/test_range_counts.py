"""A paginated range (issue 16, scale): each page's `count` is the whole rest of the range
(etcd's), and counting it again for every page made reading N keys cost O(N^2 / page).
A page leaves the count for the page that follows it (RangeCounts): the counts must stay
exactly etcd's whatever happens between pages (writes, deletes, compaction, long keys,
a restart), and a page that follows another at the same revision walks nothing past its
own records."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from petcd.mvcc.view import KVView
from petcd.pb.etcdserverpb import rpc_pb2 as pb

from .harness import Index, Member


@pytest.fixture
def member(tmp_path: Path) -> Iterator[Member]:
    m = Member(str(tmp_path))
    yield m
    m.close()


@pytest.fixture
def walks(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The start of every walk that counts the rest of a range."""
    seen: list[bytes] = []
    real = KVView._count_head

    def counting(self: KVView, start: bytes, end: bytes) -> int | None:
        seen.append(start)
        return real(self, start, end)

    monkeypatch.setattr(KVView, "_count_head", counting)
    return seen


def put(m: Member, nxt: Index, *keys: bytes, value: bytes = b"v") -> None:
    m.apply([(nxt(), pb.PutRequest(key=k, value=value)) for k in keys])


def delete(m: Member, nxt: Index, key: bytes, end: bytes = b"") -> None:
    m.apply([(nxt(), pb.DeleteRangeRequest(key=key, range_end=end))])


def live(m: Member, start: bytes, end: bytes) -> list[bytes]:
    r = m.kv.range(pb.RangeRequest(key=start, range_end=end))
    return [kv.key for kv in r.kvs]


def page(m: Member, start: bytes, end: bytes, limit: int,
         message: bool = False) -> pb.RangeResponse:
    req = pb.RangeRequest(key=start, range_end=end, limit=limit)
    if message:  # the message path (reads one record more than it returns)
        return m.kv.range(req)
    out = m.kv.range_bytes(req, b"")
    assert out is not None
    return pb.RangeResponse.FromString(bytes(out))


@pytest.mark.parametrize("message", [False, True])
def test_pages_count_the_rest_once(member: Member, walks: list[bytes],
                                   message: bool) -> None:
    nxt = Index()
    put(member, nxt, *(b"k%03d" % i for i in range(100)))
    put(member, nxt, b"k010", b"k020", value=b"again")  # more versions
    delete(member, nxt, b"k03", b"k04")  # k030..k039 deleted: tombstones in the index
    put(member, nxt, b"k035")  # one comes back
    keys = live(member, b"k", b"l")
    assert len(keys) == 91
    start, got = b"k", []
    while True:
        r = page(member, start, b"l", 7, message)
        assert r.count == len(keys) - len(got)  # etcd's count: the rest of the range
        got += [kv.key for kv in r.kvs]
        assert r.more == (len(got) < len(keys))
        if not r.more:
            break
        start = r.kvs[-1].key + b"\0"
    assert got == keys
    assert len(walks) == 1  # only the first page walked the rest


def test_changes_between_pages_are_counted(member: Member, walks: list[bytes]) -> None:
    nxt = Index()
    put(member, nxt, *(b"k%02d" % i for i in range(30)))
    r = page(member, b"k", b"l", 10)
    assert r.count == 30
    put(member, nxt, b"k50")  # a new key in the rest of the range
    r = page(member, b"k09\0", b"l", 10)
    assert r.count == 21 and r.kvs[0].key == b"k10"
    delete(member, nxt, b"k25", b"k28")
    r = page(member, b"k19\0", b"l", 5)
    assert r.count == 8  # k20..k24, k28, k29, k50
    # Unchanged since: the next page needs no walk.
    n = len(walks)
    r = page(member, b"k24\0", b"l", 5)
    assert r.count == 3 and not r.more and len(walks) == n
    # A compaction (a revision of its own, no key less): still right.
    r = page(member, b"k", b"l", 10)
    member.apply([(nxt(), pb.CompactionRequest(revision=member.store.current_revision))])
    assert page(member, r.kvs[-1].key + b"\0", b"l", 10).count == r.count - 10


def test_a_read_inside_a_write_request_does_not_use_them(member: Member) -> None:
    nxt = Index()
    put(member, nxt, *(b"k%02d" % i for i in range(20)))
    r = page(member, b"k", b"l", 5)
    assert r.count == 20
    # A txn that writes then pages from where the last page stopped: it sees its put.
    txn = pb.TxnRequest(success=[
        pb.RequestOp(request_put=pb.PutRequest(key=b"k99", value=b"v")),
        pb.RequestOp(request_range=pb.RangeRequest(key=b"k04\0", range_end=b"l", limit=5)),
    ])
    (resp,) = member.apply([(nxt(), txn)])
    assert resp.responses[1].response_range.count == 16


def test_long_keys_and_a_restart(member: Member) -> None:
    nxt = Index()
    longs = [b"k50/" + bytes([65 + i]) * 600 for i in range(3)]
    put(member, nxt, *(b"k%02d" % i for i in range(40)), *longs)
    keys = live(member, b"k", b"l")
    start, got = b"k", 0
    while True:
        r = page(member, start, b"l", 6)
        assert r.count == len(keys) - got
        got += len(r.kvs)
        if not r.more:
            break
        start = r.kvs[-1].key + b"\0"
        if got == 18:
            member.reopen()  # a restart forgets what the pages left
    assert got == len(keys) == 43


def test_a_long_key_read_past_the_page(member: Member) -> None:
    nxt = Index()
    put(member, nxt, b"a", b"x" * 600, b"\xff")
    # A page of one: the long key after it is read one by one, the rest counted.
    r = page(member, b"\0", b"\0", 1)
    assert (r.count, r.more, [kv.key for kv in r.kvs]) == (3, True, [b"a"])
    # What it left for a page starting at "a" must count the long key too.
    for message in (True, False):
        r = page(member, b"\0", b"\0", 2, message)
        assert (r.count, r.more) == (3, True)
