"""Maintenance on 3-member petcd clusters (real processes, etcdctl): status and hashkv
across members, alarms agreed through the log (also by a member that was down and caught
up from a snapshot of the leader's backend), NOSPACE and recovery, defragmenting
followers while the cluster serves, and a 3-member cluster restored from a snapshot."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.testing import FAST_ELECTIONS, Etcdctl, PetcdCluster, PetcdProcess, Started, free_port

from .conftest import Stubs, error_lines, petcdctl, wait_serving

FAST = list(FAST_ELECTIONS)
QUOTA = 1_500_000
VALUE = "x" * 100_000


@pytest.fixture
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[PetcdCluster]:
    """A 3-member cluster with a small quota and frequent snapshots (a member that was
    down catches up from the leader's backend)."""
    c = PetcdCluster(tmp_path / "cluster", 3, args=[
        *FAST, "--quota-backend-bytes", str(QUOTA), "--snapshot-count", "20",
        "--experimental-snapshot-catchup-entries", "5"])
    with Started(request) as started:
        yield started.add(c).start()


def hashes(ctl: Etcdctl) -> dict[str, int]:
    out = json.loads(ctl.ok("endpoint", "hashkv", "--cluster", "-w", "json"))
    return {e["Endpoint"]: e["HashKV"]["hash"] for e in out}


def alarm_lists(c: PetcdCluster) -> list[str]:
    return [Etcdctl(m.endpoint).ok("alarm", "list") for m in c.members]


def test_status_hashkv_alarms_nospace_defrag(cluster: PetcdCluster) -> None:
    leader = cluster.wait_leader()
    follower = cluster.followers(leader)[0]
    ctl = Etcdctl(follower.endpoint)  # writes through a follower: forwarded to the leader
    for i in range(5):
        ctl.ok("put", f"k{i}", f"v{i}")

    status = json.loads(ctl.ok("endpoint", "status", "--cluster", "-w", "json"))
    assert len(status) == 3
    assert len({s["Status"]["leader"] for s in status}) == 1
    assert [s["Status"]["leader"] == s["Status"]["header"]["member_id"]
            for s in status].count(True) == 1
    cluster.wait_applied(max(s["Status"]["raftIndex"] for s in status))
    h = hashes(ctl)
    assert len(h) == 3 and len(set(h.values())) == 1

    # Fill up to the quota: refused with etcd's error, through any member.
    for i in range(40):
        r = ctl("put", f"big{i}", input=VALUE)
        if r.returncode:
            assert error_lines(r.stderr)[-1] == \
                "Error: etcdserver: mvcc: database space exceeded"
            break
    else:
        pytest.fail("the quota was never reached")
    lists = alarm_lists(cluster)
    assert len(set(lists)) == 1 and "alarm:NOSPACE" in lists[0]
    for m in cluster.members:
        r = Etcdctl(m.endpoint)("put", "small", "v")
        assert error_lines(r.stderr)[-1:] == ["Error: etcdserver: mvcc: database space "
                                              "exceeded"], m.name
        errors = json.loads(Etcdctl(m.endpoint).ok("endpoint", "status", "-w", "json"))[0][
            "Status"]["errors"]
        assert errors and errors[0].endswith(" alarm:NOSPACE "), m.name

    # Recovery: compact, defragment every member (while they serve), disarm.
    live = Etcdctl(cluster.wait_leader().endpoint)
    live.ok("del", "big", "--prefix")
    rev = json.loads(live.ok("get", "k0", "-w", "json"))["header"]["revision"]
    live.ok("compact", str(rev), "--physical")
    out = live.ok("defrag", "--cluster")
    assert out.count("Finished defragmenting etcd member[") == 3
    assert "alarm:NOSPACE" in live.ok("alarm", "list")  # defrag alone does not disarm

    # A member down while the alarm is disarmed catches up from a snapshot of the
    # leader's backend: it must take the alarm state from it, or it would go on refusing
    # the writes the others apply.
    late = cluster.followers(cluster.wait_leader())[-1]
    late.stop()
    live.ok("alarm", "disarm")
    for i in range(30):  # entries past the snapshot count
        live.ok("put", f"while-down/{i}", "v")
    leader_index = json.loads(live.ok("endpoint", "status", "-w", "json"))[0]["Status"][
        "raftIndex"]
    late.start(wait=False)
    wait_serving(late)
    cluster.wait_applied(leader_index, [late])
    assert "installed the snapshot" in late.log_tail(20_000)
    late_ctl = Etcdctl(late.endpoint)
    assert "errors" not in json.loads(late_ctl.ok("endpoint", "status", "-w", "json"))[0][
        "Status"]
    assert set(alarm_lists(cluster)) == {""}
    for m in cluster.members:
        assert Etcdctl(m.endpoint).ok("put", f"after/{m.name}", "v") == "OK\n"
    status = json.loads(live.ok("endpoint", "status", "--cluster", "-w", "json"))
    cluster.wait_applied(max(s["Status"]["raftIndex"] for s in status))
    h = hashes(live)
    assert len(h) == 3 and len(set(h.values())) == 1
    assert all(s["Status"]["dbSize"] < QUOTA for s in status)


def test_alarm_survives_restart_of_the_whole_cluster(cluster: PetcdCluster) -> None:
    leader = cluster.wait_leader()
    with grpc.insecure_channel(leader.address) as ch:
        from petcd.pb.etcdserverpb import rpc_pb2_grpc as rpc_grpc

        stub = rpc_grpc.MaintenanceStub(ch)
        target = cluster.member_id(cluster.followers(leader)[0])
        resp = stub.Alarm(rpc.AlarmRequest(action=rpc.AlarmRequest.ACTIVATE, memberID=target,
                                           alarm=rpc.CORRUPT))
        assert [(a.memberID, a.alarm) for a in resp.alarms] == [(target, rpc.CORRUPT)]
    for m in cluster.members:
        m.stop()
    for m in cluster.members:
        m.start(wait=False)
    for m in cluster.members:
        wait_serving(m)
    cluster.wait_leader()
    assert set(alarm_lists(cluster)) == {f"memberID:{target} alarm:CORRUPT \n"}
    r = Etcdctl(cluster.members[0].endpoint)("del", "x")
    assert error_lines(r.stderr)[-1] == "Error: etcdserver: corrupt cluster"
    Etcdctl(cluster.members[1].endpoint).ok("alarm", "disarm")
    assert Etcdctl(cluster.members[2].endpoint).ok("del", "x") == "0\n"

    # Alone, a member has no leader: Status says so as etcd does.
    cluster.members[0].stop()
    cluster.members[1].stop()
    deadline = time.monotonic() + 20
    while True:
        st = json.loads(Etcdctl(cluster.members[2].endpoint).ok(
            "endpoint", "status", "-w", "json"))[0]["Status"]
        if "leader" not in st or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert st.get("errors") == ["etcdserver: no leader"]


def test_three_member_restore_keeps_all_data(tmp_path: Path) -> None:
    src = PetcdCluster(tmp_path / "src", 3, args=FAST)
    dst: list[PetcdProcess] = []
    try:
        src.start()
        leader = src.wait_leader()
        ctl = Etcdctl(leader.endpoint, cwd=str(tmp_path))
        for i in range(30):
            ctl.ok("put", f"data/{i:02d}", f"value {i}")
        ctl.ok("del", "data/00")
        ctl.ok("compact", "10")
        follower = src.followers(leader)[0]
        src.wait_applied(Stubs(leader).maintenance.Status(rpc.StatusRequest()).raftIndex)
        Etcdctl(follower.endpoint, cwd=str(tmp_path)).ok("snapshot", "save", "snap.db")
        before = ctl.ok("get", "", "--prefix", "-w", "json")
        rev = json.loads(before)["header"]["revision"]
        old_hash = Stubs(leader).maintenance.HashKV(rpc.HashKVRequest(revision=rev)).hash

        names = ["r0", "r1", "r2"]
        peers = {n: free_port() for n in names}
        initial = ",".join(f"{n}=http://127.0.0.1:{p}" for n, p in peers.items())
        for n in names:
            r = petcdctl("snapshot", "restore", "snap.db", "--name", n, "--data-dir", n,
                         "--initial-cluster", initial, "--initial-cluster-token", "restored",
                         "--initial-advertise-peer-urls", f"http://127.0.0.1:{peers[n]}",
                         cwd=tmp_path)
            assert r.returncode == 0, r.stderr
        src.kill_all()  # the new cluster runs alone
        for n in names:
            m = PetcdProcess(tmp_path / n, name=n, peer_port=peers[n], args=FAST,
                             initial_cluster=initial)
            dst.append(m)
            m.start(wait=False)
        for m in dst:
            m.wait_ready(60)
        new = Etcdctl(",".join(m.endpoint for m in dst))
        after = json.loads(new.ok("get", "", "--prefix", "-w", "json"))
        assert [(kv["key"], kv["value"], kv["mod_revision"]) for kv in after["kvs"]] == \
            [(kv["key"], kv["value"], kv["mod_revision"]) for kv in json.loads(before)["kvs"]]
        assert after["header"]["revision"] == rev
        assert after["header"]["cluster_id"] != json.loads(before)["header"]["cluster_id"]
        members = Etcdctl(dst[0].endpoint).ok("member", "list")
        assert sorted(line.split(", ")[2] for line in members.splitlines()) == names
        for m in dst:
            assert Stubs(m).maintenance.HashKV(rpc.HashKVRequest(revision=rev)).hash == \
                old_hash
        Etcdctl(dst[2].endpoint).ok("put", "data/new", "after restore")
        for m in dst:
            assert Etcdctl(m.endpoint).ok("get", "data/new", "--print-value-only",
                                          "--consistency", "l") == "after restore\n"
    finally:
        src.kill_all()
        for m in dst:
            m.kill()
