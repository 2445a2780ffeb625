"""Alarms and the quota on the apply path, on a real backend (in process): which requests
NOSPACE and CORRUPT refuse (etcd's capped and corrupt appliers), persistence, and the
quota's charge-after-apply rule."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from petcd import errors
from petcd.mvcc.backend import Backend
from petcd.mvcc.kvstore import KVStore
from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.server import proposal as P
from petcd.server.alarm import (
    ALARM,
    KV_OVERHEAD,
    Alarms,
    alarm_text,
    cost_put,
    cost_txn,
    txn_upper_bound,
)
from petcd.server.apply import Applier
from petcd.server.kv_requests import KVRequests
from petcd.server.proposal import Committed

MEMBER = 0x8E9E05C52164694D


class Member:
    """A backend, store and applier with alarms installed, applying one entry at a time."""

    def __init__(self, path: Path, quota: int = 0) -> None:
        self.path = path
        self.quota = quota
        self.exceeded = 0
        self._open()

    def _open(self) -> None:
        self.backend = Backend(str(self.path / "db"))
        self.store = KVStore(self.backend)
        self.applier = Applier(self.backend, KVRequests(self.store))
        self.alarms = Alarms(self.backend, self.applier, self.quota, self._on_exceeded)
        self.index = self.applier.applied_index

    def _on_exceeded(self) -> None:
        self.exceeded += 1

    def reopen(self) -> None:
        self.backend.close()
        self._open()

    def apply(self, kind: str, req: Any) -> Any:
        self.index += 1
        [result] = self.applier.apply([Committed(self.index, 1, kind, req)])
        return result

    def alarm(self, action: int, alarm: int = rpc.NONE, member: int = MEMBER) -> Any:
        return self.apply(ALARM, rpc.AlarmRequest(action=action, memberID=member,  # type: ignore[arg-type]
                                                  alarm=alarm))  # type: ignore[arg-type]

    def put(self, key: bytes, value: bytes = b"v") -> Any:
        return self.apply(P.PUT, rpc.PutRequest(key=key, value=value))


@pytest.fixture
def member(tmp_path: Path) -> Iterator[Member]:
    m = Member(tmp_path)
    yield m
    m.backend.close()


def txn(*ops: rpc.RequestOp, failure: tuple[rpc.RequestOp, ...] = ()) -> rpc.TxnRequest:
    return rpc.TxnRequest(success=list(ops), failure=list(failure))


def op_put(key: bytes, value: bytes = b"v") -> rpc.RequestOp:
    return rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=value))


def op_del(key: bytes) -> rpc.RequestOp:
    return rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=key))


def op_get(key: bytes) -> rpc.RequestOp:
    return rpc.RequestOp(request_range=rpc.RangeRequest(key=key))


GET, ACTIVATE, DEACTIVATE = (rpc.AlarmRequest.GET, rpc.AlarmRequest.ACTIVATE,
                             rpc.AlarmRequest.DEACTIVATE)


def test_nospace_refuses_growth_and_allows_cleanup(member: Member) -> None:
    member.put(b"a")
    member.put(b"b")
    resp = member.alarm(ACTIVATE, rpc.NOSPACE)
    assert list(resp.alarms) == [rpc.AlarmMember(memberID=MEMBER, alarm=rpc.NOSPACE)]
    rev = member.store.current_revision
    assert member.put(b"c").kind is errors.NO_SPACE
    assert member.apply(P.TXN, txn(op_put(b"c"))).kind is errors.NO_SPACE
    # Either branch counts, as in etcd, whichever one would run.
    assert member.apply(P.TXN, txn(op_get(b"a"), failure=(op_put(b"c"),))).kind is errors.NO_SPACE
    assert member.store.current_revision == rev  # refused with no effect
    assert member.apply(P.TXN, txn(op_del(b"a"), op_get(b"b"))).succeeded
    assert member.apply(P.DELETE_RANGE, rpc.DeleteRangeRequest(key=b"b")).deleted == 1
    assert member.apply(P.COMPACTION, rpc.CompactionRequest(revision=member.store.
                                                            current_revision))
    assert member.exceeded == 0
    assert list(member.alarm(DEACTIVATE, rpc.NOSPACE).alarms) == [
        rpc.AlarmMember(memberID=MEMBER, alarm=rpc.NOSPACE)]
    assert member.put(b"c").header.revision == member.store.current_revision


def test_corrupt_refuses_every_write(member: Member) -> None:
    member.put(b"a")
    member.alarm(ACTIVATE, rpc.NOSPACE)
    member.alarm(ACTIVATE, rpc.CORRUPT, member=7)
    assert member.put(b"b").kind is errors.CORRUPT  # CORRUPT wins over NOSPACE
    assert member.apply(P.TXN, txn(op_del(b"a"))).kind is errors.CORRUPT
    assert member.apply(P.DELETE_RANGE, rpc.DeleteRangeRequest(key=b"a")).kind is errors.CORRUPT
    assert member.apply(P.COMPACTION, rpc.CompactionRequest(revision=1)).kind is errors.CORRUPT
    member.alarm(DEACTIVATE, rpc.CORRUPT, member=7)
    assert member.put(b"b").kind is errors.NO_SPACE
    assert member.apply(P.DELETE_RANGE, rpc.DeleteRangeRequest(key=b"a")).deleted == 1


def test_alarm_get_activate_deactivate(member: Member) -> None:
    assert list(member.alarm(GET).alarms) == []
    member.alarm(ACTIVATE, rpc.NOSPACE, member=2)
    member.alarm(ACTIVATE, rpc.NOSPACE, member=1)
    member.alarm(ACTIVATE, rpc.NOSPACE, member=1)  # once per (member, type)
    member.alarm(ACTIVATE, rpc.CORRUPT, member=3)
    assert [(m.memberID, m.alarm) for m in member.alarm(GET).alarms] == [
        (1, rpc.NOSPACE), (2, rpc.NOSPACE), (3, rpc.CORRUPT)]
    assert [m.memberID for m in member.alarm(GET, rpc.CORRUPT).alarms] == [3]
    assert list(member.alarm(DEACTIVATE, rpc.CORRUPT, member=9).alarms) == []
    member.alarm(DEACTIVATE, rpc.NOSPACE, member=1)
    assert member.alarms.nospace  # member 2's is still active
    member.alarm(DEACTIVATE, rpc.NOSPACE, member=2)
    assert not member.alarms.nospace
    assert member.alarm(GET).header.revision == 0  # etcd sends no header


def test_alarms_survive_reopen_and_defragment(member: Member) -> None:
    member.alarm(ACTIVATE, rpc.NOSPACE)
    member.reopen()
    assert member.put(b"x").kind is errors.NO_SPACE
    assert [alarm_text(m) for m in member.alarms.store.active] == [
        f"memberID:{MEMBER} alarm:NOSPACE "]
    member.backend.defragment()
    member.alarm(DEACTIVATE, rpc.NOSPACE)  # the alarm DB handle was renewed
    member.reopen()
    assert not member.alarms.nospace
    assert not isinstance(member.put(b"x"), errors.EtcdError)


def test_quota_on_apply_path_applies_then_answers_nospace(tmp_path: Path) -> None:
    m = Member(tmp_path)
    size = m.backend.size()
    m.backend.close()
    m = Member(tmp_path, quota=size + 10_000)
    assert m.put(b"small").header.revision == 2
    rev = m.store.current_revision
    assert m.put(b"big", b"x" * 20_000).kind is errors.NO_SPACE
    assert m.store.current_revision == rev + 1  # etcd applies it, then answers NOSPACE
    assert m.exceeded == 1
    assert m.apply(P.TXN, txn(op_put(b"t", b"y" * 20_000))).kind is errors.NO_SPACE
    assert m.exceeded == 2
    m.alarm(ACTIVATE, rpc.NOSPACE)
    assert m.put(b"more").kind is errors.NO_SPACE
    assert m.exceeded == 2  # refused before the quota is consulted: no new alarm
    assert m.apply(P.TXN, txn(op_get(b"t"))).succeeded  # costs nothing
    m.backend.close()


def test_put_gate_fast_check_has_etcds_boundary(member: Member) -> None:
    """The Put gate's one comparison (cost < Quota.headroom) is etcd's size + cost < quota:
    a put that exactly reaches the quota is applied, then answered NOSPACE."""
    q = member.alarms.quota
    for cost, fits in ((999, True), (1000, False)):
        q.limit = q.size + 1000
        q.refresh()
        value = b"x" * (cost - KV_OVERHEAD - 1)  # (key b"k")
        result = member.put(b"k", value)
        assert not isinstance(result, errors.EtcdError) if fits else \
            result.kind is errors.NO_SPACE
    assert member.exceeded == 1
    q.limit = None
    q.refresh()
    assert q.headroom == float("inf") and not isinstance(member.put(b"k", b"y" * 50_000),
                                                         errors.EtcdError)


def test_negative_quota_disables_it(tmp_path: Path) -> None:
    m = Member(tmp_path, quota=-1)
    assert m.alarms.quota.available(1 << 40)
    assert m.put(b"k", b"v" * 100_000).header.revision == 2
    m.backend.close()
    m = Member(tmp_path, quota=0)
    assert m.alarms.quota.limit == 2 << 30
    m.backend.close()


def test_handlers_registered_later_are_gated(member: Member) -> None:
    """The lease layer registers lease_grant after the alarms: it is gated all the same."""
    granted: list[int] = []

    def grant(batch: object, req: rpc.LeaseGrantRequest) -> rpc.LeaseGrantResponse:
        granted.append(req.ID)
        return rpc.LeaseGrantResponse(ID=req.ID, TTL=req.TTL)

    member.applier.register("lease_grant", grant)
    assert member.apply("lease_grant", rpc.LeaseGrantRequest(ID=1, TTL=5)).ID == 1
    member.alarm(ACTIVATE, rpc.NOSPACE)
    assert member.apply("lease_grant", rpc.LeaseGrantRequest(ID=2, TTL=5)).kind is errors.NO_SPACE
    assert granted == [1]


def test_costs() -> None:
    put = rpc.PutRequest(key=b"key", value=b"value")
    assert cost_put(put) == KV_OVERHEAD + 8
    t = txn(op_put(b"a", b"1"), op_del(b"b"), failure=(op_put(b"ccc", b"22"), op_put(b"d")))
    assert cost_txn(t) == max(KV_OVERHEAD + 2, 2 * KV_OVERHEAD + 5 + 2)
    nested = rpc.RequestOp(request_txn=txn(op_put(b"n")))
    assert cost_txn(txn(nested)) == 0  # etcd counts top-level puts only
    assert alarm_text(rpc.AlarmMember(memberID=5, alarm=rpc.CORRUPT)) == \
        "memberID:5 alarm:CORRUPT "


keys = st.binary(min_size=0, max_size=8)
puts = st.builds(op_put, keys, keys)
ops = st.lists(st.one_of(puts, st.builds(op_del, keys), st.builds(op_get, keys)), max_size=20)


@settings(max_examples=200, deadline=None)
@given(ops, ops)
def test_txn_upper_bound_holds(success: list[rpc.RequestOp],
                               failure: list[rpc.RequestOp]) -> None:
    """The request path skips parsing when even this bound fits: it must never be low."""
    req = rpc.TxnRequest(success=success, failure=failure)
    assert cost_txn(req) <= txn_upper_bound(len(req.SerializeToString()))
