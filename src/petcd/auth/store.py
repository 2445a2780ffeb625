"""The auth state machine: users, roles, permissions, the enabled flag and the auth
revision. Changed only by applying log entries (on the apply thread, inside the batch's
LMDB write transaction, so a batch changes auth state and data together or not at all);
read by the API layer on the event loop for permission checks.

LMDB databases (named as etcd's bbolt buckets): `auth` (`enabled`, `authRevision`),
`authUsers` (name -> authpb.User), `authRoles` (name -> authpb.Role).

Readers on another thread see whole values: a change builds new objects and swaps them
in, and bumps `revision` last. So a reader that reads `revision` first, then checks
permissions, stamps its request with a revision no newer than the state it saw; the
apply of that request refuses it if the revision moved meanwhile (etcd's rule).
"""

from __future__ import annotations

import bisect
import logging
import struct
from collections.abc import Callable
from typing import Any

from petcd import errors
from petcd.auth.perms import UserPerms
from petcd.mvcc.backend import Backend, WriteBatch
from petcd.pb.authpb.auth_pb2 import Permission, Role, User, UserAddOptions
from petcd.pb.etcdserverpb import rpc_pb2 as rpc

log = logging.getLogger("petcd.auth")

AUTH_DB = b"auth"
USERS_DB = b"authUsers"
ROLES_DB = b"authRoles"
_ENABLED = b"authEnabled"
_REVISION = b"authRevision"
_U64 = struct.Struct(">Q")

ROOT = "root"
EtcdErrorOrNone = errors.EtcdError | None


def has_root_role(user: User) -> bool:
    i = bisect.bisect_left(user.roles, ROOT)
    return i < len(user.roles) and user.roles[i] == ROOT


