"""petcd-only auth behaviour on one member (no etcd 3.4 reference for these): simple
token expiry and keep-alive by use, the failed-login back-off, checks petcd makes
beyond etcd 3.4.23 (compaction root-only, TimeToLive, from-key watches, nested txns),
AuthStatus (3.5), and no password in clear anywhere on disk."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.testing import MemberProcess

from .clients import READ, Client

Factory = Callable[..., MemberProcess]
DENIED = ("PERMISSION_DENIED", "etcdserver: permission denied")
INVALID_TOKEN = ("UNAUTHENTICATED", "etcdserver: invalid auth token")


def test_simple_token_expires_unless_used(petcd_factory: Factory) -> None:
    m = petcd_factory(args=["--bcrypt-cost", "4", "--auth-token-ttl", "3"])
    with Client(m.address) as c:
        c.setup_users()
        token = c.login("alice", "apw")
        get = rpc.RangeRequest(key=b"r")
        # Used every second for 6 s (twice the TTL): kept alive by use.
        for _ in range(6):
            assert c.outcome(c.kv.Range, get, token) == ("OK", "")
            time.sleep(1.0)
        idle = c.login("alice", "apw")
        time.sleep(5.0)  # > TTL without use (the sweep may lag by a second)
        assert c.outcome(c.kv.Range, get, idle) == INVALID_TOKEN
        assert c.outcome(c.kv.Range, get, token) == INVALID_TOKEN


def test_failed_logins_back_off_per_user(petcd_factory: Factory) -> None:
    m = petcd_factory(args=["--bcrypt-cost", "4"])
    with Client(m.address) as c:
        c.setup_users()
        auth = c.auth
        bad = rpc.AuthenticateRequest(name="alice", password="guess")
        failed = ("INVALID_ARGUMENT", "etcdserver: authentication failed, invalid user ID or "
                                      "password")
        for _ in range(3):
            assert c.outcome(auth.Authenticate, bad) == failed
        # The 4th attempt for alice waits its turn: 0.25 s * 2^2 after the 3rd failure.
        started = time.monotonic()
        assert c.outcome(auth.Authenticate, bad) == failed
        assert time.monotonic() - started >= 0.8
        # Meanwhile another user logs in at once, even while alice is being guessed.
        guesser = threading.Thread(target=lambda: c.outcome(auth.Authenticate, bad))
        guesser.start()
        started = time.monotonic()
        c.login("root", "rootpw")
        assert time.monotonic() - started < 1.5
        guesser.join()
        # The right password still works (after its turn) and clears the record.
        c.login("alice", "apw")
        started = time.monotonic()
        assert c.outcome(auth.Authenticate, bad) == failed
        assert time.monotonic() - started < 1.5


def test_checks_beyond_etcd_34(petcd_factory: Factory) -> None:
    m = petcd_factory(args=["--bcrypt-cost", "4"])
    with Client(m.address) as c:
        c.setup_users()
        root, alice = c.login("root", "rootpw"), c.login("alice", "apw")
        kv = c.kv
        c.ok(kv.Put, rpc.PutRequest(key=b"w/a", value=b"1"), alice)
        # Compaction is for the root role only.
        assert c.outcome(kv.Compact, rpc.CompactionRequest(revision=1), alice) == DENIED
        assert c.outcome(kv.Compact, rpc.CompactionRequest(revision=1), None) == (
            "INVALID_ARGUMENT", "etcdserver: user name is empty")
        assert c.outcome(kv.Compact, rpc.CompactionRequest(revision=1), root) == ("OK", "")
        # TimeToLive needs READ on every attached key (etcd 3.4.26 / 3.5.9 on).
        c.ok(c.lease.LeaseGrant, rpc.LeaseGrantRequest(ID=5, TTL=60), root)
        c.ok(kv.Put, rpc.PutRequest(key=b"w/l", value=b"1", lease=5), alice)
        ttl = rpc.LeaseTimeToLiveRequest(ID=5, keys=True)
        assert c.outcome(c.lease.LeaseTimeToLive, ttl, alice) == ("OK", "")
        c.ok(kv.Put, rpc.PutRequest(key=b"secret", value=b"1", lease=5), root)
        assert c.outcome(c.lease.LeaseTimeToLive, ttl, alice) == DENIED
        # A from-key watch needs READ on everything from its key (etcd 3.4 checks only
        # the key itself).
        w = c.watch_create(rpc.WatchCreateRequest(key=b"w/", range_end=b"\x00"), alice)
        assert (w.created, w.canceled) == (True, True)
        assert w.cancel_reason.endswith("etcdserver: permission denied")
        w = c.watch_create(rpc.WatchCreateRequest(key=b"w/", range_end=b"w0"), alice)
        assert (w.created, w.canceled) == (True, False)
        # A nested txn (3.5) is checked as deep as it goes; nothing of it applies.
        inner = rpc.TxnRequest(success=[rpc.RequestOp(request_put=rpc.PutRequest(
            key=b"outside", value=b"x"))])
        outer = rpc.TxnRequest(success=[
            rpc.RequestOp(request_put=rpc.PutRequest(key=b"w/n", value=b"x")),
            rpc.RequestOp(request_txn=inner)])
        assert c.outcome(kv.Txn, outer, alice) == DENIED
        assert c.ok(kv.Range, rpc.RangeRequest(key=b"w/n"), alice).count == 0
        # AuthStatus (3.5): anyone may ask.
        st = c.ok(c.auth.AuthStatus, rpc.AuthStatusRequest())
        assert st.enabled and st.authRevision > 1
        # The HTTP gateway passes "Authorization: Bearer <token>" as metadata.
        assert c.outcome(kv.Range, rpc.RangeRequest(key=b"w/a"), "Bearer " + alice,
                         "authorization") == ("OK", "")
        # A role with READ only: role get shows it, writes are refused.
        c.ok(c.auth.RoleGrantPermission, rpc.AuthRoleGrantPermissionRequest(
            name="rw", perm={"key": b"ro/", "range_end": b"ro0", "permType": READ}), root)
        alice = c.login("alice", "apw")
        assert c.outcome(kv.Put, rpc.PutRequest(key=b"ro/x", value=b"1"), alice) == DENIED


def test_no_password_in_clear_on_disk(petcd_factory: Factory, tmp_path: Path) -> None:
    m = petcd_factory(args=["--bcrypt-cost", "4"])
    secret = "correct-horse-battery-staple"
    with Client(m.address) as c:
        c.setup_users(root_pw=secret)
        root = c.login("root", secret)
        c.ok(c.auth.UserChangePassword, rpc.AuthUserChangePasswordRequest(
            name="alice", password=secret + "2"), root)
        c.login("alice", secret + "2")
    m.stop()
    seen = b""
    for f in Path(m.data_dir).rglob("*"):
        if f.is_file():
            seen += f.read_bytes()
    assert b"$2b$04$" in seen  # the bcrypt hashes are there
    assert secret.encode() not in seen
    assert secret.encode() not in Path(m.log_path).read_bytes()
