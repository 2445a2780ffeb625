"""Three petcd members as separate processes: replication, reads on followers, failover,
a paused leader, leadership transfer, membership changes through etcdctl."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any, TypeVar

import grpc
import pytest

from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.pb.etcdserverpb import rpc_pb2_grpc as rpc_grpc
from petcd.testing import Etcdctl, PetcdCluster, PetcdProcess, have_etcd

from .conftest import FAST

pytestmark = pytest.mark.skipif(not have_etcd(), reason="etcd/etcdctl 3.4 not installed")

T = TypeVar("T")


def poll(fn: Callable[[], T | None], timeout: float = 20.0, what: str = "condition") -> T:
    """fn() until it returns something other than None/False, within a deadline."""
    deadline = time.monotonic() + timeout
    while True:
        out = fn()
        if out is not None and out is not False:
            return out
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def kv(m: PetcdProcess) -> tuple[grpc.Channel, Any]:
    ch = grpc.insecure_channel(m.address)
    return ch, rpc_grpc.KVStub(ch)


def get(m: PetcdProcess, key: bytes, *, serializable: bool = False) -> bytes | None:
    ch, stub = kv(m)
    with ch:
        resp = stub.Range(rpc.RangeRequest(key=key, serializable=serializable), timeout=10)
    return resp.kvs[0].value if resp.kvs else None


def put(m: PetcdProcess, key: bytes, value: bytes) -> rpc.PutResponse:
    ch, stub = kv(m)
    with ch:
        resp: rpc.PutResponse = stub.Put(rpc.PutRequest(key=key, value=value), timeout=10)
    return resp


def test_member_list_and_endpoint_status_show_the_cluster(healed: PetcdCluster) -> None:
    c = healed
    ctl = Etcdctl(c.endpoints)
    members = json.loads(ctl.ok("member", "list", "-w", "json"))["members"]
    assert sorted(m["name"] for m in members) == ["m0", "m1", "m2"]
    for m in members:
        proc = c.member(m["name"])
        assert m["peerURLs"] == [proc.peer_url] and m["clientURLs"] == [proc.endpoint]
        assert c.member_id(proc) == m["ID"] and not m.get("isLearner")
    table = ctl.ok("member", "list")
    assert table.count(", started, ") == 3
    statuses = json.loads(ctl.ok("endpoint", "status", "--cluster", "-w", "json"))
    assert len(statuses) == 3
    leaders = {s["Status"]["leader"] for s in statuses}
    terms = {s["Status"]["raftTerm"] for s in statuses}
    assert len(leaders) == 1 and len(terms) == 1
    leader_id = leaders.pop()
    assert sum(1 for s in statuses if s["Status"]["header"]["member_id"] == leader_id) == 1
    assert c.member_id(c.wait_leader()) == leader_id
    for s in statuses:
        assert s["Status"]["raftIndex"] >= s["Status"]["raftAppliedIndex"] > 0
        assert s["Status"]["header"]["raft_term"] == s["Status"]["raftTerm"]


def test_linearizable_reads_on_followers_see_acknowledged_writes(healed: PetcdCluster) -> None:
    c = healed
    leader = c.wait_leader()
    followers = c.followers(leader)
    for i in range(20):
        value = b"v%d" % i
        put(leader, b"lin/key", value)
        for f in followers:  # acknowledged by the leader: every linearizable read sees it
            assert get(f, b"lin/key") == value


def test_writes_through_a_follower_are_forwarded(healed: PetcdCluster) -> None:
    c = healed
    leader = c.wait_leader()
    f = c.followers(leader)[0]
    first = put(f, b"fwd/a", b"1")
    second = put(f, b"fwd/b", b"2")
    assert second.header.revision == first.header.revision + 1
    assert first.header.member_id == c.member_id(f)
    term = c.statuses([leader])[leader.name].term
    assert second.header.raft_term == term
    assert get(leader, b"fwd/a") == b"1" and get(leader, b"fwd/b") == b"2"


def test_killed_leader_is_replaced_and_catches_up_after_restart(healed: PetcdCluster) -> None:
    c = healed
    leader = c.wait_leader()
    old_id = c.member_id(leader)
    leader.kill()
    started = time.monotonic()
    new = c.wait_leader(exclude=[leader])
    took = time.monotonic() - started
    assert took < 5.0, f"a new leader took {took:.1f}s (election timeout 0.5s)"
    for i in range(200):
        put(new, b"failover/%03d" % i, b"x")
    leader.start()  # from its data dir: same identity, catches up on the log
    committed = c.statuses([new])[new.name].committed
    c.wait_applied(committed, [leader])
    assert c.statuses([leader])[leader.name].id == old_id
    assert get(leader, b"failover/199", serializable=True) == b"x"
    assert put(leader, b"failover/again", b"y").header.revision > 0


def test_paused_leader_is_replaced_and_steps_down_when_resumed(healed: PetcdCluster) -> None:
    c = healed
    leader = c.wait_leader()
    leader.pause()  # past the election timeout: the others elect a new leader
    new = c.wait_leader(exclude=[leader])
    assert new is not leader
    put(new, b"pause/k", b"written while the old leader hung")
    new_id = c.member_id(new)
    leader.resume()

    def follows() -> bool:
        st = c.statuses([leader]).get(leader.name)
        return st is not None and st.leader == new_id and st.leader != st.id

    poll(follows, what="the resumed leader to follow the new one")
    assert get(leader, b"pause/k") == b"written while the old leader hung"
    put(leader, b"pause/k2", b"through the old leader")
    assert get(new, b"pause/k2") == b"through the old leader"


def test_move_leader(healed: PetcdCluster) -> None:
    c = healed
    leader = c.wait_leader()
    target = c.followers(leader)[0]
    target_id = c.member_id(target)
    out = Etcdctl(c.endpoints).ok("move-leader", f"{target_id:x}")
    assert f"Leadership transferred from {c.member_id(leader):x} to {target_id:x}" in out
    assert c.wait_leader() is target
    put(target, b"moved/k", b"v")
    # Only the leader moves leadership, and only to a voting member.
    for m, target_id, code, message in [
        (leader, c.member_id(target), grpc.StatusCode.FAILED_PRECONDITION,
         "etcdserver: not leader"),
        (target, 0x1234, grpc.StatusCode.FAILED_PRECONDITION,
         "etcdserver: bad leader transferee"),
    ]:
        with grpc.insecure_channel(m.address) as ch:
            stub = rpc_grpc.MaintenanceStub(ch)
            with pytest.raises(grpc.RpcError) as err:
                stub.MoveLeader(rpc.MoveLeaderRequest(targetID=target_id), timeout=10)
        assert (err.value.code(), err.value.details()) == (code, message)
    ctl = Etcdctl(leader.endpoint)  # etcdctl looks for the leader among its endpoints
    r = ctl("move-leader", f"{c.member_id(leader):x}")
    assert r.returncode != 0 and "no leader endpoint given" in r.stderr


def _member_add(ctl: Etcdctl, *args: str) -> str:
    """`member add`, retried while etcd's rule refuses it: every voter must have been
    connected to the leader for 5 s ("unhealthy cluster")."""
    def attempt() -> str | None:
        r = ctl("member", "add", *args)
        if r.returncode == 0:
            return r.stdout
        assert "unhealthy cluster" in r.stderr, r.stderr
        return None

    return poll(attempt, timeout=15, what="member add")


def test_learner_joins_catches_up_is_promoted_and_removed(healed: PetcdCluster) -> None:
    c = healed
    ctl = Etcdctl(c.endpoints)
    for i in range(50):
        put(c.members[i % 3], b"learner/%02d" % i, b"before")
    proc = c.add_process("m3")
    out = _member_add(ctl, "m3", "--learner", f"--peer-urls={proc.peer_url}")
    m = re.search(r"Member ([0-9a-f]+) added to cluster ([0-9a-f]+)", out)
    assert m is not None, out
    new_id = int(m.group(1), 16)
    assert 'ETCD_INITIAL_CLUSTER_STATE="existing"' in out
    assert f"m3={proc.peer_url}" in out
    # Not started, so not in sync: etcd refuses to promote it.
    r = ctl("member", "promote", f"{new_id:x}")
    assert r.returncode != 0
    assert "can only promote a learner member which is in sync with leader" in r.stderr
    r = ctl("member", "add", "m4", "--learner", "--peer-urls=http://127.0.0.1:1")
    assert r.returncode != 0 and "too many learner members in cluster" in r.stderr

    proc.start()  # joins with --initial-cluster-state existing: member list from the peers
    leader = c.wait_leader(exclude=[proc])
    c.wait_applied(c.statuses([leader])[leader.name].committed, [proc])
    st = c.statuses([proc])[proc.name]
    assert st.is_learner and st.id == new_id
    assert get(proc, b"learner/49", serializable=True) == b"before"
    with pytest.raises(grpc.RpcError) as err:  # learners serve serializable reads only
        get(proc, b"learner/49")
    assert err.value.details() == "etcdserver: rpc not supported for learner"

    out = ctl.ok("member", "promote", f"{new_id:x}")
    assert f"Member {new_id:x} promoted in cluster" in out
    members = json.loads(ctl.ok("member", "list", "-w", "json"))["members"]
    assert {x["name"]: bool(x.get("isLearner")) for x in members} == {
        "m0": False, "m1": False, "m2": False, "m3": False}
    poll(lambda: not c.statuses([proc])[proc.name].is_learner, what="m3 to vote")
    put(proc, b"learner/after", b"promoted")
    assert get(proc, b"learner/after") == b"promoted"

    out = Etcdctl(c.members[0].endpoint).ok("member", "remove", f"{new_id:x}")
    assert f"Member {new_id:x} removed from cluster" in out
    # A removed member learns it and exits, as etcd does.
    assert poll(lambda: proc.proc is not None and proc.proc.poll() is not None,
                what="the removed member to exit")
    proc.stop()
    c.members.remove(proc)
    members = json.loads(Etcdctl(c.endpoints).ok("member", "list", "-w", "json"))["members"]
    assert sorted(x["name"] for x in members) == ["m0", "m1", "m2"]
    r = Etcdctl(c.endpoints)("member", "remove", f"{new_id:x}")
    assert r.returncode != 0 and "member not found" in r.stderr


def test_member_with_another_cluster_token_is_refused(healed: PetcdCluster) -> None:
    c = healed
    leader = c.wait_leader()
    bad = PetcdProcess(c.base_dir / "bad-token", name="m9",
                       args=[*FAST, "--initial-cluster-token", "another-token"])
    bad.initial_cluster = c.initial_cluster + f",m9={bad.peer_url}"
    bad.start(wait=False)
    try:
        # Its IDs derive from another token: the members refuse its connections.
        poll(lambda: "cluster ID mismatch" in leader.log_tail(20000),
             what="the leader to refuse the member")
        poll(lambda: "cluster ID mismatch" in bad.log_tail(20000),
             what="the member to be told")
        members = json.loads(Etcdctl(c.endpoints).ok("member", "list", "-w", "json"))
        assert sorted(x["name"] for x in members["members"]) == ["m0", "m1", "m2"]
        put(leader, b"token/k", b"unaffected")
    finally:
        bad.kill()
