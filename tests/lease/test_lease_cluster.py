"""Leases in a 3-member cluster (separate processes): grants and keep-alives through
followers (forwarded to the leader), only the leader expiring leases, TimeToLive
answered with the leader's view, leases and keys surviving the leader being killed,
and leases renewed on failover so none expires early because of it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import grpc
import pytest

from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.testing import FAST_ELECTIONS, Etcdctl, PetcdCluster, PetcdProcess, Started, have_etcd

from .clients import Client, wait_gone

pytestmark = pytest.mark.skipif(not have_etcd(), reason="etcd/etcdctl 3.4 not installed")

# Fast elections (etcd's 1:10 ratio): the minimum TTL becomes 1 s (0.75 s rounded up).
FAST = list(FAST_ELECTIONS)


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[PetcdCluster]:
    with Started(request) as started:
        yield started.add(PetcdCluster(tmp_path_factory.mktemp("lease-cluster"), 3,
                                       args=FAST)).start()


@pytest.fixture
def healed(cluster: PetcdCluster) -> PetcdCluster:
    for m in cluster.members:
        if not m.running:
            m.start()
    cluster.wait_leader()
    return cluster


class KeepAliver:
    """Keeps a lease alive through one member, every `period` seconds, on a thread;
    records what the renewals answered (errors included)."""

    def __init__(self, member: PetcdProcess, lease_id: int, period: float = 0.3) -> None:
        self.client = Client(member)
        self.lease_id = lease_id
        self.period = period
        self.answers: list[int | str] = []
        self.times: list[tuple[float, float, int | str]] = []  # for failure messages
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            sent = time.time()
            try:
                self.answers.append(self.client.keep_alive(self.lease_id)[0][1])
            except Exception as e:  # recorded; the loop goes on
                self.answers.append(type(e).__name__)
            self.times.append((sent, time.time() - sent, self.answers[-1]))
            self._stop.wait(self.period)

    def __enter__(self) -> KeepAliver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)
        self.client.close()


def test_follower_grants_forwards_keepalives_and_timetolive(healed: PetcdCluster) -> None:
    leader = healed.wait_leader()
    follower = healed.followers(leader)[0]
    f, ld = Client(follower), Client(leader)
    try:
        granted = f.grant(1)  # below the minimum: raised to 1 s (already it)
        lease_id = granted.ID
        assert granted.TTL == 1 and lease_id > 0
        f.put(b"/fw/a", lease_id)
        # A forwarded keep-alive answers the granted TTL; an unknown ID answers TTL 0.
        assert f.keep_alive(lease_id, 0x0BAD) == [(lease_id, 1), (0x0BAD, 0)]
        # TTL of 1 s, kept alive only through the follower for 3 s: the leader renews it.
        for _ in range(10):
            assert f.keep_alive(lease_id) == [(lease_id, 1)]
            time.sleep(0.3)
        assert ld.exists(b"/fw/a")
        # TimeToLive on the follower is the leader's view (a finite remaining TTL).
        resp = f.ttl(lease_id, keys=True)
        assert (resp.grantedTTL, list(resp.keys)) == (1, [b"/fw/a"])
        assert 0 <= resp.TTL <= 1
        assert f.ttl(0x0BAD).TTL == -1
        ids = [le.ID for le in f.lease.LeaseLeases(rpc.LeaseLeasesRequest()).leases]
        assert lease_id in ids
        # Keep-alives stop: the leader expires it; every member deletes the key.
        wait_gone(f, b"/fw/a", 1 + 1 + 1)
        assert not ld.exists(b"/fw/a")
        assert f.keep_alive(lease_id) == [(lease_id, 0)]
    finally:
        f.close()
        ld.close()


def test_etcdctl_lease_commands_on_a_follower(healed: PetcdCluster) -> None:
    leader = healed.wait_leader()
    follower = healed.followers(leader)[0]
    ctl = Etcdctl(follower.endpoint)
    out = ctl.ok("lease", "grant", "60")
    lease_hex = out.split()[1]
    ctl.ok("put", "--lease", lease_hex, "/ctl/k", "v")
    assert ctl.ok("lease", "keep-alive", "--once", lease_hex) == \
        f"lease {lease_hex} keepalived with TTL(60)\n"
    ttl = ctl.ok("lease", "timetolive", "--keys", lease_hex)
    assert ttl.startswith(f"lease {lease_hex} granted with TTL(60s), remaining(")
    assert ttl.endswith("attached keys([/ctl/k])\n")
    assert lease_hex in ctl.ok("lease", "list")
    assert ctl.ok("lease", "revoke", lease_hex) == f"lease {lease_hex} revoked\n"
    assert Etcdctl(leader.endpoint).ok("get", "/ctl/k") == ""


def test_lease_and_keys_survive_killing_the_leader(healed: PetcdCluster) -> None:
    c = healed
    leader = c.wait_leader()
    survivor = c.followers(leader)[0]
    s = Client(survivor)
    try:
        kept = s.grant(2).ID  # kept alive through the survivor all along
        idle = s.grant(4).ID  # nobody renews it
        s.put(b"/kill/kept", kept)
        s.put(b"/kill/idle", idle)
        idle_granted = time.monotonic()
        with KeepAliver(survivor, kept) as ka:
            time.sleep(1.0)
            leader.kill()
            new_leader = c.wait_leader(exclude=[leader])
            elected = time.monotonic()
            # The idle lease got a fresh TTL from the new leader: not gone at its old
            # deadline (grant + 4 s)...
            while time.monotonic() < idle_granted + 4 + 0.3:
                assert s.exists(b"/kill/idle")
                time.sleep(0.1)
            # ...but expires 4 s (+ an election timeout) after the promotion.
            wait_gone(s, b"/kill/idle", max(0.0, elected + 4 + 0.5 + 1.5 - time.monotonic()))
            assert s.exists(b"/kill/kept")
            resp = Client(new_leader).ttl(kept, keys=True)
            assert (resp.grantedTTL, list(resp.keys)) == (2, [b"/kill/kept"])
            # Restarted, the old leader catches up and agrees.
            leader.start()
            lc = Client(leader)
            try:
                deadline = time.monotonic() + 10
                while not lc.exists(b"/kill/kept", serializable=True) or \
                        lc.exists(b"/kill/idle", serializable=True):
                    if time.monotonic() > deadline:
                        pytest.fail("restarted member did not catch up: "
                                    + c._describe(c.members))
                    time.sleep(0.05)
            finally:
                lc.close()
            time.sleep(0.5)
        # Renewals went on through the failover (some may have failed during it).
        assert ka.answers[-3:] == [2, 2, 2], ka.times
        assert 0 not in ka.answers, ka.times
        # Keep-alives stop: it expires everywhere.
        wait_gone(s, b"/kill/kept", 2 + 1 + 1)
    finally:
        s.close()


def test_learner_refuses_lease_rpcs_as_etcd(healed: PetcdCluster) -> None:
    c = healed
    ctl = Etcdctl(c.endpoints)
    proc = c.add_process("m3")

    def add() -> bool:
        r = ctl("member", "add", "m3", "--learner", f"--peer-urls={proc.peer_url}")
        assert r.returncode == 0 or "unhealthy cluster" in r.stderr, r.stderr
        return r.returncode == 0

    deadline = time.monotonic() + 15
    while not add():  # etcd's rule: voters connected to the leader for 5 s first
        assert time.monotonic() < deadline
        time.sleep(0.2)
    proc.start()
    learner = Client(proc)
    try:
        calls = [
            lambda: learner.grant(10),
            lambda: learner.keep_alive(1),
            lambda: learner.ttl(1),
            lambda: learner.lease.LeaseLeases(rpc.LeaseLeasesRequest(), timeout=10),
            lambda: learner.lease.LeaseRevoke(rpc.LeaseRevokeRequest(ID=1), timeout=10),
        ]
        for call in calls:
            with pytest.raises(grpc.RpcError) as err:
                call()
            assert (err.value.code(), err.value.details()) == (
                grpc.StatusCode.UNAVAILABLE, "etcdserver: rpc not supported for learner")
    finally:
        learner.close()
        member_id = c.member_id(proc)
        Etcdctl(c.members[0].endpoint).ok("member", "remove", f"{member_id:x}")
        proc.stop()
        c.members.remove(proc)
