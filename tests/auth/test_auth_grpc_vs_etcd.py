"""The same gRPC calls with auth on against etcd 3.4 and petcd, with simple and with
JWT tokens: the transcripts (status code, message, the response fields that matter)
must be equal. Covers tokens in `token` and `authorization` metadata, invalid tokens,
RBAC on Watch (at creation) and Lease (revoke and attach need WRITE on every attached
key), root-only Maintenance and Cluster calls, and tokens after auth changes (simple:
dropped on password change and user delete; JWT: "revision of auth store is old")."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.testing import MemberProcess, have_etcd

from .clients import Client, jwt_option

pytestmark = pytest.mark.skipif(not have_etcd(), reason="etcd/etcdctl 3.4 not installed")


def scenario(c: Client) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []

    def rec(label: str, result: tuple[Any, ...]) -> None:
        out.append((label, *result))

    kv, lease, maint, auth = c.kv, c.lease, c.maint, c.auth
    c.setup_users()
    root = c.login("root", "rootpw")
    alice = c.login("alice", "apw")
    rec("bad password", c.outcome(auth.Authenticate,
                                  rpc.AuthenticateRequest(name="alice", password="x")))
    rec("unknown user", c.outcome(auth.Authenticate,
                                  rpc.AuthenticateRequest(name="zed", password="x")))
    rec("put w/a", c.outcome(kv.Put, rpc.PutRequest(key=b"w/a", value=b"1"), alice))
    rec("put via authorization", c.outcome(kv.Put, rpc.PutRequest(key=b"w/b", value=b"1"),
                                           alice, "authorization"))
    rec("put x", c.outcome(kv.Put, rpc.PutRequest(key=b"x", value=b"1"), alice))
    rec("put r", c.outcome(kv.Put, rpc.PutRequest(key=b"r", value=b"1"), alice))
    rec("root put r", c.outcome(kv.Put, rpc.PutRequest(key=b"r", value=b"1"), root))
    code, details, resp = c.call(kv.Range, rpc.RangeRequest(key=b"w/", range_end=b"w0"), alice)
    rec("range w/", (code, details, resp.count if resp else None))
    rec("range r", c.outcome(kv.Range, rpc.RangeRequest(key=b"r"), alice))
    rec("range r serializable", c.outcome(kv.Range, rpc.RangeRequest(key=b"r", serializable=True),
                                          alice))
    rec("range no token", c.outcome(kv.Range, rpc.RangeRequest(key=b"r")))
    rec("range bogus token", c.outcome(kv.Range, rpc.RangeRequest(key=b"r"), "bogus"))
    rec("range bogus token 2", c.outcome(kv.Range, rpc.RangeRequest(key=b"r"), "abc.1"))
    rec("range w/ to x", c.outcome(kv.Range, rpc.RangeRequest(key=b"w/", range_end=b"x"), alice))
    rec("delete w/ prefix prev", c.outcome(kv.DeleteRange, rpc.DeleteRangeRequest(
        key=b"w/b", prev_kv=True), alice))

    # Watch: READ on the range at creation.
    for label, req, token in [
        ("watch w/ prefix", rpc.WatchCreateRequest(key=b"w/", range_end=b"w0"), alice),
        ("watch w/a", rpc.WatchCreateRequest(key=b"w/a"), alice),
        ("watch r", rpc.WatchCreateRequest(key=b"r"), alice),
        ("watch x", rpc.WatchCreateRequest(key=b"x"), alice),
        ("watch w/ to z", rpc.WatchCreateRequest(key=b"w/", range_end=b"z"), alice),
        ("watch anonymous", rpc.WatchCreateRequest(key=b"w/a"), None),
        ("watch root", rpc.WatchCreateRequest(key=b"x"), root),
    ]:
        w = c.watch_create(req, token)
        rec(label, (w.created, w.canceled, w.cancel_reason, w.watch_id))

    # Lease: grants need no permission; revoking (and attaching a key to) a lease needs
    # WRITE on every key already attached.
    rec("grant", c.outcome(lease.LeaseGrant, rpc.LeaseGrantRequest(ID=100, TTL=60), alice))
    rec("put w/l", c.outcome(kv.Put, rpc.PutRequest(key=b"w/l", value=b"1", lease=100), alice))
    rec("root put x", c.outcome(kv.Put, rpc.PutRequest(key=b"x", value=b"1", lease=100), root))
    rec("put w/l2 on the lease", c.outcome(kv.Put, rpc.PutRequest(key=b"w/l2", value=b"1",
                                                                   lease=100), alice))
    rec("revoke", c.outcome(lease.LeaseRevoke, rpc.LeaseRevokeRequest(ID=100), alice))
    rec("root revoke", c.outcome(lease.LeaseRevoke, rpc.LeaseRevokeRequest(ID=100), root))
    rec("anon grant", c.outcome(lease.LeaseGrant, rpc.LeaseGrantRequest(ID=101, TTL=60)))
    rec("anon revoke", c.outcome(lease.LeaseRevoke, rpc.LeaseRevokeRequest(ID=101)))
    rec("leases", c.outcome(lease.LeaseLeases, rpc.LeaseLeasesRequest(), alice))

    # Maintenance and cluster: root only where etcd says so.
    for label, method, req in [
        ("hash", maint.Hash, rpc.HashRequest()),
        ("hashkv", maint.HashKV, rpc.HashKVRequest()),
        ("defragment", maint.Defragment, rpc.DefragmentRequest()),
        ("status", maint.Status, rpc.StatusRequest()),
        ("alarm get", maint.Alarm, rpc.AlarmRequest(action=rpc.AlarmRequest.GET)),
        ("member list", c.cluster.MemberList, rpc.MemberListRequest()),
        ("member add", c.cluster.MemberAdd,
         rpc.MemberAddRequest(peerURLs=["http://127.0.0.1:1"], isLearner=True)),
        ("member remove", c.cluster.MemberRemove, rpc.MemberRemoveRequest(ID=12345)),
    ]:
        rec(label + " alice", c.outcome(method, req, alice))
        rec(label + " anonymous", c.outcome(method, req))
    for method, req in [(maint.Hash, rpc.HashRequest()), (maint.Defragment,
                                                          rpc.DefragmentRequest())]:
        rec("root", c.outcome(method, req, root))
    snap = c.maint.Snapshot(rpc.SnapshotRequest(), metadata=c.md(alice), timeout=10)
    try:
        next(iter(snap))
        rec("snapshot alice", ("OK",))
    except grpc.RpcError as e:
        rec("snapshot alice", (e.code().name, e.details()))

    # Auth management by a non-root user.
    rec("alice user add", c.outcome(auth.UserAdd, rpc.AuthUserAddRequest(name="e", password="e"),
                                    alice))
    rec("alice get self", c.outcome(auth.UserGet, rpc.AuthUserGetRequest(name="alice"), alice))
    rec("alice get root", c.outcome(auth.UserGet, rpc.AuthUserGetRequest(name="root"), alice))
    rec("alice role get", c.outcome(auth.RoleGet, rpc.AuthRoleGetRequest(role="rw"), alice))
    rec("alice role get root", c.outcome(auth.RoleGet, rpc.AuthRoleGetRequest(role="root"),
                                         alice))
    # Tokens after changes: a permission change, a password change, a deletion.
    rec("grant x to rw", c.outcome(auth.RoleGrantPermission, rpc.AuthRoleGrantPermissionRequest(
        name="rw", perm={"key": b"x", "permType": 2}), root))
    rec("old token after grant", c.outcome(kv.Range, rpc.RangeRequest(key=b"x"), alice))
    alice = c.login("alice", "apw")
    rec("new token after grant", c.outcome(kv.Range, rpc.RangeRequest(key=b"x"), alice))
    root = c.login("root", "rootpw")
    rec("change password", c.outcome(auth.UserChangePassword, rpc.AuthUserChangePasswordRequest(
        name="alice", password="apw2"), root))
    rec("token after password change", c.outcome(kv.Range, rpc.RangeRequest(key=b"x"), alice))
    rec("old password", c.outcome(auth.Authenticate,
                                  rpc.AuthenticateRequest(name="alice", password="apw")))
    alice = c.login("alice", "apw2")
    root = c.login("root", "rootpw")
    rec("delete alice", c.outcome(auth.UserDelete, rpc.AuthUserDeleteRequest(name="alice"), root))
    rec("token after delete", c.outcome(kv.Range, rpc.RangeRequest(key=b"x"), alice))
    root = c.login("root", "rootpw")
    rec("disable", c.outcome(auth.AuthDisable, rpc.AuthDisableRequest(), root))
    rec("authenticate disabled", c.outcome(auth.Authenticate,
                                           rpc.AuthenticateRequest(name="root", password="rootpw")))
    rec("range after disable", c.outcome(kv.Range, rpc.RangeRequest(key=b"x")))
    return out


@pytest.mark.parametrize("token", ["simple", "jwt"])
def test_grpc_auth_transcript(token: str, tmp_path: Path,
                              etcd_factory: Callable[..., MemberProcess],
                              petcd_factory: Callable[..., MemberProcess]) -> None:
    args = [] if token == "simple" else ["--auth-token", jwt_option(tmp_path)]
    e = etcd_factory(args=[*args, "--bcrypt-cost", "4"])
    p = petcd_factory(args=[*args, "--bcrypt-cost", "4"])
    with Client(e.address) as ce:
        want = scenario(ce)
    with Client(p.address) as cp:
        got = scenario(cp)
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g == w


def lock_election(c: Client) -> list[tuple[Any, ...]]:
    """Lock and Election with auth on: their KV steps are the caller's."""
    from petcd.pb.v3electionpb import v3election_pb2 as epb
    from petcd.pb.v3electionpb import v3election_pb2_grpc as egrpc
    from petcd.pb.v3lockpb import v3lock_pb2 as lpb
    from petcd.pb.v3lockpb import v3lock_pb2_grpc as lgrpc

    c.setup_users()
    root, alice = c.login("root", "rootpw"), c.login("alice", "apw")
    lock, election = lgrpc.LockStub(c.channel), egrpc.ElectionStub(c.channel)
    c.ok(c.lease.LeaseGrant, rpc.LeaseGrantRequest(ID=700, TTL=60), alice)
    out: list[tuple[Any, ...]] = []
    code, details, resp = c.call(lock.Lock, lpb.LockRequest(name=b"w/lock", lease=700), alice)
    out.append(("lock w/", code, details, resp.key if resp else None))
    out.append(("lock x", *c.outcome(lock.Lock, lpb.LockRequest(name=b"x", lease=700), alice)))
    out.append(("lock anonymous", *c.outcome(lock.Lock, lpb.LockRequest(name=b"w/l2",
                                                                         lease=700))))
    out.append(("unlock x", *c.outcome(lock.Unlock, lpb.UnlockRequest(key=b"x/1"), alice)))
    out.append(("unlock w/", *c.outcome(lock.Unlock, lpb.UnlockRequest(
        key=b"w/lock/2bc"), alice)))
    out.append(("campaign x", *c.outcome(election.Campaign, epb.CampaignRequest(
        name=b"x", lease=700, value=b"v"), alice)))
    out.append(("campaign w/", *c.outcome(election.Campaign, epb.CampaignRequest(
        name=b"w/e", lease=700, value=b"v"), alice)))
    out.append(("leader w/", *c.outcome(election.Leader, epb.LeaderRequest(name=b"w/e"),
                                        alice)))
    out.append(("leader x", *c.outcome(election.Leader, epb.LeaderRequest(name=b"x"), alice)))
    out.append(("leader x root", *c.outcome(election.Leader, epb.LeaderRequest(name=b"x"),
                                            root)))
    out.append(("lock bogus token", *c.outcome(lock.Lock, lpb.LockRequest(
        name=b"w/l3", lease=700), "bogus")))
    return out


def test_lock_and_election_as_the_caller(etcd_factory: Callable[..., MemberProcess],
                                         petcd_factory: Callable[..., MemberProcess]) -> None:
    e = etcd_factory(args=["--bcrypt-cost", "4"])
    p = petcd_factory(args=["--bcrypt-cost", "4"])
    with Client(e.address) as ce:
        want = lock_election(ce)
    with Client(p.address) as cp:
        got = lock_election(cp)
    for g, w in zip(got, want, strict=True):
        assert g == w
