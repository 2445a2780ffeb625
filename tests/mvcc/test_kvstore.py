"""Unit tests of the MVCC store and the KV applier. Expected responses marked
"etcd 3.4.23" were recorded from the real etcd with the same requests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import text_format

from petcd import errors
from petcd.mvcc import EVENT_DELETE, EVENT_PUT, KVEvent
from petcd.mvcc.kvstore import parse_rev_key, rev_key
from petcd.pb.etcdserverpb import rpc_pb2 as pb
from petcd.pb.mvccpb.kv_pb2 import KeyValue

from .harness import Member


@pytest.fixture
def m(tmp_path: Path) -> Iterator[Member]:
    member = Member(str(tmp_path))
    yield member
    member.close()


LONG = b"p" * 500


def P(key: bytes, value: bytes = b"", **kw: Any) -> pb.PutRequest:
    return pb.PutRequest(key=key, value=value, **kw)


def R(key: bytes, end: bytes = b"", **kw: Any) -> pb.RangeRequest:
    return pb.RangeRequest(key=key, range_end=end, **kw)


def D(key: bytes, end: bytes = b"", **kw: Any) -> pb.DeleteRangeRequest:
    return pb.DeleteRangeRequest(key=key, range_end=end, **kw)


def op(req: Any) -> pb.RequestOp:
    name = {
        pb.PutRequest: "request_put",
        pb.RangeRequest: "request_range",
        pb.DeleteRangeRequest: "request_delete_range",
        pb.TxnRequest: "request_txn",
    }[type(req)]
    return pb.RequestOp(**{name: req})


class Applier:
    """Applies each request in its own batch, with increasing indexes."""

    def __init__(self, m: Member) -> None:
        self.m = m
        self.index = m.backend.consistent_index()[0]

    def __call__(self, req: Any) -> Any:
        self.index += 1
        (result,) = self.m.apply([(self.index, req)])
        if isinstance(result, errors.EtcdError):
            raise result
        return result


@pytest.fixture
def apply(m: Member) -> Applier:
    return Applier(m)


def text(msg: Any) -> str:
    return " ".join(text_format.MessageToString(msg).split())


def kv(raw: bytes | None) -> KeyValue:
    assert raw is not None
    return KeyValue.FromString(raw)


def test_fresh_store(m: Member) -> None:
    assert m.store.current_revision == 1
    assert m.store.compact_revision == -1
    assert m.backend.consistent_index() == (0, 0)
    assert text(m.kv.range(R(b"a"))) == "header { revision: 1 }"


def test_revisions_versions_generations(m: Member, apply: Applier) -> None:
    assert apply(P(b"k", b"v1")).header.revision == 2
    assert apply(P(b"k", b"v2")).header.revision == 3
    got = m.kv.range(R(b"k")).kvs[0]
    assert (got.create_revision, got.mod_revision, got.version, got.value) == (2, 3, 2, b"v2")
    resp = apply(D(b"k"))
    assert (resp.deleted, resp.header.revision) == (1, 4)
    assert m.kv.range(R(b"k")).count == 0
    assert apply(D(b"k")).header.revision == 4  # nothing deleted: no new revision
    apply(P(b"k", b"v3"))
    got = m.kv.range(R(b"k")).kvs[0]
    assert (got.create_revision, got.mod_revision, got.version) == (5, 5, 1)
    # every past revision is still readable
    seen = [m.store.range(b"k", rev=r).kvs for r in range(1, 6)]
    assert [[kv(x).value for x in s] for s in seen] == [[], [b"v1"], [b"v2"], [], [b"v3"]]
    with pytest.raises(errors.EtcdError) as exc:
        m.store.range(b"k", rev=6)
    assert exc.value.kind is errors.FUTURE_REV


def test_txn_shapes_match_etcd(m: Member, apply: Applier) -> None:
    apply(P(b"a", b"1"))
    resp = apply(pb.TxnRequest(success=[
        op(R(b"a")), op(P(b"b", b"2", prev_kv=True)), op(R(b"b")),
        op(pb.TxnRequest(success=[op(R(b"b")), op(P(b"c", b"3"))])),
        op(D(b"zz")), op(D(b"a", prev_kv=True)),
    ]))
    # etcd 3.4.23 (cluster_id/member_id/raft_term are the server's to fill)
    b3 = 'kvs { key: "b" create_revision: 3 mod_revision: 3 version: 1 value: "2" } count: 1'
    assert text(resp) == (
        'header { revision: 3 } succeeded: true '
        'responses { response_range { header { revision: 2 } kvs { key: "a" create_revision: 2 '
        'mod_revision: 2 version: 1 value: "1" } count: 1 } } '
        'responses { response_put { header { revision: 3 } } } '
        f'responses {{ response_range {{ header {{ revision: 3 }} {b3} }} }} '
        'responses { response_txn { header { } succeeded: true '
        f'responses {{ response_range {{ header {{ revision: 3 }} {b3} }} }} '
        'responses { response_put { header { revision: 3 } } } } } '
        'responses { response_delete_range { header { revision: 3 } } } '
        'responses { response_delete_range { header { revision: 3 } deleted: 1 prev_kvs { '
        'key: "a" create_revision: 2 mod_revision: 2 version: 1 value: "1" } } }'
    )
    # read-only txn: no new revision
    resp = apply(pb.TxnRequest(success=[op(R(b"a")), op(D(b"zz"))]))
    assert text(resp) == (
        "header { revision: 3 } succeeded: true "
        "responses { response_range { header { revision: 3 } } } "
        "responses { response_delete_range { header { revision: 3 } } }"
    )
    resp = apply(pb.TxnRequest(success=[op(D(b"zz")), op(pb.TxnRequest(success=[op(D(b"b"))]))]))
    assert text(resp) == (
        "header { revision: 4 } succeeded: true "
        "responses { response_delete_range { header { revision: 3 } } } "
        "responses { response_txn { header { } succeeded: true responses { "
        "response_delete_range { header { revision: 4 } deleted: 1 } } } }"
    )
    assert text(apply(pb.TxnRequest())) == "header { revision: 4 } succeeded: true"
    for bad in (7, 5):
        with pytest.raises(errors.EtcdError) as exc:
            apply(pb.TxnRequest(success=[op(R(b"b", revision=bad))]))
        assert exc.value.kind is errors.FUTURE_REV
    with pytest.raises(errors.EtcdError) as exc:
        apply(pb.TxnRequest(success=[op(P(b"q", ignore_value=True))]))
    assert exc.value.kind is errors.KEY_NOT_FOUND
    with pytest.raises(errors.EtcdError) as exc:
        apply(pb.TxnRequest(success=[op(P(b"b", b"x", lease=5))]))
    assert exc.value.kind is errors.LEASE_NOT_FOUND
    assert m.store.current_revision == 4


def test_txn_multiple_writes_share_main_revision(m: Member, apply: Applier) -> None:
    apply(pb.TxnRequest(success=[op(P(b"x", b"1")), op(P(b"y", b"2")), op(D(b"x"))]))
    assert m.store.current_revision == 2
    assert sorted(parse_rev_key(k) for k in m.kv_records()) == [
        (2, 0, False), (2, 1, False), (2, 2, True)]
    assert m.kv.range(R(b"x")).count == 0


def test_nested_compares_see_state_before_txn(m: Member, apply: Applier) -> None:
    # The nested compare (x exists) is evaluated before the outer put ran, as etcd does.
    exists = pb.Compare(key=b"x", target=pb.Compare.VERSION, result=pb.Compare.GREATER, version=0)
    resp = apply(pb.TxnRequest(success=[
        op(P(b"x", b"1")),
        op(pb.TxnRequest(compare=[exists], success=[op(P(b"then"))], failure=[op(P(b"else"))])),
    ]))
    assert resp.responses[1].response_txn.succeeded is False
    assert m.kv.range(R(b"else")).count == 1


def test_failed_txn_leaves_nothing(m: Member, apply: Applier) -> None:
    apply(P(b"k", b"v"))
    before = m.kv_records()
    # Passes etcd's upfront check (k exists before the txn) but fails midway.
    with pytest.raises(errors.EtcdError) as exc:
        apply(pb.TxnRequest(success=[op(P(b"new", b"1")), op(D(b"k")),
                                     op(P(b"k", ignore_value=True))]))
    assert exc.value.kind is errors.KEY_NOT_FOUND
    assert m.kv_records() == before
    assert m.store.current_revision == 2
    assert apply(P(b"z")).header.revision == 3


def test_compares(m: Member, apply: Applier) -> None:
    apply(P(b"a", b"1"))
    apply(P(b"b", b"2"))
    C = pb.Compare

    def ok(**kw: Any) -> bool:
        return bool(apply(pb.TxnRequest(compare=[C(**kw)])).succeeded)

    assert ok(key=b"a", target=C.VALUE, result=C.EQUAL, value=b"1")
    assert not ok(key=b"a", target=C.VALUE, result=C.GREATER, value=b"1")
    assert ok(key=b"a", target=C.VALUE, result=C.LESS, value=b"2")
    assert not ok(key=b"zz", target=C.VALUE, result=C.NOT_EQUAL, value=b"1")  # missing: false
    assert ok(key=b"zz", target=C.VERSION, result=C.EQUAL, version=0)
    assert ok(key=b"zz", target=C.CREATE, result=C.EQUAL, create_revision=0)
    assert ok(key=b"a", target=C.CREATE, result=C.EQUAL, create_revision=2)
    assert ok(key=b"b", target=C.MOD, result=C.GREATER, mod_revision=2)
    assert ok(key=b"a", target=C.LEASE, result=C.EQUAL, lease=0)
    # over a range every key must satisfy it
    assert ok(key=b"a", range_end=b"c", target=C.VERSION, result=C.EQUAL, version=1)
    assert not ok(key=b"a", range_end=b"c", target=C.MOD, result=C.LESS, mod_revision=3)
    assert ok(key=b"a", range_end=b"\x00", target=C.MOD, result=C.LESS, mod_revision=4)


def test_range_options_match_etcd(m: Member, apply: Applier) -> None:
    apply(P(b"c"))
    for k, v in [(b"k1", b"c"), (b"k2", b"a"), (b"k3", b"b"), (b"k1", b"d"), (b"k4", b"a")]:
        apply(P(k, v))
    S = pb.RangeRequest
    k1 = 'key: "k1" create_revision: 3 mod_revision: 6 version: 2'
    k2 = 'key: "k2" create_revision: 4 mod_revision: 4 version: 1'
    k3 = 'key: "k3" create_revision: 5 mod_revision: 5 version: 1'
    k4 = 'key: "k4" create_revision: 7 mod_revision: 7 version: 1'
    cases = [
        (R(b"k", b"l", limit=2, keys_only=True),
         f"kvs {{ {k1} }} kvs {{ {k2} }} more: true count: 4"),
        (R(b"k", b"l", limit=2, count_only=True), "count: 4"),
        (R(b"k", b"l", limit=2, min_mod_revision=6),
         f'kvs {{ {k1} value: "d" }} kvs {{ {k4} value: "a" }} count: 4'),
        (R(b"k", b"l", limit=1, min_mod_revision=6),
         f'kvs {{ {k1} value: "d" }} more: true count: 4'),
        (R(b"k", b"l", limit=2, sort_target=S.VALUE, sort_order=S.DESCEND),
         f'kvs {{ {k1} value: "d" }} kvs {{ {k3} value: "b" }} more: true count: 4'),
        (R(b"k", b"l", sort_target=S.VALUE, keys_only=True),
         f"kvs {{ {k2} }} kvs {{ {k4} }} kvs {{ {k3} }} kvs {{ {k1} }} count: 4"),
        (R(b"k", b"l", sort_target=S.VERSION, sort_order=S.DESCEND, keys_only=True),
         f"kvs {{ {k1} }} kvs {{ {k2} }} kvs {{ {k3} }} kvs {{ {k4} }} count: 4"),
        (R(b"k", b"l", sort_order=S.DESCEND, limit=3, keys_only=True),
         f"kvs {{ {k4} }} kvs {{ {k3} }} kvs {{ {k2} }} more: true count: 4"),
        (R(b"k", b"l", count_only=True, min_mod_revision=6), "count: 4"),
        (R(b"k3", b"\x00", keys_only=True), f"kvs {{ {k3} }} kvs {{ {k4} }} count: 2"),
        (R(b"k3", b"k1", keys_only=True), ""),
        (R(b"k3", b"k3", keys_only=True), ""),
        (R(b"k", b"l", revision=5, keys_only=True),
         f"kvs {{ {k1.replace('mod_revision: 6 version: 2', 'mod_revision: 3 version: 1')} }} "
         f"kvs {{ {k2} }} kvs {{ {k3} }} count: 3"),
        (R(b"k", b"l", limit=-1, keys_only=True),
         f"kvs {{ {k1} }} kvs {{ {k2} }} kvs {{ {k3} }} kvs {{ {k4} }} count: 4"),
    ]
    for req, want in cases:
        assert text(m.kv.range(req)) == ("header { revision: 7 } " + want).strip(), req
    everything = m.kv.range(R(b"\x00", b"\x00", keys_only=True))
    assert [x.key for x in everything.kvs] == [b"c", b"k1", b"k2", b"k3", b"k4"]
    resp = apply(D(b"k2", b"k2", prev_kv=True))
    assert text(resp) == "header { revision: 7 }"


def test_put_flags(m: Member, apply: Applier) -> None:
    with pytest.raises(errors.EtcdError) as exc:
        apply(P(b"k", ignore_value=True))
    assert exc.value.kind is errors.KEY_NOT_FOUND
    with pytest.raises(errors.EtcdError) as exc:
        apply(P(b"k", b"v", ignore_lease=True))
    assert exc.value.kind is errors.KEY_NOT_FOUND
    assert m.store.current_revision == 1
    apply(P(b"k", b"v1"))
    resp = apply(P(b"k", ignore_value=True, prev_kv=True))
    assert text(resp) == ('header { revision: 3 } prev_kv { key: "k" create_revision: 2 '
                          'mod_revision: 2 version: 1 value: "v1" }')
    assert m.kv.range(R(b"k")).kvs[0].value == b"v1"
    assert apply(P(b"k", b"v2", ignore_lease=True)).header.revision == 4
    with pytest.raises(errors.EtcdError) as exc:
        apply(P(b"k", b"v", lease=5))
    assert exc.value.kind is errors.LEASE_NOT_FOUND


class Lessor:
    """A minimal in-memory lessor, standing in for issue 7's."""

    def __init__(self) -> None:
        self.leases: dict[int, set[bytes]] = {5: set(), 6: set()}

    def lease_exists(self, lease_id: int) -> bool:
        return lease_id in self.leases

    def attach(self, lease_id: int, key: bytes) -> None:
        self.leases[lease_id].add(key)

    def detach(self, lease_id: int, key: bytes) -> None:
        self.leases[lease_id].discard(key)


