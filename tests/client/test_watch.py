"""Watch through both flavours against petcd and etcd: key, prefix, range, from a
revision, prev_kv, filters, progress, callbacks, a compacted start."""

from __future__ import annotations

import queue
import time
from typing import Any

import pytest

from petcd.client import EventType
from petcd.client.errors import CompactedError
from petcd.testing import MemberProcess

from .conftest import BACKENDS, Connect


def take(w: Any, n: int) -> list[Any]:
    """The next n events of a watch."""
    out: list[Any] = []
    for batch in w:
        out.extend(batch.events)
        if len(out) >= n:
            break
    assert len(out) == n, out
    return out


def test_watch_key_prefix_range(backend: MemberProcess, connect: Connect, pfx: str) -> None:
    c = connect(backend.address)
    with c.watch(pfx + "a") as one, c.watch(pfx, prefix=True) as every, \
            c.watch(pfx + "b", pfx + "d") as rng:
        c.put(pfx + "a", "1")
        c.put(pfx + "b", "2")
        c.put(pfx + "e", "3")
        c.delete(pfx + "a")
        c.put(pfx + "c", "4")
        assert [(e.type, e.kv.key[len(pfx):], e.kv.value) for e in take(one, 2)] == \
            [(EventType.PUT, b"a", b"1"), (EventType.DELETE, b"a", b"")]
        assert [e.kv.key[len(pfx):] for e in take(every, 5)] == [b"a", b"b", b"e", b"a", b"c"]
        assert [e.kv.key[len(pfx):] for e in take(rng, 2)] == [b"b", b"c"]


def test_watch_from_revision_prev_kv_filters(backend: MemberProcess, connect: Connect,
                                             pfx: str) -> None:
    c = connect(backend.address)
    first = c.put(pfx + "k", "1").header.revision
    c.put(pfx + "k", "2")
    c.delete(pfx + "k")
    with c.watch(pfx + "k", start_revision=first, prev_kv=True) as w:
        evs = take(w, 3)
        assert [e.kv.mod_revision for e in evs] == [first, first + 1, first + 2]
        assert evs[1].prev_kv.value == b"1" and evs[2].prev_kv.value == b"2"
        assert w.next_revision == first + 3
    with c.watch(pfx + "k", start_revision=first, no_put=True) as w:
        assert [e.type for e in take(w, 1)] == [EventType.DELETE]
    with c.watch(pfx + "k", start_revision=first, no_delete=True) as w:
        c.put(pfx + "k", "3")
        assert [e.kv.value for e in take(w, 3)] == [b"1", b"2", b"3"]


def test_progress(backend: MemberProcess, connect: Connect, pfx: str) -> None:
    c = connect(backend.address)
    with c.watch(pfx + "quiet") as w:
        rev = c.put(pfx + "other", "x").header.revision
        w.request_progress()
        batch = next(iter(w))
        assert batch.progress_notify and batch.events == []
        assert batch.header.revision >= rev and w.next_revision == batch.header.revision + 1


def test_callbacks(backend: MemberProcess, connect: Connect, pfx: str) -> None:
    c = connect(backend.address)
    got: queue.Queue[Any] = queue.Queue()
    w = c.add_watch_callback(pfx, got.put, prefix=True)
    for i in range(3):
        c.put(f"{pfx}{i}", str(i))
    seen: list[bytes] = []
    while len(seen) < 3:
        seen.extend(e.kv.value for e in got.get(timeout=20).events)
    assert seen == [b"0", b"1", b"2"]
    w.cancel()
    c.put(pfx + "after", "x")
    time.sleep(0.2)
    assert got.empty()


def test_compacted_start(backend: MemberProcess, connect: Connect, pfx: str) -> None:
    c = connect(backend.address)
    first = c.put(pfx + "k", "1").header.revision
    last = c.put(pfx + "k", "2").header.revision
    c.compact(last)
    with pytest.raises(CompactedError) as e:
        w = c.watch(pfx + "k", start_revision=first)
        next(iter(w))
    assert e.value.compact_revision == last


