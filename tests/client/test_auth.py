"""Auth admin calls, and a user's token renewed transparently when it expires (also in
the middle of a watch, and across a member restart). Runs against etcd 3.4 with a short
--auth-token-ttl, and against petcd once petcd serves the Auth service (skipped before)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from petcd.client import Client, PermissionType
from petcd.client.errors import (
    AuthFailedError,
    AuthNotEnabledError,
    PermissionDeniedError,
    RoleNotFoundError,
    UnimplementedError,
    UserNotFoundError,
)

from .conftest import BACKENDS, Connect

TTL = 2


def _setup_auth(address: str) -> None:
    with Client(address, timeout=10) as admin:
        try:
            admin.role_list()
        except UnimplementedError:
            pytest.skip("this petcd does not serve the Auth service yet")
        admin.user_add("root", "rootpw")
        admin.user_grant_role("root", "root")
        admin.role_add("rw")
        admin.role_grant_permission("rw", PermissionType.READWRITE, "a/", prefix=True)
        admin.user_add("alice", "alicepw")
        admin.user_grant_role("alice", "rw")
        assert admin.user_get("alice") == ["rw"]
        assert set(admin.user_list()) == {"root", "alice"}
        assert "rw" in admin.role_list()
        (perm,) = admin.role_get("rw")
        assert (perm.type, perm.key, perm.range_end) == (PermissionType.READWRITE, b"a/", b"a0")
        with pytest.raises(AuthNotEnabledError):
            admin.authenticate("alice", "alicepw")
        admin.auth_enable()


@pytest.mark.parametrize("kind", BACKENDS)
def test_admin_calls_and_token_expiry_during_watch(kind: str, members_factory: Any,
                                                   connect: Connect) -> None:
    (m,) = members_factory(kind, 1, ["--auth-token-ttl", str(TTL)])
    _setup_auth(m.address)
    with pytest.raises(AuthFailedError):
        Client(m.address, user="alice", password="wrong").get("a/x")
    c = connect(m.address, user="alice", password="alicepw", timeout=20)
    first = c.put("a/1", "1").header.revision
    w = c.watch("a/", prefix=True, start_revision=first)
    assert [e.kv.value for e in next(iter(w)).events] == [b"1"]
    with pytest.raises(PermissionDeniedError):
        c.put("b/1", "x")

    time.sleep(TTL + 1.5)  # the token expires: the next call authenticates again
    c.put("a/2", "2")
    assert [e.kv.value for e in next(iter(w)).events] == [b"2"]
    with c.watch("a/", prefix=True, start_revision=first) as late:  # created after expiry
        got = [e.kv.value for e in _take(late, 2)]
        assert got == [b"1", b"2"]

    # The member restarts (simple tokens are forgotten): the watch resumes after
    # authenticating again, from the revision after the last one it delivered.
    m.kill()
    m.start()
    c.put("a/3", "3")
    assert [e.kv.value for e in _take(w, 1)] == [b"3"]
    w.close()

    with Client(m.address, user="root", password="rootpw", timeout=10) as root:
        assert _enabled(root) in (True, None)
        root.role_revoke_permission("rw", "a/", prefix=True)
        assert root.role_get("rw") == []
        root.user_revoke_role("alice", "rw")
        root.user_change_password("alice", "newpw")
        root.user_delete("alice")
        with pytest.raises(UserNotFoundError):
            root.user_get("alice")
        root.role_delete("rw")
        with pytest.raises(RoleNotFoundError):
            root.role_get("rw")
        root.auth_disable()
    with Client(m.address) as anyone:
        assert _enabled(anyone) in (False, None)
        anyone.put("b/1", "x")


def _enabled(c: Client) -> bool | None:
    """AuthStatus (etcd 3.5's; None where the server lacks it, as etcd 3.4 does)."""
    try:
        return c.auth_status().enabled
    except UnimplementedError:
        return None


def _take(w: Any, n: int) -> list[Any]:
    out: list[Any] = []
    for batch in w:
        out.extend(batch.events)
        if len(out) >= n:
            return out
    raise AssertionError("watch ended")