def test_lease_hook(m: Member, apply: Applier) -> None:
    lessor = Lessor()
    m.store.lessor = lessor
    apply(P(b"a", b"1", lease=5))
    apply(P(b"b", b"1", lease=5))
    assert lessor.leases == {5: {b"a", b"b"}, 6: set()}
    apply(P(b"a", b"2", lease=6))
    assert lessor.leases == {5: {b"b"}, 6: {b"a"}}
    apply(P(b"a", b"3", ignore_lease=True))
    assert kv(m.store.range(b"a").kvs[0]).lease == 6
    apply(D(b"a", b"c"))
    assert lessor.leases == {5: set(), 6: set()}
    with pytest.raises(errors.EtcdError) as exc:
        apply(P(b"a", b"1", lease=9))
    assert exc.value.kind is errors.LEASE_NOT_FOUND
    # a failing txn attaches nothing
    with pytest.raises(errors.EtcdError):
        apply(pb.TxnRequest(success=[op(P(b"x", b"1", lease=5)), op(D(b"y")),
                                     op(P(b"y", ignore_value=True))]))
    assert lessor.leases == {5: set(), 6: set()}
    apply(P(b"k1", b"1", lease=5))
    apply(P(LONG + b"k2", b"1", lease=6))
    apply(P(b"k3", b"1"))
    assert sorted(m.store.lease_attachments()) == [(5, b"k1"), (6, LONG + b"k2")]


