"""Failover on 3-member clusters of petcd and of etcd 3.4: the member a client (and its
watch) is connected to is killed mid-stream; calls go on elsewhere, and the watch resumes
on another member with no gap and no duplicate, checked against the store's history."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from petcd.client import Client, Event
from petcd.client.errors import EtcdError

from .conftest import BACKENDS, Connect


def _writer(endpoints: list[str], prefix: str, stop: threading.Event) -> threading.Thread:
    def run() -> None:
        with Client(endpoints, timeout=5) as w:
            i = 0
            while not stop.is_set():
                try:
                    w.put(f"{prefix}{i:05d}", str(i))
                    i += 1
                except EtcdError:
                    time.sleep(0.05)  # an election: the write's fate is unknown, go on
    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th


def _roles(members: list[Any]) -> tuple[Any, Any, Any]:
    """(leader, follower, other follower)."""
    with Client(members[0].address) as probe:
        leader_id = probe.status().leader
        ids = {m.id: m for m in probe.member_list().members}
    leader = next(m for m in members if m.address in ids[leader_id].client_urls[0])
    follower, other = (m for m in members if m is not leader)
    return leader, follower, other


def _collect_until(w: Any, key: bytes, out: list[Event], deadline: float) -> None:
    for batch in w:
        out.extend(batch.events)
        if any(e.kv.key == key for e in batch.events):
            return
        assert time.monotonic() < deadline, "watch stalled"


def _triples(events: list[Event]) -> list[tuple[bytes, int, bytes]]:
    return [(e.kv.key, e.kv.mod_revision, e.kv.value) for e in events]


@pytest.mark.parametrize("victim", ["follower", pytest.param("leader", marks=pytest.mark.slow)])
@pytest.mark.parametrize("kind", BACKENDS)
def test_watch_and_calls_survive_member_kill(kind: str, victim: str, members_factory: Any,
                                             connect: Connect) -> None:
    members = members_factory(kind, 3)
    leader, follower, other = _roles(members)
    if victim == "leader":  # the watcher's member is the leader: an election follows
        leader, follower = follower, leader
    prefix = "fo/"
    # The watcher starts on the victim; the writer never uses it, so writes go on
    # while the watcher is cut off.
    c = connect([follower.address, leader.address, other.address], timeout=20)
    lease = c.lease_grant(2).id
    ka = c.keep_alive(lease)  # refreshed through the same (soon dead) member
    c.put("ka/key", "v", lease=lease)
    start = c.put(prefix + "start", "").header.revision
    w = c.watch(prefix, prefix=True)
    w2 = c.watch(prefix, prefix=True, prev_kv=True)  # shares w's stream: both resume
    connected = follower
    assert c.endpoint == follower.address

    stop = threading.Event()
    writer = _writer([leader.address, other.address], prefix + "k", stop)
    seen: list[Event] = []
    deadline = time.monotonic() + 60
    try:
        for batch in w:
            seen.extend(batch.events)
            if len(seen) >= 30:
                break
        connected.kill()  # mid-stream: the writer keeps going on the others
        killed_at = time.monotonic()
        time.sleep(0.5)  # events committed meanwhile must not be lost
        for batch in w:
            seen.extend(batch.events)
            if len(seen) >= 80:
                break
            assert time.monotonic() < deadline, "watch stalled after the kill"
    finally:
        stop.set()
        writer.join()
    assert w.reconnects >= 1
    # Unary calls moved on too: a read and a write through the same client.
    end = c.put(prefix + "end", "").header.revision
    assert c.get(prefix + "end").kvs[0].mod_revision == end
    assert c.endpoint != connected.address
    _collect_until(w, (prefix + "end").encode(), seen, time.monotonic() + 60)
    w.close()
    seen2: list[Event] = []
    _collect_until(w2, (prefix + "end").encode(), seen2, time.monotonic() + 60)
    assert w2.reconnects >= 1
    w2.close()

    # The keep-alive moved to another member too: the lease outlived its 2 s TTL.
    time.sleep(max(0.0, killed_at + 3 - time.monotonic()))
    assert ka.lost is None and c.get("ka/key").value == b"v"
    c.lease_revoke(lease)
    assert ka.wait_lost(10) is not None  # and it reports the loss

    # The store's history from a fresh watch on a survivor: the same events, in order.
    survivor = next(m for m in members if m.running)
    with Client(survivor.address) as fresh, \
            fresh.watch(prefix, prefix=True, start_revision=start + 1) as h:
        history: list[Event] = []
        _collect_until(h, (prefix + "end").encode(), history, time.monotonic() + 60)
    assert _triples(seen) == _triples(history)
    assert _triples(seen2) == _triples(history)
    revs = [e.kv.mod_revision for e in seen]
    assert revs == sorted(set(revs)) and len(revs) > 80


@pytest.mark.parametrize("kind", BACKENDS)
def test_write_retried_only_when_unsent(kind: str, members_factory: Any) -> None:
    """The first endpoint is dead before the call: the write goes to the next member
    (the connection failed, so nothing was sent); reads fail over too."""
    members = members_factory(kind, 3)
    members[0].kill()
    with Client([m.address for m in members], dial_timeout=1, timeout=20) as c:
        rev = c.put("retry/k", "v").header.revision
        assert c.get("retry/k").kvs[0].mod_revision == rev
        assert c.endpoint != members[0].address
        # MoveLeader: asked of the leader, names a running follower
        leader, follower, _ = _roles([m for m in members if m.running] + [members[0]])
        with Client(leader.address, timeout=20) as lc:
            target = next(m.id for m in lc.member_list().members
                          if follower.address in m.client_urls[0])
            lc.move_leader(target)
            deadline = time.monotonic() + 20
            while lc.status().leader != target:
                assert time.monotonic() < deadline
                time.sleep(0.1)


@pytest.mark.parametrize("kind", BACKENDS)
@pytest.mark.parametrize("settings", ["fast", "default"])
def test_watch_leaves_a_hung_member(kind: str, settings: str, members_factory: Any,
                                    connect: Connect) -> None:
    """SIGSTOP (no RST, no FIN): gRPC keepalive finds the member dead; the watch resumes
    on another one and reads move on too. "default": the client's default keepalive
    (10 s pings, 6 s to answer) against the servers' default enforcement, and a read
    with no deadline that was waiting on the hung member."""
    fast = settings == "fast"
    members = members_factory(kind, 3, ["--grpc-keepalive-min-time", "500ms"] if fast else [])
    leader, follower, other = _roles(members)
    ka: dict[str, Any] = {"keepalive_time": 1, "keepalive_timeout": 1} if fast else {}
    c = connect([follower.address, leader.address, other.address], timeout=20, **ka)
    reader = Client([follower.address, leader.address], timeout=None, **ka)
    w = c.watch("hung/", prefix=True)
    reader.get("hung/")  # connected to the follower
    follower.pause()
    try:
        got: list[Any] = []

        def read() -> None:
            try:
                got.append(reader.get("hung/", prefix=True))
            except Exception as e:  # (shown by the assertion below)
                got.append(e)
        th = threading.Thread(target=read)
        th.start()  # (no deadline: only keepalive can end the wait on the hung member)
        with Client([leader.address, other.address], timeout=20) as writer:
            rev = writer.put("hung/k", "v").header.revision
        t0 = time.monotonic()
        batch = next(iter(w))
        assert [e.kv.mod_revision for e in batch.events] == [rev]
        assert time.monotonic() - t0 < (30 if fast else 60)
        assert c.get("hung/k").value == b"v"
        assert c.endpoint != follower.address
        w.close()
        th.join(60)
        assert not th.is_alive()
        assert not isinstance(got[0], Exception), repr(got[0])
        assert reader.endpoint == leader.address
        assert got[0].header.revision >= rev
    finally:
        follower.resume()
        reader.close()
