"""Pure and storage-level auth tests: permission intervals against a brute-force model
of etcd's semantics, and the auth state machine on a real LMDB backend (changes, the
revision, root rules, persistence, and the apply-time gate's refusals)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from petcd import errors
from petcd.auth import checks
from petcd.auth.apply import AuthApplier
from petcd.auth.perms import UserPerms
from petcd.auth.store import AuthStore
from petcd.auth.tokens import SimpleTokens
from petcd.errors import EtcdError
from petcd.mvcc.backend import Backend
from petcd.pb.authpb.auth_pb2 import Permission
from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.pb.internalpb.internal_pb2 import InternalAuthenticateRequest

ALPHABET = [b"", b"a", b"b", b"c", b"\x00", b"\xff"]
keys = st.lists(st.sampled_from(ALPHABET), min_size=1, max_size=3).map(b"".join)
# A permission or request range: a key, [key, end), or from key on ("\x00").
ranges = st.tuples(keys, st.one_of(st.just(b""), st.just(b"\x00"), keys))
INF = b"\xff" * 64  # above every key generated here


def _bounds(key: bytes, end: bytes) -> tuple[bytes, bytes]:
    if not end:
        return key, key + b"\x00"
    return key, INF if end == b"\x00" else end


def _model_covers(perms: list[tuple[bytes, bytes]], key: bytes, end: bytes) -> bool:
    """Exact: cut [key, end) at every permission boundary; each piece must lie inside
    one permission (etcd's interval tree Contains)."""
    lo, hi = _bounds(key, end)
    ivs = [_bounds(k, e) for k, e in perms]
    cuts = sorted({lo, hi, *(b for iv in ivs for b in iv if lo < b < hi)})
    return all(any(b <= a and c <= e for b, e in ivs) for a, c in itertools.pairwise(cuts))


@settings(max_examples=200, deadline=None)
@given(st.lists(ranges, max_size=5), ranges)
def test_interval_set_matches_the_model(perms: list[tuple[bytes, bytes]],
                                        req: tuple[bytes, bytes]) -> None:
    key, end = req
    if end and end != b"\x00" and end <= key:
        return  # an empty request range
    s = UserPerms([Permission(permType=Permission.READ, key=k, range_end=e) for k, e in perms])
    assert s.read.covers(key, end) == _model_covers(
        [(k, e) for k, e in perms if not (e and e != b"\x00" and e <= k)], key, end)


def test_interval_examples() -> None:
    p = UserPerms([Permission(permType=Permission.READ, key=b"foo/", range_end=b"foo0"),
                   Permission(permType=Permission.READWRITE, key=b"k"),
                   Permission(permType=Permission.READ, key=b"r1", range_end=b"r5"),
                   Permission(permType=Permission.READ, key=b"r5", range_end=b"r9"),
                   Permission(permType=Permission.WRITE, key=b"z", range_end=b"\x00")])
    assert p.read.covers(b"foo/x", b"")
    assert p.read.covers(b"foo/", b"foo0")
    assert not p.read.covers(b"fo", b"foo0")
    assert not p.write.covers(b"foo/x", b"")
    assert p.read.covers(b"k", b"") and p.write.covers(b"k", b"")
    assert not p.read.covers(b"k", b"k\x01")  # k and k\x00 only
    assert p.read.covers(b"r1", b"r9")  # adjacent permissions join
    assert not p.read.covers(b"r1", b"r9\x00")
    assert p.write.covers(b"z", b"\x00") and p.write.covers(b"zz", b"")
    assert not p.write.covers(b"y", b"\x00")
    assert not p.read.covers(b"z", b"")


@pytest.fixture
def store(tmp_path: Path) -> AuthStore:
    return AuthStore(Backend(str(tmp_path / "db")))


def apply(store: AuthStore, fn: str, req: object) -> object:
    with store._backend.begin_write() as batch:
        try:
            return getattr(store, fn)(batch, req)
        except EtcdError as e:
            return e


def setup(store: AuthStore) -> None:
    apply(store, "user_add", rpc.AuthUserAddRequest(name="root", hashedPassword="h"))
    apply(store, "user_grant_role", rpc.AuthUserGrantRoleRequest(user="root", role="root"))
    apply(store, "user_add", rpc.AuthUserAddRequest(name="alice", hashedPassword="h"))
    apply(store, "role_add", rpc.AuthRoleAddRequest(name="rw"))
    apply(store, "role_grant_permission", rpc.AuthRoleGrantPermissionRequest(
        name="rw", perm=Permission(permType=Permission.READWRITE, key=b"w/", range_end=b"w0")))
    apply(store, "user_grant_role", rpc.AuthUserGrantRoleRequest(user="alice", role="rw"))


def test_state_machine_rules_and_persistence(store: AuthStore, tmp_path: Path) -> None:
    assert apply(store, "enable", rpc.AuthEnableRequest()).kind is errors.ROOT_USER_NOT_EXIST
    apply(store, "user_add", rpc.AuthUserAddRequest(name="root", hashedPassword="h"))
    assert apply(store, "enable", rpc.AuthEnableRequest()).kind is errors.ROOT_ROLE_NOT_EXIST
    assert apply(store, "user_add", rpc.AuthUserAddRequest(name="")).kind is errors.USER_EMPTY
    assert apply(store, "role_add", rpc.AuthRoleAddRequest(name="")).kind is errors.ROLE_EMPTY
    assert apply(store, "user_grant_role", rpc.AuthUserGrantRoleRequest(
        user="root", role="nope")).kind is errors.ROLE_NOT_FOUND
    rev = store.revision
    setup_rest = [("user_grant_role", rpc.AuthUserGrantRoleRequest(user="root", role="root"))]
    for fn, req in setup_rest:
        apply(store, fn, req)
    assert store.revision == rev + 1
    apply(store, "user_grant_role", rpc.AuthUserGrantRoleRequest(user="root", role="root"))
    assert store.revision == rev + 1  # granting again changes nothing
    apply(store, "enable", rpc.AuthEnableRequest())
    assert store.enabled and store.revision == rev + 1  # etcd: enabling keeps the revision
    assert apply(store, "user_delete", rpc.AuthUserDeleteRequest(name="root")).kind is \
        errors.INVALID_AUTH_MGMT
    assert apply(store, "role_delete", rpc.AuthRoleDeleteRequest(role="root")).kind is \
        errors.INVALID_AUTH_MGMT
    assert apply(store, "user_revoke_role", rpc.AuthUserRevokeRoleRequest(
        name="root", role="root")).kind is errors.INVALID_AUTH_MGMT
    # The hash stored is what the proposer put in the entry; no clear password anywhere.
    assert store.users["root"].password == b"h"
    # Reopened: the same state.
    store._backend.close()
    again = AuthStore(Backend(str(tmp_path / "db")))
    assert again.enabled and again.revision == rev + 1
    assert sorted(again.users) == ["root"] and again.users["root"].roles == ["root"]


def test_role_delete_revokes_it_from_users(store: AuthStore) -> None:
    setup(store)
    assert checks.permitted(store, "alice", store.revision, b"w/a", b"", True) is None
    apply(store, "role_delete", rpc.AuthRoleDeleteRequest(role="rw"))
    assert store.users["alice"].roles == []
    assert checks.permitted(store, "alice", store.revision, b"w/a", b"", True).kind is \
        errors.PERMISSION_DENIED
    assert checks.permitted(store, "alice", 0, b"w/a", b"", True).kind is errors.USER_EMPTY
    assert checks.permitted(store, "root", store.revision - 1, b"x", b"", True).kind is \
        errors.AUTH_OLD_REVISION
    assert checks.permitted(store, "nobody", store.revision, b"x", b"", False).kind is \
        errors.PERMISSION_DENIED


def test_apply_gate(store: AuthStore) -> None:
    """What the apply path refuses once auth is on: a request checked at an older auth
    revision, one made anonymously, a non-admin change; a member's own requests pass."""
    setup(store)
    apply(store, "enable", rpc.AuthEnableRequest())
    leases: dict[int, list[bytes]] = {7: [b"w/a", b"x"], 8: [b"w/b"]}
    gate = AuthApplier(store, SimpleTokens(), lambda: 42, lambda i: leases.get(i, [])).gate
    rev = store.revision
    put = rpc.PutRequest(key=b"w/a")
    assert gate("put", put, ("alice", rev)) is None
    assert gate("put", put, ("", 0)).kind is errors.USER_EMPTY
    assert gate("put", put, None) is None
    apply(store, "role_revoke_permission", rpc.AuthRoleRevokePermissionRequest(
        role="rw", key=b"w/", range_end=b"w0"))
    assert gate("put", put, ("alice", rev)).kind is errors.AUTH_OLD_REVISION
    assert gate("txn", rpc.TxnRequest(), ("alice", rev)).kind is errors.AUTH_OLD_REVISION
    apply(store, "role_grant_permission", rpc.AuthRoleGrantPermissionRequest(
        name="rw", perm=Permission(permType=Permission.READWRITE, key=b"w/", range_end=b"w0")))
    rev = store.revision
    # Lease keys are data, not auth state: checked at apply whatever the revision.
    assert gate("lease_revoke", rpc.LeaseRevokeRequest(ID=7), ("alice", rev)).kind is \
        errors.PERMISSION_DENIED
    assert gate("lease_revoke", rpc.LeaseRevokeRequest(ID=8), ("alice", rev)) is None
    assert gate("lease_revoke", rpc.LeaseRevokeRequest(ID=7), None) is None  # expiry
    assert gate("put", rpc.PutRequest(key=b"w/c", lease=7), ("alice", rev)).kind is \
        errors.PERMISSION_DENIED
    # Admin requests: re-checked against the current state when the revision moved.
    add = rpc.AuthRoleAddRequest(name="x")
    assert gate("auth_role_add", add, ("root", rev)) is None
    assert gate("auth_role_add", add, ("alice", rev - 1)).kind is errors.PERMISSION_DENIED
    assert gate("auth_role_add", add, ("root", rev - 1)) is None
    assert gate("compaction", rpc.CompactionRequest(), ("", 0)).kind is errors.USER_EMPTY


def test_authenticate_registers_simple_tokens(store: AuthStore) -> None:
    setup(store)
    tokens = SimpleTokens(ttl=60)
    applier = AuthApplier(store, tokens, lambda: 42, lambda i: [])
    with store._backend.begin_write() as batch:
        with pytest.raises(EtcdError) as e:
            applier.authenticate(batch, InternalAuthenticateRequest(name="alice"))
        assert e.value.kind is errors.AUTH_NOT_ENABLED
    apply(store, "enable", rpc.AuthEnableRequest())
    with store._backend.begin_write() as batch:
        resp = applier.authenticate(batch, InternalAuthenticateRequest(
            name="alice", simple_token="abcdefghijklmnop"))
    assert resp.token == "abcdefghijklmnop.42"
    assert tokens.lookup(resp.token) == "alice"
    store.invalidate_listeners.append(tokens.invalidate)
    apply(store, "user_change_password", rpc.AuthUserChangePasswordRequest(
        name="alice", hashedPassword="h2"))
    assert tokens.lookup(resp.token) is None


class _Ctx:
    """The two context methods the caller's identity is read from."""

    def __init__(self, md: tuple[tuple[str, str | bytes], ...], auth: dict[str, list[bytes]]
                 ) -> None:
        self._md, self._auth = md, auth

    def invocation_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        return self._md

    def auth_context(self) -> dict[str, list[bytes]]:
        return self._auth


def test_caller_identity_sources() -> None:
    from petcd.api.authz import common_name, token_of
    cn = {"x509_common_name": [b"alice"], "transport_security_type": [b"ssl"]}
    assert token_of(_Ctx((("token", "t1"),), {})) == "t1"  # type: ignore[arg-type]
    assert token_of(_Ctx((("authorization", "Bearer t2"),), {})) == "t2"  # type: ignore[arg-type]
    assert token_of(_Ctx((("authorization", "t3"),), {})) == "t3"  # type: ignore[arg-type]
    assert token_of(_Ctx((("other", "x"),), cn)) is None  # type: ignore[arg-type]
    assert common_name(_Ctx((), cn)) == "alice"  # type: ignore[arg-type]
    assert common_name(_Ctx((), {"transport_security_type": [b"insecure"]})) is None  # type: ignore[arg-type]