def test_compaction(m: Member, apply: Applier) -> None:
    apply(P(b"a", b"1"))  # 2
    apply(P(b"a", b"2"))  # 3
    apply(P(b"b", b"1"))  # 4
    apply(D(b"b"))  # 5
    apply(P(b"c", b"1"))  # 6
    apply(P(b"a", b"3"))  # 7
    with pytest.raises(errors.EtcdError) as exc:
        apply(pb.CompactionRequest(revision=8))
    assert exc.value.kind is errors.FUTURE_REV
    resp = apply(pb.CompactionRequest(revision=6, physical=True))
    assert text(resp) == "header { revision: 7 }"
    assert m.store.compact_revision == 6
    for bad in (5, 6, 1):
        with pytest.raises(errors.EtcdError) as exc:
            apply(pb.CompactionRequest(revision=bad))
        assert exc.value.kind is errors.COMPACTED
    with pytest.raises(errors.EtcdError) as exc:
        m.kv.range(R(b"a", revision=5))
    assert exc.value.kind is errors.COMPACTED
    at6 = m.kv.range(R(b"\x00", b"\x00", revision=6))
    assert [(x.key, x.value) for x in at6.kvs] == [(b"a", b"2"), (b"c", b"1")]
    # physically gone: a@2, b@4 and its deletion b@5; kept: a@3 (newest <= 6), c@6, a@7
    assert sorted(parse_rev_key(k)[0] for k in m.kv_records()) == [3, 6, 7]
    m.reopen()
    assert m.store.compact_revision == 6
    assert m.kv.range(R(b"a", revision=6)).kvs[0].value == b"2"