def _raw_pieces(address: str, key: bytes, end: bytes, start: int, n: int) -> list[bool]:
    """The fragment flags of the responses carrying the first n events of a raw
    fragment=True watch (the server really splits what the client joins)."""
    import grpc

    from petcd.pb.etcdserverpb import rpc_pb2 as rpc
    from petcd.pb.etcdserverpb import rpc_pb2_grpc as rpcg

    with grpc.insecure_channel(address, [("grpc.max_receive_message_length", -1)]) as ch:
        req = rpc.WatchRequest(create_request=rpc.WatchCreateRequest(
            key=key, range_end=end, start_revision=start, fragment=True))
        it = rpcg.WatchStub(ch).Watch(iter([req]), timeout=60)  # type: ignore[no-untyped-call]
        flags, got = [], 0
        for r in it:
            if r.events:
                flags.append(r.fragment)
                got += len(r.events)
                if got >= n:
                    break
        it.cancel()
        return flags


def test_watch_joins_fragments(backend: MemberProcess, connect: Connect, pfx: str) -> None:
    """Three 1 MB values in a catch-up: more than the server's limit for one response
    (--max-request-bytes 1.5 MiB + 512 KiB, etcd's and petcd's default). With fragment=True
    the server sends it in pieces; the watch delivers one batch with all three."""
    c = connect(backend.address, timeout=30)
    big = [bytes([65 + i]) * 1_000_000 for i in range(3)]
    first = c.put(pfx + "big/0", big[0]).header.revision
    c.put(pfx + "big/1", big[1])
    c.put(pfx + "big/2", big[2])
    key = (pfx + "big/").encode()
    assert _raw_pieces(backend.address, key, key[:-1] + b"0", first, 3) == [True, False]
    with c.watch(pfx + "big/", prefix=True, start_revision=first, fragment=True) as w:
        batch = next(iter(w))
        assert [e.kv.value for e in batch.events] == big
        assert w.next_revision == first + 3
        c.put(pfx + "big/3", "small")
        assert [e.kv.value for e in take(w, 1)] == [b"small"]
    # Without fragment: etcd sends one 3 MB response, petcd splits at revisions; the
    # same events either way.
    with c.watch(pfx + "big/", prefix=True, start_revision=first) as w:
        assert [e.kv.value for e in take(w, 4)] == [*big, b"small"]


def _watch_streams(address: str) -> int:
    import urllib.request

    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("etcd_debugging_mvcc_watch_stream_total "):
                return int(float(line.split()[1]))
    raise AssertionError("no etcd_debugging_mvcc_watch_stream_total")


def _streams_become(address: str, n: int) -> None:
    deadline = time.monotonic() + 20
    while _watch_streams(address) != n:
        assert time.monotonic() < deadline, (_watch_streams(address), n)
        time.sleep(0.1)


@pytest.mark.parametrize("kind", BACKENDS)
def test_watches_share_one_stream(kind: str, members_factory: Any, connect: Connect) -> None:
    """Eight watches of one client travel on one gRPC stream (the member counts its
    streams; a member of its own, so no other test's streams come and go); each gets
    only its own events; closing one leaves the others going; the stream closes with
    the last watch."""
    (backend,) = members_factory(kind, 1)
    pfx = "share/"
    before = _watch_streams(backend.address)
    c = connect(backend.address)
    watches = [c.watch(f"{pfx}{i}/", prefix=True) for i in range(8)]
    _streams_become(backend.address, before + 1)
    for i in range(8):
        c.put(f"{pfx}{i}/k", str(i))
    for i, w in enumerate(watches):
        assert [(e.kv.key, e.kv.value) for e in take(w, 1)] == \
            [(f"{pfx}{i}/k".encode(), str(i).encode())]
    watches[3].close()
    c.put(f"{pfx}3/k", "gone")
    c.put(f"{pfx}4/k", "still")
    assert [e.kv.value for e in take(watches[4], 1)] == [b"still"]
    for w in watches:
        w.close()
    _streams_become(backend.address, before)
    w = c.watch(pfx + "again")  # a new stream on demand
    _streams_become(backend.address, before + 1)
    c.put(pfx + "again", "x")
    assert [e.kv.value for e in take(w, 1)] == [b"x"]
    w.close()
