"""Lease, Cluster and Maintenance calls through both flavours, against petcd and etcd."""

from __future__ import annotations

import io
import threading
import time

import pytest

from petcd.client import Client
from petcd.client.errors import (
    ConnectionFailedError,
    EtcdError,
    LeaseExpiredError,
    LeaseNotFoundError,
    MemberNotFoundError,
    NoSpaceError,
    PreconditionError,
)
from petcd.client.types import AlarmType
from petcd.testing import MemberProcess, free_port

from .conftest import Connect


def test_lease_calls(backend: MemberProcess, connect: Connect, pfx: str) -> None:
    c = connect(backend.address)
    g = c.lease_grant(30)
    assert g.ttl == 30 and g.id > 0
    fixed = c.lease_grant(30, 0x1234_5678_9A).id
    assert fixed == 0x1234_5678_9A
    c.put(pfx + "l", "v", lease=g.id)
    ttl = c.lease_time_to_live(g.id, keys=True)
    assert ttl.granted_ttl == 30 and 0 < ttl.ttl <= 30 and ttl.keys == [(pfx + "l").encode()]
    assert {g.id, fixed} <= set(c.leases())
    ka = c.lease_keepalive_once(g.id)
    assert ka.id == g.id and ka.ttl == 30
    c.lease_revoke(g.id)
    assert c.get(pfx + "l").kvs == []
    assert c.lease_time_to_live(g.id).ttl == -1
    with pytest.raises(LeaseNotFoundError):
        c.lease_revoke(g.id)
    assert c.lease_keepalive_once(g.id).ttl <= 0
    c.lease_revoke(fixed)


def test_background_keepalive_and_loss(backend: MemberProcess, connect: Connect,
                                       pfx: str) -> None:
    c = connect(backend.address)
    g = c.lease_grant(2)
    lost: list[EtcdError] = []
    ka = c.keep_alive(g.id, on_lost=lost.append)
    c.put(pfx + "k", "v", lease=g.id)
    time.sleep(3.5)  # beyond the TTL: only the keep-alive keeps the key
    assert c.get(pfx + "k").value == b"v"
    c.lease_revoke(g.id)
    err = ka.wait_lost(10)
    assert isinstance(err, (LeaseExpiredError, LeaseNotFoundError)), err
    assert lost == [err]
    ka.stop()


def test_cluster_and_maintenance(backend: MemberProcess, connect: Connect) -> None:
    c = connect(backend.address)
    ml = c.member_list()
    assert len(ml.members) == 1 and ml.members[0].client_urls == [backend.endpoint]
    st = c.status()
    assert st.leader == ml.members[0].id and st.raft_index > 0 and st.db_size > 0
    assert st.version.startswith("3.")
    assert c.hash_kv().hash == c.hash_kv().hash
    assert isinstance(c.hash(), int)
    assert c.alarm_list() == []
    assert c.alarm_disarm() == []
    added = c.member_add([f"http://127.0.0.1:{free_port()}"], learner=True)
    assert added.member.is_learner and len(added.members) == 2
    new_url = f"http://127.0.0.1:{free_port()}"
    updated = c.member_update(added.member.id, [new_url]).members
    assert [m.peer_urls for m in updated if m.id == added.member.id] == [[new_url]]
    with pytest.raises(PreconditionError) as e:  # never started: not in sync
        c.member_promote(added.member.id)
    assert "learner" in e.value.message
    assert len(c.member_remove(added.member.id).members) == 1
    with pytest.raises(MemberNotFoundError):
        c.member_remove(added.member.id)
    with pytest.raises(MemberNotFoundError):
        c.member_update(added.member.id, ["http://127.0.0.1:1"])
    assert len(c.member_list(linearizable=True).members) == 1


def test_alarms(backend: MemberProcess, connect: Connect, pfx: str) -> None:
    c = connect(backend.address)
    me = c.status().header.member_id
    (alarm,) = c.alarm_activate(me, AlarmType.NOSPACE)
    assert (alarm.member_id, alarm.alarm) == (me, AlarmType.NOSPACE)
    try:
        assert c.alarm_list() == [alarm]
        with pytest.raises(NoSpaceError):
            c.put(pfx + "k", "v")
    finally:
        c.alarm_disarm(me, AlarmType.NOSPACE)
    assert c.alarm_list() == []
    c.put(pfx + "k", "v")


def test_defragment_and_snapshot(backend: MemberProcess, connect: Connect) -> None:
    c = connect(backend.address)
    c.defragment()
    buf = io.BytesIO()
    assert c.snapshot(buf) == len(buf.getvalue()) > 0
    assert c.status().db_size > 0
    # membership changes still work after the backend file was swapped (petcd kept a
    # stale LMDB handle here once, and its apply loop died on the next member add)
    added = c.member_add([f"http://127.0.0.1:{free_port()}"], learner=True)
    assert len(c.member_remove(added.member.id).members) == 1


def test_unreachable_endpoints() -> None:
    port = free_port()
    t0 = time.monotonic()
    with Client(f"127.0.0.1:{port}", dial_timeout=0.5, timeout=2) as c, \
            pytest.raises(ConnectionFailedError):
        c.get("k")
    assert time.monotonic() - t0 < 10


def test_no_threads_left(backend: MemberProcess) -> None:
    before = set(threading.enumerate())
    c = Client(backend.address)
    w = c.watch("threads/", prefix=True)
    c.add_watch_callback("threads/", lambda _: None, prefix=True)
    ka = c.keep_alive(c.lease_grant(5).id)
    c.put("threads/x", "1")
    assert next(iter(w)).events
    assert ka.wait_lost(0.2) is None
    c.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        extra = [t for t in set(threading.enumerate()) - before if t.is_alive()]
        if not extra:
            break
        time.sleep(0.05)
    assert not extra, extra