def test_compaction_at_zero_and_on_fresh_store(m: Member, apply: Applier) -> None:
    # etcd 3.4.23 accepts compacting a fresh store at 0, then at 1 once.
    apply(pb.CompactionRequest(revision=0))
    assert m.store.compact_revision == 0
    assert m.kv.range(R(b"a", revision=1)).header.revision == 1
    apply(pb.CompactionRequest(revision=1))
    with pytest.raises(errors.EtcdError) as exc:
        apply(pb.CompactionRequest(revision=1))
    assert exc.value.kind is errors.COMPACTED
    with pytest.raises(errors.EtcdError) as exc:
        m.store.hash_kv(1)
    assert exc.value.kind is errors.COMPACTED



def test_long_keys(m: Member, apply: Applier) -> None:
    keys = [LONG + b"b" * 2000, LONG + b"a", LONG, LONG[:-1], LONG + b"a\x00" * 300,
            b"p" * 499 + b"q" + b"z" * 100]
    for i, k in enumerate(keys):
        apply(P(k, b"%d" % i))
    everything = m.kv.range(R(b"\x00", b"\x00", keys_only=True))
    assert [x.key for x in everything.kvs] == sorted(keys)
    assert everything.count == len(keys)
    assert m.kv.range(R(LONG + b"a")).kvs[0].value == b"1"
    got = m.kv.range(R(LONG + b"a", LONG + b"b"))
    assert [x.key for x in got.kvs] == [LONG + b"a", LONG + b"a\x00" * 300]
    got = m.kv.range(R(LONG + b"a\x00", b"\x00", limit=2))
    assert [x.key for x in got.kvs] == [LONG + b"a\x00" * 300, LONG + b"b" * 2000]
    assert (got.more, got.count) == (True, 3)
    apply(P(LONG + b"a", b"again"))
    assert m.kv.range(R(LONG + b"a")).kvs[0].version == 2
    assert apply(D(LONG + b"a", LONG + b"a\x01")).deleted == 2
    apply(pb.CompactionRequest(revision=m.store.current_revision))
    with m.backend.read() as txn:
        surrogates = [k for k, _ in txn.cursor(db=m.store._longkeys)]
    assert len(surrogates) == 2
    assert m.kv.range(R(LONG, LONG + b"\xff")).count == 2


