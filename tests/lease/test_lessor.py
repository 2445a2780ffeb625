"""The lessor and the lease apply handlers on a real LMDB backend: grant/revoke
semantics and errors as etcd's, attachments kept consistent with the KV store,
revocation deleting every key in one revision with delete events, persistence across
reopen, and the leader-local expiry heap stepped with a settable clock."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from petcd import errors
from petcd.lease.ids import LeaseIdGenerator
from petcd.lease.lessor import EXPIRED, MAX_LEASE_TTL, NOT_FOUND, NOT_PRIMARY, min_lease_ttl
from petcd.mvcc.types import EVENT_DELETE, EVENT_PUT
from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.pb.mvccpb.kv_pb2 import KeyValue

from .harness import ApplyHarness


@pytest.fixture
def h(tmp_path: Path) -> Iterator[ApplyHarness]:
    harness = ApplyHarness(tmp_path / "db")
    yield harness
    harness.close()


def test_min_ttl_as_etcd_derives_it() -> None:
    assert min_lease_ttl(100, 1000) == 2  # etcd's defaults: 15 ticks of 100 ms, rounded up
    assert min_lease_ttl(100, 500) == 1
    assert min_lease_ttl(50, 2000) == 3
    assert min_lease_ttl(100, 3000) == 5  # 45 ticks = 4.5 s


def test_grant_results_and_errors(h: ApplyHarness) -> None:
    resp = h.grant(7, 1)
    assert (resp.ID, resp.TTL, resp.header.revision) == (7, 2, 1)  # raised to the minimum
    assert h.grant(8, -5).TTL == 2
    assert h.grant(9, MAX_LEASE_TTL).TTL == MAX_LEASE_TTL
    assert h.grant(10, MAX_LEASE_TTL + 1).kind is errors.LEASE_TTL_TOO_LARGE
    assert h.grant(7, 30).kind is errors.LEASE_EXIST
    assert h.grant(0, 30).kind is errors.LEASE_NOT_FOUND
    assert h.grant(-3, 20).ID == -3  # etcd accepts negative client-chosen IDs
    assert sorted(le.id for le in h.lessor.leases()) == [-3, 7, 8, 9]
    assert h.revoke(12345).kind is errors.LEASE_NOT_FOUND
    assert h.revoke(0).kind is errors.LEASE_NOT_FOUND


def test_put_attaches_moves_and_detaches(h: ApplyHarness) -> None:
    h.grant(1, 60)
    h.grant(2, 60)
    assert h.put(b"a", lease=99).kind is errors.LEASE_NOT_FOUND
    h.put(b"a", lease=1)
    h.put(b"b", lease=1)
    assert h.lessor.keys_of(h.lessor.get(1)) == [b"a", b"b"]  # type: ignore[arg-type]
    h.put(b"a", lease=2)  # moved
    h.put(b"b")  # detached
    assert h.lessor.keys_of(h.lessor.get(1)) == []  # type: ignore[arg-type]
    assert h.lessor.keys_of(h.lessor.get(2)) == [b"a"]  # type: ignore[arg-type]
    h.put(b"a", b"new", ignore_lease=True)  # keeps lease 2
    assert h.lessor.keys_of(h.lessor.get(2)) == [b"a"]  # type: ignore[arg-type]
    h.one("delete_range", rpc.DeleteRangeRequest(key=b"a"))
    assert h.lessor.keys_of(h.lessor.get(2)) == []  # type: ignore[arg-type]


def test_txn_put_with_missing_lease_fails_whole_txn(h: ApplyHarness) -> None:
    h.grant(1, 60)
    txn = rpc.TxnRequest(success=[
        rpc.RequestOp(request_put=rpc.PutRequest(key=b"x", lease=1)),
        rpc.RequestOp(request_put=rpc.PutRequest(key=b"y", lease=404))])
    assert h.one("txn", txn).kind is errors.LEASE_NOT_FOUND
    assert h.keys() == [] and h.lessor.keys_of(h.lessor.get(1)) == []  # type: ignore[arg-type]
    # The branch not taken may name a missing lease (etcd checks only what runs).
    ok = rpc.TxnRequest(failure=[rpc.RequestOp(request_put=rpc.PutRequest(key=b"x", lease=404))])
    assert h.one("txn", ok).succeeded


def test_revoke_deletes_keys_in_one_revision_with_events(h: ApplyHarness) -> None:
    h.grant(1, 60)
    for k in (b"k3", b"k1", b"k2"):
        h.put(k, lease=1)
    h.put(b"other")
    h.events.clear()
    resp = h.revoke(1)
    assert resp.header.revision == 6  # 1 + 4 puts + one revision for the revocation
    assert h.keys() == [b"other"]
    assert [(e.type, e.key, e.revision) for e in h.events] == [
        (EVENT_DELETE, b"k1", 6), (EVENT_DELETE, b"k2", 6), (EVENT_DELETE, b"k3", 6)]
    assert all(KeyValue.FromString(e.prev_kv).lease == 1 for e in h.events if e.prev_kv)
    assert h.lessor.get(1) is None and not h.lessor.lease_exists(1)
    # No keys: no new revision.
    h.grant(2, 60)
    assert h.revoke(2).header.revision == 6
    assert h.store.current_revision == 6


def test_grant_then_put_then_revoke_in_one_batch(h: ApplyHarness) -> None:
    results = h.apply(
        ("lease_grant", rpc.LeaseGrantRequest(ID=5, TTL=10)),
        ("put", rpc.PutRequest(key=b"a", value=b"1", lease=5)),
        ("lease_revoke", rpc.LeaseRevokeRequest(ID=5)),
        ("put", rpc.PutRequest(key=b"b", value=b"1", lease=5)))
    assert results[0].ID == 5 and results[2].header.revision == 3
    assert results[3].kind is errors.LEASE_NOT_FOUND
    assert h.keys() == [] and [e.type for e in h.events] == [EVENT_PUT, EVENT_DELETE]


def test_leases_and_keys_survive_reopen(tmp_path: Path) -> None:
    h = ApplyHarness(tmp_path / "db")
    h.grant(1, 30)
    h.grant(-9, 40)
    h.grant(2, 50)
    h.put(b"a", lease=1)
    h.put(b"b" * 600, lease=1)  # a long key (stored through the long-key index)
    h.put(b"c", lease=-9)
    h.revoke(2)
    h.close()
    h = ApplyHarness(tmp_path / "db", min_ttl=35)  # a larger minimum applies on recovery
    try:
        got = {le.id: (le.ttl, h.lessor.keys_of(le)) for le in h.lessor.leases()}
        assert got == {1: (35, [b"a", b"b" * 600]), -9: (40, [b"c"])}
        assert h.revoke(1).header.revision == h.store.current_revision
        assert h.keys() == [b"c"]
    finally:
        h.close()


def test_expiry_only_on_the_primary(h: ApplyHarness) -> None:
    clock = h.clock
    h.grant(1, 10)
    lessor = h.lessor
    assert lessor.renew(1) == NOT_PRIMARY
    clock.now += 1000
    assert lessor.expired(100) == []  # a follower never expires anything
    lessor.promote(extend=1.0)
    assert lessor.get(1).expiry == clock.now + 11  # type: ignore[union-attr]
    clock.now += 10.5
    assert lessor.expired(100) == []
    assert lessor.renew(1) == 10  # renewal: now + TTL
    clock.now += 9.9
    assert lessor.expired(100) == []
    clock.now += 0.2
    assert [le.id for le in lessor.expired(100)] == [1]
    assert lessor.renew(1) == EXPIRED  # past expiry: not renewable, revocation pending
    assert lessor.expired(100) == []  # reported once, then again after the retry delay
    clock.now += 3.1
    assert [le.id for le in lessor.expired(100)] == [1]
    h.revoke(1)
    assert lessor.renew(1) == NOT_FOUND
    clock.now += 10
    assert lessor.expired(100) == []
    lessor.demote()
    assert lessor.renew(1) == NOT_PRIMARY


def test_expired_respects_limit_and_order(h: ApplyHarness) -> None:
    h.lessor.promote(0.0)
    for i in range(1, 11):
        h.grant(i, 10 + i)
    h.clock.now += 100
    first = [le.id for le in h.lessor.expired(4)]
    assert first == [1, 2, 3, 4]
    assert [le.id for le in h.lessor.expired(100)] == [5, 6, 7, 8, 9, 10]


def test_regranted_id_gets_one_heap_entry(h: ApplyHarness) -> None:
    h.lessor.promote(0.0)
    h.grant(1, 5)
    h.revoke(1)
    h.grant(1, 20)
    h.clock.now += 6
    assert h.lessor.expired(10) == []
    h.clock.now += 15
    assert [le.id for le in h.lessor.expired(10)] == [1]


def test_revoked_leases_leave_the_heap(h: ApplyHarness) -> None:
    # Revoked long leases must not stay in the expiry heap until their old expiry: once
    # they are most of it, it is rebuilt without them; the others still expire on time.
    lessor = h.lessor
    lessor.promote(0.0)
    n = 3000
    h.apply(*[("lease_grant", rpc.LeaseGrantRequest(ID=i, TTL=600 + i)) for i in range(1, n + 1)])
    h.apply(*[("lease_revoke", rpc.LeaseRevokeRequest(ID=i)) for i in range(1, n - 99)])
    assert len(lessor) == 100
    assert len(lessor._heap) <= 100 + 1024 + 1  # (the memory at stake)
    h.clock.now += 600 + n - 99  # the first left: ID n - 99, TTL 600 + n - 99
    assert [le.id for le in lessor.expired(1000)] == [n - 99]
    h.revoke(n - 99)  # (as the driver proposes it)
    h.clock.now += 99
    assert [le.id for le in lessor.expired(1000)] == list(range(n - 98, n + 1))


def test_promotion_spreads_a_pile_up(h: ApplyHarness) -> None:
    n = 2000
    h.apply(*[("lease_grant", rpc.LeaseGrantRequest(ID=i, TTL=10)) for i in range(1, n + 1)])
    h.lessor.promote(0.0)
    expiries = sorted(le.expiry for le in h.lessor.leases())
    start = expiries[0]
    assert start == h.clock.now + 10
    # At most ~750 leases expire in any one second of the pile-up.
    for second in range(4):
        lo, hi = start + second, start + second + 1
        assert sum(1 for e in expiries if lo <= e < hi) <= 751
    assert expiries[-1] < start + 3  # and it drains at that rate, no slower


def test_checkpoint_restarts_from_remaining_ttl(tmp_path: Path) -> None:
    h = ApplyHarness(tmp_path / "db", persist_checkpoints=True)
    h.grant(1, 600)
    cp = rpc.LeaseCheckpointRequest(checkpoints=[rpc.LeaseCheckpoint(ID=1, remaining_TTL=42),
                                                 rpc.LeaseCheckpoint(ID=99, remaining_TTL=5)])
    assert h.one("lease_checkpoint", cp).header.revision == 1
    h.lessor.promote(1.0)
    assert h.lessor.get(1).expiry == h.clock.now + 43  # type: ignore[union-attr]
    h.close()
    h = ApplyHarness(tmp_path / "db", persist_checkpoints=True)
    try:  # persisted
        assert h.lessor.get(1).remaining_ttl == 42  # type: ignore[union-attr]
    finally:
        h.close()
    h = ApplyHarness(tmp_path / "db2")
    try:  # not persisted without the flag: memory only
        h.grant(1, 600)
        h.one("lease_checkpoint", cp)
        assert h.lessor.get(1).remaining_ttl == 42  # type: ignore[union-attr]
        h.close()
        h = ApplyHarness(tmp_path / "db2")
        assert h.lessor.get(1).remaining_ttl == 0  # type: ignore[union-attr]
    finally:
        h.close()


def test_id_generator_positive_unique_member_prefixed() -> None:
    gen = LeaseIdGenerator(0xABCD_1234_5678_9EF0, now_ms=1_700_000_000_000)
    ids = [gen.next() for _ in range(5000)]
    assert len(set(ids)) == len(ids)
    assert all(0 < i < 2**63 for i in ids)
    assert all(i >> 48 == 0x1EF0 for i in ids)  # member ID low 16 bits, top bit cleared
    other = LeaseIdGenerator(0x1111, now_ms=1_700_000_000_000)
    assert not set(ids) & {other.next() for _ in range(5000)}
    later = LeaseIdGenerator(0xABCD_1234_5678_9EF0, now_ms=1_700_000_000_000 + 100)
    assert later.next() > ids[0]