class AuthStore:
    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self.enabled = False
        # Starts at 1 (etcd's first revision), so that 0 can mean "no user".
        self.revision = 1
        self.users: dict[str, User] = {}
        self.roles: dict[str, Role] = {}
        # user name -> merged permissions; None for users with the root role.
        self._perms: dict[str, UserPerms | None] = {}
        # Called (on the apply thread) with a user name whose tokens must stop working
        # (deleted, password changed), and with None when auth is disabled (all tokens).
        self.invalidate_listeners: list[Callable[[str | None], None]] = []
        self._open_dbs()
        self.load()
        backend.reopen_hooks.append(self._open_dbs)

    def _open_dbs(self) -> None:
        self._auth_db = self._backend.open_db(AUTH_DB)
        self._users_db = self._backend.open_db(USERS_DB)
        self._roles_db = self._backend.open_db(ROLES_DB)

    def load(self) -> None:
        """(Re)read everything from the backend: at start and after a snapshot install."""
        with self._backend.read() as txn:
            enabled = txn.get(_ENABLED, db=self._auth_db) == b"\x01"
            raw_rev = txn.get(_REVISION, db=self._auth_db)
            users = {k.decode(): User.FromString(v)
                     for k, v in txn.cursor(db=self._users_db)}
            roles = {k.decode(): Role.FromString(v)
                     for k, v in txn.cursor(db=self._roles_db)}
        was_enabled = self.enabled
        self.users, self.roles = users, roles
        self._refresh_perms()
        self.enabled = enabled
        self.revision = max(1, _U64.unpack(raw_rev)[0]) if raw_rev else 1
        if was_enabled:
            self._invalidate(None)  # tokens of the replaced state mean nothing now

    # -- reads (any thread)
    def perms(self, name: str) -> UserPerms | bool | None:
        """The user's merged permissions, None for root-role users, False if unknown."""
        return self._perms.get(name, False)

    def is_admin(self, name: str) -> EtcdErrorOrNone:
        """etcd's IsAdminPermitted (auth enabled): the user exists and has the root role."""
        if not name:
            return errors.USER_EMPTY()
        user = self.users.get(name)
        if user is None:
            return errors.USER_NOT_FOUND()
        if not has_root_role(user):
            return errors.PERMISSION_DENIED()
        return None

    def has_role(self, name: str, role: str) -> bool:
        user = self.users.get(name)
        return user is not None and role in user.roles

    # -- applying (apply thread, inside `batch`)
    def _bump(self, batch: WriteBatch) -> None:
        rev = self.revision + 1
        batch.txn.put(_REVISION, _U64.pack(rev), db=self._auth_db)
        self.revision = rev

    def _put_user(self, batch: WriteBatch, user: User) -> None:
        batch.txn.put(user.name, user.SerializeToString(), db=self._users_db)
        users = dict(self.users)
        users[user.name.decode()] = user
        self.users = users

    def _put_role(self, batch: WriteBatch, role: Role) -> None:
        batch.txn.put(role.name, role.SerializeToString(), db=self._roles_db)
        roles = dict(self.roles)
        roles[role.name.decode()] = role
        self.roles = roles

    def _refresh_perms(self) -> None:
        perms: dict[str, UserPerms | None] = {}
        roles = self.roles
        for name, user in self.users.items():
            if has_root_role(user):
                perms[name] = None
                continue
            granted: list[Permission] = []
            for r in user.roles:
                role = roles.get(r)
                if role is not None:
                    granted.extend(role.keyPermission)
            perms[name] = UserPerms(granted)
        self._perms = perms

    def _changed(self, batch: WriteBatch) -> None:
        self._refresh_perms()
        self._bump(batch)

    def _invalidate(self, name: str | None) -> None:
        for listener in self.invalidate_listeners:
            listener(name)

    def _user(self, name: str) -> User:
        user = self.users.get(name)
        if user is None:
            raise errors.USER_NOT_FOUND()
        return user

    def _role(self, name: str) -> Role:
        role = self.roles.get(name)
        if role is None:
            raise errors.ROLE_NOT_FOUND()
        return role

    def enable(self, batch: WriteBatch, _req: Any) -> rpc.AuthEnableResponse:
        if not self.enabled:
            root = self.users.get(ROOT)
            if root is None:
                raise errors.ROOT_USER_NOT_EXIST()
            if not has_root_role(root):
                raise errors.ROOT_ROLE_NOT_EXIST()
            batch.txn.put(_ENABLED, b"\x01", db=self._auth_db)
            self.enabled = True  # etcd does not move the revision here
            log.info("enabled authentication")
        return rpc.AuthEnableResponse()

    def disable(self, batch: WriteBatch, _req: Any) -> rpc.AuthDisableResponse:
        if self.enabled:
            batch.txn.put(_ENABLED, b"\x00", db=self._auth_db)
            self._bump(batch)
            self.enabled = False
            self._invalidate(None)
            log.info("disabled authentication")
        return rpc.AuthDisableResponse()

    def user_add(self, batch: WriteBatch, req: rpc.AuthUserAddRequest) -> rpc.AuthUserAddResponse:
        if not req.name:
            raise errors.USER_EMPTY()
        if req.name in self.users:
            raise errors.USER_ALREADY_EXIST()
        no_password = req.HasField("options") and req.options.no_password
        user = User(name=req.name.encode(), options=UserAddOptions(no_password=no_password))
        if not no_password:
            # Hashed by the proposing member: the log never holds the password.
            user.password = req.hashedPassword.encode()
        self._put_user(batch, user)
        self._changed(batch)
        log.info("added user %r", req.name)
        return rpc.AuthUserAddResponse()

    def user_delete(self, batch: WriteBatch,
                    req: rpc.AuthUserDeleteRequest) -> rpc.AuthUserDeleteResponse:
        if self.enabled and req.name == ROOT:
            raise errors.INVALID_AUTH_MGMT()
        self._user(req.name)
        batch.txn.delete(req.name.encode(), db=self._users_db)
        users = dict(self.users)
        del users[req.name]
        self.users = users
        self._changed(batch)
        self._invalidate(req.name)
        log.info("deleted user %r", req.name)
        return rpc.AuthUserDeleteResponse()

    def user_change_password(self, batch: WriteBatch, req: rpc.AuthUserChangePasswordRequest
                             ) -> rpc.AuthUserChangePasswordResponse:
        old = self._user(req.name)
        user = User(name=old.name, roles=old.roles, options=old.options,
                    password=req.hashedPassword.encode())
        self._put_user(batch, user)
        self._changed(batch)
        self._invalidate(req.name)
        log.info("changed the password of user %r", req.name)
        return rpc.AuthUserChangePasswordResponse()

    def user_grant_role(self, batch: WriteBatch,
                        req: rpc.AuthUserGrantRoleRequest) -> rpc.AuthUserGrantRoleResponse:
        old = self._user(req.user)
        if req.role != ROOT:
            self._role(req.role)
        if req.role in old.roles:
            return rpc.AuthUserGrantRoleResponse()  # nothing changes (nor the revision)
        roles = sorted([*old.roles, req.role])
        self._put_user(batch, User(name=old.name, password=old.password, options=old.options,
                                   roles=roles))
        self._changed(batch)
        return rpc.AuthUserGrantRoleResponse()

    def user_revoke_role(self, batch: WriteBatch,
                         req: rpc.AuthUserRevokeRoleRequest) -> rpc.AuthUserRevokeRoleResponse:
        if self.enabled and req.name == ROOT and req.role == ROOT:
            raise errors.INVALID_AUTH_MGMT()
        old = self._user(req.name)
        if req.role not in old.roles:
            raise errors.ROLE_NOT_GRANTED()
        roles = [r for r in old.roles if r != req.role]
        self._put_user(batch, User(name=old.name, password=old.password, options=old.options,
                                   roles=roles))
        self._changed(batch)
        return rpc.AuthUserRevokeRoleResponse()

    def role_add(self, batch: WriteBatch, req: rpc.AuthRoleAddRequest) -> rpc.AuthRoleAddResponse:
        if not req.name:
            raise errors.ROLE_EMPTY()
        if req.name in self.roles:
            raise errors.ROLE_ALREADY_EXIST()
        self._put_role(batch, Role(name=req.name.encode()))
        self._changed(batch)
        return rpc.AuthRoleAddResponse()

    def role_delete(self, batch: WriteBatch,
                    req: rpc.AuthRoleDeleteRequest) -> rpc.AuthRoleDeleteResponse:
        if self.enabled and req.role == ROOT:
            raise errors.INVALID_AUTH_MGMT()
        self._role(req.role)
        batch.txn.delete(req.role.encode(), db=self._roles_db)
        roles = dict(self.roles)
        del roles[req.role]
        self.roles = roles
        for user in list(self.users.values()):
            if req.role in user.roles:
                self._put_user(batch, User(
                    name=user.name, password=user.password, options=user.options,
                    roles=[r for r in user.roles if r != req.role]))
        self._changed(batch)
        return rpc.AuthRoleDeleteResponse()

    def role_grant_permission(self, batch: WriteBatch, req: rpc.AuthRoleGrantPermissionRequest
                              ) -> rpc.AuthRoleGrantPermissionResponse:
        old = self._role(req.name)
        perms = [Permission(permType=p.permType, key=p.key, range_end=p.range_end)
                 for p in old.keyPermission]
        new = req.perm
        for p in perms:
            if p.key == new.key and p.range_end == new.range_end:
                p.permType = new.permType
                break
        else:
            perms.append(Permission(permType=new.permType, key=new.key,
                                    range_end=new.range_end))
            perms.sort(key=lambda p: p.key)
        self._put_role(batch, Role(name=old.name, keyPermission=perms))
        self._changed(batch)
        return rpc.AuthRoleGrantPermissionResponse()

    def role_revoke_permission(self, batch: WriteBatch, req: rpc.AuthRoleRevokePermissionRequest
                               ) -> rpc.AuthRoleRevokePermissionResponse:
        old = self._role(req.role)
        kept = [p for p in old.keyPermission
                if not (p.key == req.key and p.range_end == req.range_end)]
        if len(kept) == len(old.keyPermission):
            raise errors.PERMISSION_NOT_GRANTED()
        self._put_role(batch, Role(name=old.name, keyPermission=kept))
        self._changed(batch)
        return rpc.AuthRoleRevokePermissionResponse()