def test_events(m: Member) -> None:
    with m.backend.begin_write() as batch:
        m.kv.put(batch, P(b"a", b"1"))
        m.kv.put(batch, P(b"a", b"2"))
        m.kv.txn(batch, pb.TxnRequest(success=[op(P(b"b", b"1")), op(D(b"a"))]))
    ev = batch.events
    assert [(e.revision, e.type, e.key) for e in ev] == [
        (2, EVENT_PUT, b"a"), (3, EVENT_PUT, b"a"), (4, EVENT_PUT, b"b"), (4, EVENT_DELETE, b"a")]
    assert ev[0].prev_kv is None
    assert kv(ev[1].prev_kv).value == b"1"
    assert kv(ev[3].kv) == KeyValue(key=b"a", mod_revision=4)
    assert kv(ev[3].prev_kv).value == b"2"
    pbev = ev[1].to_pb(with_prev_kv=True)
    assert (pbev.kv.value, pbev.prev_kv.value) == (b"2", b"1")
    # history read back for watchers starting in the past
    with m.store.read() as r:
        past = r.events(3, b"a", b"c")
        assert [e[:4] for e in past] == [e[:4] for e in ev[1:]]
        assert [e.kv for e in past] == [e.kv for e in ev[1:]]
        assert [e.revision for e in r.events(1, b"b")] == [4]
    # an aborted request leaves no events behind
    with m.backend.begin_write() as batch, pytest.raises(errors.EtcdError):
        m.kv.txn(batch, pb.TxnRequest(success=[op(P(b"x")), op(D(b"b")),
                                               op(P(b"b", ignore_value=True))]))
    assert batch.events == []


