"""Applying auth entries of the log, and the permission gate every applied client
request passes while auth is enabled.

The gate is etcd's apply-time check done the cheap way: the proposing member checked
the request's permissions at auth revision R and stamped R into the entry. Every
member's auth state at revision R is the same (it is applied from the same log), so
if the store is still at R when the entry applies, that check holds and nothing is
re-checked; if the revision moved on, the request is refused with "revision of auth
store is old" (as etcd refuses it), and the client retries with a fresh token. Only
what depends on data rather than auth state is re-checked at apply: the keys attached
to a lease that is revoked or attached to a new key.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from petcd import errors
from petcd.auth import checks
from petcd.auth.store import AuthStore
from petcd.auth.tokens import SimpleTokens, TokenProvider
from petcd.errors import EtcdError
from petcd.mvcc.backend import WriteBatch
from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.pb.internalpb.internal_pb2 import InternalAuthenticateRequest

AUTH_ENABLE = "auth_enable"
AUTH_DISABLE = "auth_disable"
AUTHENTICATE = "authenticate"
USER_ADD = "auth_user_add"
USER_DELETE = "auth_user_delete"
USER_CHANGE_PASSWORD = "auth_user_change_password"
USER_GRANT_ROLE = "auth_user_grant_role"
USER_REVOKE_ROLE = "auth_user_revoke_role"
ROLE_ADD = "auth_role_add"
ROLE_DELETE = "auth_role_delete"
ROLE_GRANT_PERMISSION = "auth_role_grant_permission"
ROLE_REVOKE_PERMISSION = "auth_role_revoke_permission"

# Requests only a user with the root role may make (etcd's needAdminPermission, plus
# compaction: petcd refuses it to other users, etcd 3.4 does not check it).
ADMIN_KINDS = frozenset({
    AUTH_ENABLE, AUTH_DISABLE, USER_ADD, USER_DELETE, USER_CHANGE_PASSWORD,
    USER_GRANT_ROLE, USER_REVOKE_ROLE, ROLE_ADD, ROLE_DELETE, ROLE_GRANT_PERMISSION,
    ROLE_REVOKE_PERMISSION, "compaction"})
# Checked against the keys they touch.
KEY_KINDS = frozenset({"put", "delete_range", "txn"})

# (user name, auth revision of the proposer's check); None: a member's own request.
Stamp = tuple[str, int] | None
LeaseKeys = Callable[[int], list[bytes]]


class AuthApplier:
    def __init__(self, store: AuthStore, tokens: TokenProvider, current_index: Callable[[], int],
                 lease_keys: LeaseKeys) -> None:
        self.store = store
        self.tokens = tokens
        self._index = current_index
        self._lease_keys = lease_keys

    def register(self, register: Callable[[str, Callable[[Any, Any], Any]], None]) -> None:
        s = self.store
        register(AUTH_ENABLE, s.enable)
        register(AUTH_DISABLE, s.disable)
        register(AUTHENTICATE, self.authenticate)
        register(USER_ADD, s.user_add)
        register(USER_DELETE, s.user_delete)
        register(USER_CHANGE_PASSWORD, s.user_change_password)
        register(USER_GRANT_ROLE, s.user_grant_role)
        register(USER_REVOKE_ROLE, s.user_revoke_role)
        register(ROLE_ADD, s.role_add)
        register(ROLE_DELETE, s.role_delete)
        register(ROLE_GRANT_PERMISSION, s.role_grant_permission)
        register(ROLE_REVOKE_PERMISSION, s.role_revoke_permission)

    def authenticate(self, _batch: WriteBatch,
                     req: InternalAuthenticateRequest) -> rpc.AuthenticateResponse:
        store = self.store
        if not store.enabled:
            raise errors.AUTH_NOT_ENABLED()
        user = store.users.get(req.name)
        if user is None or user.options.no_password:
            raise errors.AUTH_FAILED()
        resp = rpc.AuthenticateResponse()
        if req.simple_token and isinstance(self.tokens, SimpleTokens):
            token = f"{req.simple_token}.{self._index()}"
            self.tokens.assign(token, req.name)
            resp.token = token
        return resp  # a JWT is signed by the proposing member once this is applied

    def gate(self, kind: str, request: Any, stamp: Stamp) -> EtcdError | None:
        """With auth enabled: the error refusing this applied request, or None."""
        if stamp is None:
            return None  # a member's own request (lease expiry, alarm, checkpoint)
        store = self.store
        user, rev = stamp
        if kind in KEY_KINDS:
            if rev == 0:
                return errors.USER_EMPTY()
            if rev < store.revision:
                return errors.AUTH_OLD_REVISION()
            if kind == "put" and request.lease:
                return checks.check_keys_writable(store, user, rev,
                                                  self._lease_keys(request.lease))
            return None
        if kind in ADMIN_KINDS:
            if rev == store.revision and rev != 0:
                return None
            return store.is_admin(user)  # etcd re-checks the admin role at apply
        if kind == "lease_revoke":
            keys = self._lease_keys(request.ID)
            return checks.check_keys_writable(store, user, rev, keys) if keys else None
        return None
