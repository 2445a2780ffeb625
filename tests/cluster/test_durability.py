"""Snapshots for followers behind the compacted log, and no acknowledged write lost when
any member is killed (-9) and restarted from its data dir."""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.pb.etcdserverpb import rpc_pb2_grpc as rpc_grpc
from petcd.testing import LAGGING_BACKEND as LAGGING
from petcd.testing import Etcdctl, PetcdCluster, PetcdProcess, backend_index

from .test_cluster import _member_add, get, put


def test_follower_behind_the_compacted_log_gets_a_snapshot(
        cluster_factory: Callable[..., PetcdCluster]) -> None:
    c = cluster_factory(args=["--snapshot-count", "40",
                              "--experimental-snapshot-catchup-entries", "10",
                              "--max-snapshots", "2",
                              # (no 5 s wait for a healthy quorum before `member add`)
                              "--strict-reconfig-check=false"])
    leader = c.wait_leader()
    lagging = c.followers(leader)[0]
    lagging.kill()
    with grpc.insecure_channel(leader.address) as ch:
        stub = rpc_grpc.KVStub(ch)
        for i in range(300):
            stub.Put(rpc.PutRequest(key=b"snap/%03d" % i, value=b"v%d" % i), timeout=10)
    snaps = sorted((Path(leader.data_dir) / "member" / "snap").glob("*.snap"))
    assert len(snaps) == 2  # several were taken, the oldest purged (--max-snapshots)
    lagging.start()
    c.wait_applied(c.statuses([leader])[leader.name].committed, [lagging])
    assert "installed the snapshot" in lagging.log_tail(50000)
    # etcd's snapshot metrics count it on both sides
    lead_id, lag_id = f"{c.member_id(leader):x}", f"{c.member_id(lagging):x}"
    deadline = time.monotonic() + 30
    while True:  # (the leader counts it once the receiver's answer is in)
        sent = urllib.request.urlopen(leader.endpoint + "/metrics", timeout=30).read().decode()
        if f'etcd_network_snapshot_send_success{{To="{lag_id}"}} 1.0' in sent:
            break
        assert time.monotonic() < deadline, "\n".join(
            x for x in sent.splitlines() if "etcd_network_snapshot" in x)
        time.sleep(0.1)
    assert f'etcd_network_snapshot_send_inflights_total{{To="{lag_id}"}} 0.0' in sent
    got = urllib.request.urlopen(lagging.endpoint + "/metrics", timeout=30).read().decode()
    assert f'etcd_network_snapshot_receive_success{{From="{lead_id}"}} 1.0' in got
    assert "etcd_server_snapshot_apply_in_progress_total 0.0" in got
    assert get(lagging, b"snap/299", serializable=True) == b"v299"
    assert get(lagging, b"snap/000", serializable=True) == b"v0"
    # The log goes on from the snapshot; a restart loads it and replays the WAL after it.
    put(leader, b"snap/after", b"x")
    c.wait_applied(c.statuses([leader])[leader.name].committed, [lagging])
    lagging.kill()
    lagging.start()
    assert get(lagging, b"snap/after", serializable=True) == b"x"
    assert get(lagging, b"snap/150") == b"v150"
    # A member added now joins from a snapshot too (the log before it is gone), and
    # learns the member list from the backend file that comes with it.
    joiner = c.add_process("m3")
    out = _member_add(Etcdctl(c.endpoints), "m3", f"--peer-urls={joiner.peer_url}")
    assert "added to cluster" in out
    joiner.start()
    c.wait_applied(c.statuses([leader])[leader.name].committed, [joiner])
    assert "installed the snapshot" in joiner.log_tail(50000)
    assert get(joiner, b"snap/299") == b"v299"
    members = json.loads(Etcdctl(joiner.endpoint).ok("member", "list", "-w", "json"))
    assert sorted(m["name"] for m in members["members"]) == ["m0", "m1", "m2", "m3"]


async def _writer(addresses: list[str], wid: int, acked: dict[bytes, int],
                  stop: threading.Event) -> None:
    """Puts through every member in turn; a put counts once answered (with the revision
    its answer gave). A put not answered is not tried again: every key is written at
    most once."""
    chans = [grpc.aio.insecure_channel(a) for a in addresses]
    try:
        seq = 0
        while not stop.is_set():
            stub = rpc_grpc.KVStub(chans[seq % len(chans)])
            key = b"dur/%d/%06d" % (wid, seq)
            seq += 1
            try:
                resp = await stub.Put(rpc.PutRequest(key=key, value=key), timeout=3)
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.01)
                continue
            acked[key] = resp.header.revision
    finally:
        for ch in chans:
            await ch.close()