def test_aborted_batch_is_forgotten(m: Member, apply: Applier) -> None:
    apply(P(b"a", b"1"))
    with pytest.raises(ZeroDivisionError), m.backend.begin_write() as batch:
        m.kv.put(batch, P(b"a", b"2"))
        batch.set_consistent_index(99, 9)
        assert m.store.working_revision == 3
        raise ZeroDivisionError
    assert m.store.current_revision == m.store.working_revision == 2
    assert m.backend.consistent_index() == (1, 1)
    assert apply(P(b"a", b"3")).header.revision == 3
    m.reopen()
    assert m.kv.range(R(b"a")).kvs[0].value == b"3"


def test_snapshot_reads_are_isolated(m: Member, apply: Applier) -> None:
    apply(P(b"a", b"1"))
    with m.store.read() as r:
        with m.backend.begin_write() as batch:
            m.kv.put(batch, P(b"a", b"2"))
            assert m.kv.range(R(b"a")).kvs[0].value == b"1"  # uncommitted: invisible
            assert m.kv.range(R(b"a"), batch).kvs[0].value == b"2"  # but the batch sees it
        assert r.rev == 2
        assert kv(r.get(b"a")).value == b"1"
    assert m.kv.range(R(b"a")).kvs[0].value == b"2"


def test_hash_kv_is_deterministic(tmp_path: Path) -> None:
    a, b = Member(str(tmp_path / "a")), Member(str(tmp_path / "b"))
    try:
        log: list[tuple[int, Any]] = [(1, P(b"x", b"1")), (2, P(b"y", b"2")), (3, D(b"x")),
                                      (4, P(b"y", b"3")), (5, pb.CompactionRequest(revision=4))]
        a.apply(log)
        for entry in log:  # same log, other batching
            b.apply([entry])
        assert a.store.hash_kv() == b.store.hash_kv()
        assert a.store.hash_kv(5) == b.store.hash_kv(5)
        assert a.backend.hash() == b.backend.hash()
        b.apply([(6, P(b"y", b"4"))])
        a.apply([(6, P(b"y", b"5"))])
        assert a.store.hash_kv()[0] != b.store.hash_kv()[0]
        assert a.store.hash_kv(5) == (b.store.hash_kv(5)[0], 6, 4)
        assert a.backend.hash() != b.backend.hash()
        with pytest.raises(errors.EtcdError) as exc:
            a.store.hash_kv(7)
        assert exc.value.kind is errors.FUTURE_REV
    finally:
        a.close()
        b.close()


def test_hash_ignores_consistent_index(tmp_path: Path) -> None:
    a, b = Member(str(tmp_path / "a")), Member(str(tmp_path / "b"))
    try:
        a.apply([(1, P(b"x", b"1"))])
        b.apply([(7, P(b"x", b"1"))], term=3)
        assert a.backend.hash() == b.backend.hash()
    finally:
        a.close()
        b.close()


def test_defragment_and_sizes(m: Member, apply: Applier) -> None:
    with m.backend.begin_write() as batch:
        for i in range(3000):
            m.kv.put(batch, P(b"key%05d" % i, b"v" * 500))
        batch.set_consistent_index(1, 1)
    with m.backend.begin_write() as batch:
        m.kv.delete_range(batch, D(b"key", b"kez"))
        m.kv.put(batch, P(b"keep", b"me"))
        m.kv.compact(batch, pb.CompactionRequest(revision=m.store.working_revision))
        batch.set_consistent_index(2, 1)
    size, in_use = m.backend.size(), m.backend.size_in_use()
    assert 0 < in_use < size / 4
    hash_before = m.backend.hash()
    m.backend.defragment()
    assert m.backend.size() < size / 4
    assert m.backend.hash() == hash_before
    assert m.backend.consistent_index() == (2, 1)
    # handles were renewed: the store keeps working
    assert m.kv.range(R(b"keep")).kvs[0].value == b"me"
    apply.index = 2
    apply(P(b"after", b"defrag"))
    m.reopen()
    assert m.kv.range(R(b"after")).kvs[0].value == b"defrag"


def test_snapshot_copy(m: Member, apply: Applier, tmp_path: Path) -> None:
    for i in range(50):
        apply(P(b"k%d" % i, b"v%d" % i))
    target = tmp_path / "copy" / "member" / "snap" / "db"
    target.parent.mkdir(parents=True)
    with open(target, "wb") as f:
        written = m.backend.snapshot_to(f)
    assert written == target.stat().st_size > 0
    copy = Member(str(tmp_path / "copy"))
    try:
        assert copy.backend.hash() == m.backend.hash()
        assert copy.backend.consistent_index() == m.backend.consistent_index()
        assert copy.store.current_revision == m.store.current_revision
        assert copy.kv.range(R(b"k", b"l")).count == 50
    finally:
        copy.close()


