"""Auth on 3-member clusters: tokens from one member used on the others (JWT: verified
by any member's key; simple: every member applies the Authenticate entry, as in etcd
3.4), auth state after a kill -9 and restart, and after a follower catches up from the
leader's snapshot (the auth databases travel in the backend file)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.testing import EtcdProcess, PetcdCluster, have_etcd

from .clients import READ, Client, jwt_option

DENIED = ("PERMISSION_DENIED", "etcdserver: permission denied")
OK = ("OK", "")
OLD_REVISION = ("INVALID_ARGUMENT", "etcdserver: revision of auth store is old")


def _committed(c: PetcdCluster) -> int:
    leader = c.wait_leader()
    return c.statuses([leader])[leader.name].committed


def test_jwt_cluster_restart_and_snapshot_catch_up(
        cluster_factory: Callable[..., PetcdCluster], tmp_path: Path) -> None:
    c = cluster_factory(args=["--auth-token", jwt_option(tmp_path),
                              "--snapshot-count", "40",
                              "--experimental-snapshot-catchup-entries", "10"])
    leader = c.wait_leader()
    with Client(leader.address) as cl:
        cl.setup_users()
        alice = cl.login("alice", "apw")
    c.wait_applied(_committed(c))
    # A token one member signed works on every member.
    for m in c.members:
        with Client(m.address) as cm:
            assert cm.outcome(cm.kv.Put, rpc.PutRequest(key=b"w/" + m.name.encode(),
                                                         value=b"1"), alice) == OK
            assert cm.outcome(cm.kv.Put, rpc.PutRequest(key=b"x", value=b"1"), alice) == DENIED
            got = cm.ok(cm.kv.Range, rpc.RangeRequest(key=b"w/", range_end=b"w0"), alice)
            assert got.count >= 1
    # A follower misses auth changes and enough entries to need the leader's snapshot.
    lagging = c.followers(leader)[0]
    lagging.kill()
    with Client(leader.address) as cl:
        root = cl.login("root", "rootpw")
        cl.ok(cl.auth.UserAdd, rpc.AuthUserAddRequest(name="dave", password="dpw"), root)
        cl.ok(cl.auth.RoleAdd, rpc.AuthRoleAddRequest(name="ro"), root)
        cl.ok(cl.auth.RoleGrantPermission, rpc.AuthRoleGrantPermissionRequest(
            name="ro", perm={"key": b"d/", "range_end": b"d0", "permType": READ}), root)
        cl.ok(cl.auth.UserGrantRole, rpc.AuthUserGrantRoleRequest(user="dave", role="ro"), root)
        cl.ok(cl.auth.RoleRevokePermission, rpc.AuthRoleRevokePermissionRequest(
            role="rw", key=b"w/", range_end=b"w0"), root)
        # (root's JWT names the auth revision it was signed at: now old, as in etcd)
        assert cl.outcome(cl.kv.Put, rpc.PutRequest(key=b"d/", value=b"v"), root) == (
            "INVALID_ARGUMENT", "etcdserver: revision of auth store is old")
        root = cl.login("root", "rootpw")
        for i in range(120):
            cl.ok(cl.kv.Put, rpc.PutRequest(key=b"d/%03d" % i, value=b"v"), root)
    lagging.start()
    c.wait_applied(_committed(c), [lagging])
    assert "installed the snapshot" in lagging.log_tail(50000)
    with Client(lagging.address) as cf:
        dave = cf.login("dave", "dpw")  # checked against the state that came by snapshot
        r = cf.ok(cf.kv.Range, rpc.RangeRequest(key=b"d/", range_end=b"d0", serializable=True,
                                                count_only=True), dave)
        assert r.count == 120
        assert cf.outcome(cf.kv.Put, rpc.PutRequest(key=b"d/x", value=b"1"), dave) == DENIED
        alice = cf.login("alice", "apw")
        assert cf.outcome(cf.kv.Put, rpc.PutRequest(key=b"w/a", value=b"1"), alice) == DENIED
        root = cf.login("root", "rootpw")
        users = cf.ok(cf.auth.UserList, rpc.AuthUserListRequest(), root).users
        assert list(users) == ["alice", "dave", "root"]
        st = cf.ok(cf.auth.AuthStatus, rpc.AuthStatusRequest())
    # kill -9 and restart: the same auth state, and JWTs signed before still verify.
    leader = c.wait_leader()
    leader.kill()
    leader.start()
    c.wait_applied(_committed(c), [leader])
    with Client(leader.address) as cl:
        st2 = cl.ok(cl.auth.AuthStatus, rpc.AuthStatusRequest())
        assert (st2.enabled, st2.authRevision) == (True, st.authRevision)
        assert cl.outcome(cl.kv.Range, rpc.RangeRequest(key=b"d/000"), dave) == OK
        assert cl.outcome(cl.kv.Range, rpc.RangeRequest(key=b"w/a"), dave) == DENIED


def test_simple_token_on_other_members(cluster_factory: Callable[..., PetcdCluster]) -> None:
    c = cluster_factory()
    a, b, d = c.members
    with Client(a.address) as ca:
        ca.setup_users()
        alice = ca.login("alice", "apw")
    for m in (b, d):
        with Client(m.address) as cm:
            assert cm.outcome(cm.kv.Put, rpc.PutRequest(key=b"w/1", value=b"1"), alice) == OK
            assert cm.outcome(cm.kv.Put, rpc.PutRequest(key=b"x", value=b"1"), alice) == DENIED
    # TimeToLive through a follower (forwarded to the leader) is checked where it came in.
    follower = c.followers(c.wait_leader())[0]
    with Client(follower.address) as cf:
        cf.ok(cf.lease.LeaseGrant, rpc.LeaseGrantRequest(ID=9, TTL=60), alice)
        cf.ok(cf.kv.Put, rpc.PutRequest(key=b"w/l", value=b"1", lease=9), alice)
        ttl = rpc.LeaseTimeToLiveRequest(ID=9, keys=True)
        assert list(cf.ok(cf.lease.LeaseTimeToLive, ttl, alice).keys) == [b"w/l"]
        root = cf.login("root", "rootpw")
        cf.ok(cf.kv.Put, rpc.PutRequest(key=b"x", value=b"1", lease=9), root)
        c.wait_applied(_committed(c), [follower])
        assert cf.outcome(cf.lease.LeaseTimeToLive, ttl, alice) == DENIED
        assert list(cf.ok(cf.lease.LeaseTimeToLive, ttl, root).keys) == [b"w/l", b"x"]
    # After a kill -9 and restart the member serves logins and checks again. (Whether a
    # simple token issued before survives is not asserted: once, under heavy load, one
    # did; see the report of issue 11.)
    b.kill()
    b.start()
    c.wait_applied(_committed(c), [b])
    with Client(b.address) as cb:
        token = cb.login("alice", "apw")
        assert cb.outcome(cb.kv.Range, rpc.RangeRequest(key=b"w/1"), token) == OK
        assert cb.outcome(cb.kv.Range, rpc.RangeRequest(key=b"x"), token) == DENIED


def _token_elsewhere(members: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Log in on the first member, use the token on each of the others."""
    (_, first), others = members[0], members[1:]
    with Client(first) as ca:
        ca.setup_users()
        token = ca.login("alice", "apw")
    out = []
    for _, address in others:
        with Client(address) as cm:
            # etcd 3.4 on a member still applying the login may answer "revision of auth
            # store is old" (it reads the revision before waiting for the token's index):
            # retried, as clientv3 retries it.
            for _ in range(20):
                put = cm.outcome(cm.kv.Put, rpc.PutRequest(key=b"w/1", value=b"1"), token)
                if put != OLD_REVISION:
                    break
                time.sleep(0.5)
            out.append(put)
            out.append(cm.outcome(cm.kv.Range, rpc.RangeRequest(key=b"x"), token))
    return out


@pytest.mark.skipif(not have_etcd(), reason="etcd 3.4 not installed")
def test_simple_token_on_other_members_as_etcd(
        cluster_factory: Callable[..., PetcdCluster], tmp_path: Path) -> None:
    """etcd 3.4 replicates a simple token through the log: it works on every member."""
    etcds = [EtcdProcess(tmp_path / f"etcd-{i}", name=f"e{i}",
                         args=["--initial-cluster-token", "auth-test"]) for i in range(3)]
    initial = ",".join(f"{m.name}={m.peer_url}" for m in etcds)
    try:
        for m in etcds:
            m.initial_cluster = initial
            m._spawn()
        for m in etcds:
            m.wait_ready(60)
        want = _token_elsewhere([(m.name, m.address) for m in etcds])
    finally:
        for m in etcds:
            m.kill()
    c = cluster_factory()
    got = _token_elsewhere([(m.name, m.address) for m in c.members])
    assert got == want == [OK, DENIED] * 2