class Load:
    """Writers in a thread, against every member, recording acknowledged puts."""

    def __init__(self, c: PetcdCluster, writers: int = 8) -> None:
        self.acked: dict[bytes, int] = {}  # key -> the revision its Put answered
        self._stop = threading.Event()
        addresses = [m.address for m in c.members]

        async def main() -> None:
            await asyncio.gather(*(_writer(addresses, w, self.acked, self._stop)
                                   for w in range(writers)))

        self._thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)
        assert not self._thread.is_alive()

    def wait_more(self, n: int, timeout: float = 30.0) -> None:
        target = len(self.acked) + n
        deadline = time.monotonic() + timeout
        while len(self.acked) < target:
            assert time.monotonic() < deadline, f"writes stalled at {len(self.acked)}"
            time.sleep(0.02)


def _check_all_present(c: PetcdCluster, acked: dict[bytes, int]) -> None:
    """Every acknowledged put on every member, at the revision its answer gave (written
    once: created and modified there, version 1), and the members' histories agree."""
    leader = c.wait_leader()
    c.wait_applied(c.statuses([leader])[leader.name].committed)
    revisions = []
    for m in c.members:
        with grpc.insecure_channel(m.address) as ch:
            resp = rpc_grpc.KVStub(ch).Range(
                rpc.RangeRequest(key=b"dur/", range_end=b"dur0", serializable=True),
                timeout=30)
        revisions.append(resp.header.revision)
        found = {kv.key: (kv.mod_revision, kv.create_revision, kv.version) for kv in resp.kvs}
        missing = [k for k in acked if k not in found]
        assert not missing, f"{m.name} lost {len(missing)} acknowledged puts: {missing[:5]}"
        moved = [(k, rev, found[k]) for k, rev in acked.items() if found[k] != (rev, rev, 1)]
        assert not moved, f"{m.name}: {len(moved)} puts at another revision: {moved[:5]}"
    common = min(revisions)  # (every member has applied this far)
    hashes = set()
    for m in c.members:
        with grpc.insecure_channel(m.address) as ch:
            hashes.add(rpc_grpc.MaintenanceStub(ch).HashKV(
                rpc.HashKVRequest(revision=common), timeout=30).hash)
    assert len(hashes) == 1, f"the members' stores differ at revision {common}"


def _crash_and_restart(c: PetcdCluster, load: Load, victim: PetcdProcess) -> None:
    load.wait_more(100)
    victim.kill()
    load.wait_more(100)  # the others go on (a new leader if the victim led)
    victim.start()


def test_acknowledged_writes_survive_kill_of_any_member(
        cluster_factory: Callable[..., PetcdCluster]) -> None:
    c = cluster_factory()
    with Load(c) as load:
        leader = c.wait_leader()
        _crash_and_restart(c, load, leader)
        follower = c.followers(c.wait_leader())[0]
        _crash_and_restart(c, load, follower)
        load.wait_more(100)
    assert len(load.acked) >= 500
    _check_all_present(c, load.acked)


@pytest.mark.slow
def test_random_kill_restart_soak(cluster_factory: Callable[..., PetcdCluster]) -> None:
    """Kill -9 random members (sometimes two at once: no quorum for a while) for many
    rounds under load; no acknowledged write may be lost."""
    c = cluster_factory(args=["--snapshot-count", "500",
                              "--experimental-snapshot-catchup-entries", "50"])
    rng = random.Random(1)
    with Load(c) as load:
        for _ in range(20):
            victims = rng.sample(c.members, rng.choice((1, 1, 1, 2)))
            load.wait_more(50, timeout=60)
            for v in victims:
                v.kill()
            time.sleep(rng.uniform(0, 1.0))
            for v in victims:
                v.start()
        load.wait_more(50, timeout=60)
    _check_all_present(c, load.acked)


def test_acknowledged_writes_survive_kills_with_the_backend_lagging(
        cluster_factory: Callable[..., PetcdCluster]) -> None:
    """The backends commit only at clean stops: every member killed here restarts with
    everything since its start in its WAL only, and replays it."""
    c = cluster_factory(args=LAGGING)
    with Load(c) as load:
        for victim in (c.wait_leader(), c.followers(c.wait_leader())[0]):
            load.wait_more(300)
            victim.kill()
            # Hundreds of acknowledged writes exist only in its WAL, not its backend.
            assert backend_index(victim.data_dir) + 200 <= len(load.acked)
            load.wait_more(100)
            victim.start()
        load.wait_more(100)
    _check_all_present(c, load.acked)