def test_hot_key_history(m: Member) -> None:
    """A key with a long history: puts stay correct, old revisions readable, whether
    their entries are still in the index or were moved to its history (all but the
    newest few, in batches: the index keeps few entries per key)."""
    from petcd.mvcc.keys import INLINE_KEEP, INLINE_MAX

    with m.backend.begin_write() as batch:
        for i in range(5000):
            tw = m.store.write(batch)
            tw.put(b"hot", b"%d" % i)
            tw.end()
        tw = m.store.write(batch)
        tw.delete_range(b"hot")  # (a deletion moves entries too)
        tw.end()
        for i in range(5000, 5003):
            tw = m.store.write(batch)
            tw.put(b"hot", b"%d" % i)
            tw.end()
    assert kv(m.store.range(b"hot").kvs[0]).version == 3
    for rev in (2, 3, 1234, 4990, 4998, 5001):
        assert kv(m.store.range(b"hot", rev=rev).kvs[0]).value == b"%d" % (rev - 2)
    assert m.store.range(b"hot", rev=5002).kvs == []  # (deleted)
    with m.backend.read() as txn:
        cur = txn.cursor(db=m.store._index)
        assert cur.set_key(b"hot")
        inline = cur.count()
        hist = txn.cursor(db=m.store._history)
        assert hist.set_key(b"hot")
        assert INLINE_KEEP <= inline <= INLINE_MAX and inline + hist.count() == 5004


def test_rev_key_layout() -> None:
    assert rev_key(2, 1) == b"\x00" * 7 + b"\x02_" + b"\x00" * 7 + b"\x01"
    assert parse_rev_key(rev_key(5, 3) + b"t") == (5, 3, True)
    ev = KVEvent(3, EVENT_PUT, b"k", KeyValue(key=b"k").SerializeToString(), None)
    assert ev.to_pb(with_prev_kv=True).HasField("prev_kv") is False


def test_empty_key_is_never_stored(m: Member, apply: Applier) -> None:
    """etcd's API layer rejects empty keys; the store still copes with them."""
    apply(P(b"a", b"1"))
    with pytest.raises(errors.EtcdError) as exc:
        apply(P(b""))
    assert exc.value.kind is errors.EMPTY_KEY
    assert m.kv.range(R(b"")).count == 0
    assert m.kv.range(R(b"", b"\x00")).count == 1
    assert m.kv.range(R(b"", b"b")).count == 1
    assert apply(D(b"")).deleted == 0
    C = pb.Compare
    resp = apply(pb.TxnRequest(compare=[C(key=b"", target=C.VERSION, result=C.EQUAL)]))
    assert resp.succeeded
    assert m.store.current_revision == 2


def test_read_only_txn_without_batch(m: Member, apply: Applier) -> None:
    apply(P(b"a", b"1"))
    apply(P(b"b", b"2"))
    C = pb.Compare
    req = pb.TxnRequest(
        compare=[C(key=b"a", target=C.VALUE, result=C.EQUAL, value=b"1")],
        success=[op(R(b"a", b"c")), op(pb.TxnRequest(success=[op(R(b"b", revision=2))]))],
        failure=[op(P(b"x"))],
    )
    got = m.kv.txn(None, req)
    assert got == apply(req)  # same answer as through the apply loop, no new revision
    assert got.header.revision == 3 and got.responses[0].response_range.count == 2
    with pytest.raises(errors.EtcdError) as exc:
        m.kv.txn(None, pb.TxnRequest(success=[op(R(b"a", revision=9))]))
    assert exc.value.kind is errors.FUTURE_REV
    with pytest.raises(ValueError):
        m.kv.txn(None, pb.TxnRequest(success=[op(D(b"a"))]))


def test_incremental_compaction(tmp_path: Path) -> None:
    """Physical compaction spread over batches (and a restart) reads, hashes
    and ends up exactly like one done at once."""
    slow, fast = Member(str(tmp_path / "slow")), Member(str(tmp_path / "fast"))
    try:
        log: list[tuple[int, Any]] = []
        for i in range(60):
            log.append((len(log) + 1, P(b"k%d" % (i % 7), b"%d" % i)))
            if i % 9 == 0:
                log.append((len(log) + 1, D(b"k%d" % (i % 5))))
        log.append((len(log) + 1, P(LONG + b"x", b"long")))
        log.append((len(log) + 1, D(LONG + b"x")))
        for member in (slow, fast):
            member.apply(log)
        at = slow.store.current_revision - 3
        fast.apply([(len(log) + 1, pb.CompactionRequest(revision=at))])
        with slow.backend.begin_write() as batch:
            slow.store.compact(batch, at, budget=2)
            batch.set_consistent_index(len(log) + 1, 1)
        assert slow.store.compaction_left_in_batch and not slow.store.physically_compacted
        assert slow.store.compact_revision == at
        assert slow.kv_records() != fast.kv_records()

        def same_reads() -> None:
            assert slow.store.hash_kv() == fast.store.hash_kv()
            for rev in range(at, slow.store.current_revision + 1):
                req = R(b"\x00", b"\x00", revision=rev)
                assert slow.kv.range(req) == fast.kv.range(req)
            with pytest.raises(errors.EtcdError) as exc:
                slow.kv.range(R(b"k1", revision=at - 1))
            assert exc.value.kind is errors.COMPACTED

        same_reads()
        with slow.backend.begin_write() as batch:
            assert not slow.store.compact_step(batch, 2)
        slow.reopen()  # the work left survives a restart
        assert slow.store.compaction_left_in_batch
        same_reads()
        steps = 0
        while not slow.store.physically_compacted:
            with slow.backend.begin_write() as batch:
                slow.store.compact_step(batch, 2)
            steps += 1
        assert steps > 1
        same_reads()
        assert slow.kv_records() == fast.kv_records()
        assert slow.backend.hash() == fast.backend.hash()
        with slow.backend.read() as a, fast.backend.read() as b:
            assert dict(a.cursor(slow.store._longkeys)) == dict(b.cursor(fast.store._longkeys))
            assert dict(a.cursor(slow.store._index)) == dict(b.cursor(fast.store._index))
    finally:
        slow.close()
        fast.close()


def _written_bytes() -> int:
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("write_bytes"))


def test_compaction_writes_a_long_history_back_into_its_leaf(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A key with more index entries than its leaf node holds has a sub-database of its
    own, which LMDB keeps when compaction leaves a few entries: every later put to it
    dirties a page of its own. Puts move a key's older entries to the history database
    before that (test_hot_key_history), but a file written before they did has such keys.
    Compaction writes their entries anew (the same bytes: index, records, hashes and
    reads as without), and a commit of one put per key then writes far fewer pages than
    the store that kept the sub-databases."""
    from petcd.mvcc import compaction, write

    keys = [b"hot/%04d" % i for i in range(300)] + [LONG + b"x"]
    log: list[tuple[int, Any]] = []
    for h in range(50):
        log += [(len(log) + 1, P(k, b"v%d" % h)) for k in keys]
    log.append((len(log) + 1, D(b"hot/0007")))  # (a deleted one goes altogether)
    new, old = Member(str(tmp_path / "new")), Member(str(tmp_path / "old"))
    try:
        monkeypatch.setattr(write, "INLINE_MAX", 1 << 30)  # (all in the index, as before)
        for member in (new, old):
            member.apply(log)
        monkeypatch.undo()
        at = new.store.current_revision - 5
        new.apply([(len(log) + 1, pb.CompactionRequest(revision=at, physical=True))])
        monkeypatch.setattr(compaction, "REWRITE_KEPT", -1)  # (the old way: no rewrite)
        old.apply([(len(log) + 1, pb.CompactionRequest(revision=at, physical=True))])
        monkeypatch.undo()
        assert new.store.physically_compacted and old.store.physically_compacted

        def index(member: Member) -> list[tuple[bytes, bytes]]:
            with member.backend.read() as txn:
                return list(txn.cursor(member.store._index).iternext())

        # (each key's newest entry <= at; 4 keys' last puts and hot/0007's deletion are above)
        assert index(new) == index(old) and len(index(new)) == 301 + 4 + 1
        assert new.kv_records() == old.kv_records()
        assert new.store.hash_kv() == old.store.hash_kv()
        for rev in (at, at + 3, new.store.current_revision):
            req = R(b"\x00", b"\x00", revision=rev)
            assert new.kv.range(req) == old.kv.range(req)

        written = {}
        for name, member in (("new", new), ("old", old)):
            before = _written_bytes()
            member.apply([(len(log) + 2, pb.TxnRequest(
                success=[pb.RequestOp(request_put=P(k, b"again")) for k in keys]))])
            written[name] = _written_bytes() - before
        if not written["old"]:
            pytest.skip("no write accounting for this file system (tmpfs)")
        assert written["new"] * 3 < written["old"], written
        assert index(new) == index(old)
    finally:
        new.close()
        old.close()
