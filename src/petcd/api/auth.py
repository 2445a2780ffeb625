"""etcdserverpb.Auth: enable/disable, status, authenticate, users and roles.

Changes are proposals applied by every member (petcd.auth.store). Passwords are
bcrypt-hashed here, on the member the client called, before proposing (etcd 3.5's
way), so neither the log, the WAL nor the backend ever holds one in clear. Reads
(UserGet/List, RoleGet/List, AuthStatus) are answered from this member's auth state
after a read barrier (etcd sends them through the log: the same linearizable answer).
While auth is enabled every change needs the root role; UserGet is also allowed for
the user themself, RoleGet for a holder of the role (etcd's rules)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import grpc
from google.protobuf.message import Message

from petcd import errors
from petcd.api.authz import Authorizer
from petcd.api.grpc_call import HeaderSuffix, abort, parse_request, read_barrier
from petcd.auth import apply as A
from petcd.auth.tokens import JwtTokens, SimpleTokens
from petcd.errors import EtcdError
from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.pb.internalpb.internal_pb2 import InternalAuthenticateRequest
from petcd.server.node import Node
from petcd.server.proposal import varint

log = logging.getLogger("petcd.auth")
Context = grpc.aio.ServicerContext[Any, Any]

_ANON = ("", 0)
# etcd's errors that have no gRPC mapping reach clients with code Unknown.
NO_PASSWORD_USER = EtcdError(
    grpc.StatusCode.UNKNOWN, "auth: authentication failed, password was given for no password user")
VERIFY_ONLY = EtcdError(grpc.StatusCode.UNKNOWN,
                        "auth: token signing attempted with verify-only key")
_RETRIES = 3


class AuthService:
    def __init__(self, node: Node) -> None:
        self._node = node
        self._store = node.auth
        self._authz = Authorizer(node)
        self.header = HeaderSuffix(node)

    def _answer(self, resp: Message) -> bytes:
        """resp + header {revision} + the constant header part."""
        body = b"\x18" + varint(self._node.revision)
        out: bytes = resp.SerializeToString() + b"\x0a" + varint(len(body)) + body
        return out + self.header.get()

    async def _admin(self, context: Context) -> tuple[str, int]:
        if not self._store.enabled:
            return _ANON
        try:
            return await self._authz.admin(context)
        except EtcdError as e:
            await abort(context, e)

    async def _change(self, kind: str, req: Message, context: Context,
                      raw: bytes | None = None) -> bytes:
        """A change (root only while auth is on) through the log; its answer."""
        stamp = await self._admin(context)
        return await self._propose(kind, req, stamp, context, raw)

    async def _propose(self, kind: str, req: Message, stamp: tuple[str, int],
                       context: Context, raw: bytes | None = None) -> bytes:
        result = await self._node.propose(kind, req.SerializeToString() if raw is None else raw,
                                          req, stamp)
        if type(result) is EtcdError:
            await abort(context, result)
        return self._answer(result)

    async def _names(self, context: Context, names: Callable[[], Iterable[str]]) -> list[str]:
        """UserList/RoleList: root only (with auth on), read after a barrier, byte order."""
        await self._admin(context)
        await read_barrier(self._node, context)
        return sorted(names(), key=str.encode)

    async def _hash_password(self, req: Any, no_password: bool = False) -> None:
        """Hash here, before proposing: the log never holds a password in clear (a hash
        the client sent is kept)."""
        if not no_password and (req.password or not req.hashedPassword):
            req.hashedPassword = await self._node.passwords.hash(req.password)
        req.password = ""

    # -- enable, disable, status
    async def AuthEnable(self, raw: bytes, context: Context) -> bytes:
        req = await parse_request(rpc.AuthEnableRequest, raw, context)
        return await self._change(A.AUTH_ENABLE, req, context, raw)

    async def AuthDisable(self, raw: bytes, context: Context) -> bytes:
        req = await parse_request(rpc.AuthDisableRequest, raw, context)
        return await self._change(A.AUTH_DISABLE, req, context, raw)

    async def AuthStatus(self, raw: bytes, context: Context) -> bytes:
        await parse_request(rpc.AuthStatusRequest, raw, context)
        await read_barrier(self._node, context)
        store = self._store
        return self._answer(rpc.AuthStatusResponse(enabled=store.enabled,
                                                   authRevision=store.revision))

    # -- authenticate
    async def Authenticate(self, raw: bytes, context: Context) -> bytes:
        req = await parse_request(rpc.AuthenticateRequest, raw, context)
        try:
            token = await self._authenticate(req.name, req.password)
        except EtcdError as e:
            await abort(context, e)
        return self._answer(rpc.AuthenticateResponse(token=token))

    async def _authenticate(self, name: str, password: str) -> str:
        node, store = self._node, self._store
        passwords, tokens = node.passwords, node.tokens
        barrier = node.read_barrier()
        if barrier is not None:
            await barrier
        for _ in range(_RETRIES):
            if not store.enabled:
                raise errors.AUTH_NOT_ENABLED()
            user = store.users.get(name)
            checked_rev = store.revision
            if user is None:
                log.warning("authentication failed: no user %r", name)
                raise errors.AUTH_FAILED()
            if user.options.no_password:
                raise NO_PASSWORD_USER()
            await passwords.wait_turn(name)
            ok = await passwords.check(user.password, password)
            passwords.record(name, ok)
            if not ok:
                log.warning("authentication failed: wrong password for user %r", name)
                raise errors.AUTH_FAILED()
            if isinstance(tokens, JwtTokens) and not tokens.can_sign:
                raise VERIFY_ONLY()
            ir = InternalAuthenticateRequest(name=name)
            if isinstance(tokens, SimpleTokens):
                ir.simple_token = tokens.new_prefix()
            result = await node.propose(A.AUTHENTICATE, ir.SerializeToString(), ir)
            if type(result) is EtcdError:
                raise result()
            if checked_rev != store.revision:
                continue  # the user changed while we checked: check again (as etcd)
            if isinstance(tokens, JwtTokens):
                return tokens.sign(name, checked_rev)
            return str(result.token)
        raise errors.AUTH_FAILED()

    # -- users
    async def UserAdd(self, raw: bytes, context: Context) -> bytes:
        req = await parse_request(rpc.AuthUserAddRequest, raw, context)
        stamp = await self._admin(context)
        await self._hash_password(req, req.HasField("options") and req.options.no_password)
        return await self._propose(A.USER_ADD, req, stamp, context)

    async def UserGet(self, raw: bytes, context: Context) -> bytes:
        req = await parse_request(rpc.AuthUserGetRequest, raw, context)
        await read_barrier(self._node, context)
        store = self._store
        await self._admin_or(context, lambda user: user == req.name)
        found = store.users.get(req.name)
        if found is None:
            await abort(context, errors.USER_NOT_FOUND)
        return self._answer(rpc.AuthUserGetResponse(roles=found.roles))

    async def _admin_or(self, context: Context, allowed: Callable[[str], bool]) -> None:
        """While auth is on: a root-role user, or one `allowed` (etcd lets users read
        themselves and their own roles)."""
        store = self._store
        if not store.enabled:
            return
        try:
            user, _ = await self._authz.who(context)
        except EtcdError as e:
            await abort(context, e)
        err = store.is_admin(user)
        if err is not None and not allowed(user):
            await abort(context, err)

    async def UserList(self, raw: bytes, context: Context) -> bytes:
        await parse_request(rpc.AuthUserListRequest, raw, context)
        names = await self._names(context, lambda: self._store.users)
        return self._answer(rpc.AuthUserListResponse(users=names))

    async def UserDelete(self, raw: bytes, context: Context) -> bytes:
        req = await parse_request(rpc.AuthUserDeleteRequest, raw, context)
        return await self._change(A.USER_DELETE, req, context, raw)

    async def UserChangePassword(self, raw: bytes, context: Context) -> bytes:
        req = await parse_request(rpc.AuthUserChangePasswordRequest, raw, context)
        stamp = await self._admin(context)
        await self._hash_password(req)
        return await self._propose(A.USER_CHANGE_PASSWORD, req, stamp, context)

    async def UserGrantRole(self, raw: bytes, context: Context) -> bytes:
        req = await parse_request(rpc.AuthUserGrantRoleRequest, raw, context)
        return await self._change(A.USER_GRANT_ROLE, req, context, raw)

    async def UserRevokeRole(self, raw: bytes, context: Context) -> bytes:
        req = await parse_request(rpc.AuthUserRevokeRoleRequest, raw, context)
        return await self._change(A.USER_REVOKE_ROLE, req, context, raw)

    # -- roles
    async def RoleAdd(self, raw: bytes, context: Context) -> bytes:
        req = await parse_request(rpc.AuthRoleAddRequest, raw, context)
        return await self._change(A.ROLE_ADD, req, context, raw)

    async def RoleGet(self, raw: bytes, context: Context) -> bytes:
        req = await parse_request(rpc.AuthRoleGetRequest, raw, context)
        await read_barrier(self._node, context)
        store = self._store
        await self._admin_or(context, lambda user: store.has_role(user, req.role))
        role = store.roles.get(req.role)
        if role is None:
            await abort(context, errors.ROLE_NOT_FOUND)
        return self._answer(rpc.AuthRoleGetResponse(perm=role.keyPermission))

    async def RoleList(self, raw: bytes, context: Context) -> bytes:
        await parse_request(rpc.AuthRoleListRequest, raw, context)
        names = await self._names(context, lambda: self._store.roles)
        return self._answer(rpc.AuthRoleListResponse(roles=names))

    async def RoleDelete(self, raw: bytes, context: Context) -> bytes:
        req = await parse_request(rpc.AuthRoleDeleteRequest, raw, context)
        return await self._change(A.ROLE_DELETE, req, context, raw)

    async def RoleGrantPermission(self, raw: bytes, context: Context) -> bytes:
        req = await parse_request(rpc.AuthRoleGrantPermissionRequest, raw, context)
        return await self._change(A.ROLE_GRANT_PERMISSION, req, context, raw)

    async def RoleRevokePermission(self, raw: bytes, context: Context) -> bytes:
        req = await parse_request(rpc.AuthRoleRevokePermissionRequest, raw, context)
        return await self._change(A.ROLE_REVOKE_PERMISSION, req, context, raw)

    def handler(self) -> grpc.GenericRpcHandler[Any, Any]:
        unary = grpc.unary_unary_rpc_method_handler
        names = ("AuthEnable", "AuthDisable", "AuthStatus", "Authenticate", "UserAdd",
                 "UserGet", "UserList", "UserDelete", "UserChangePassword", "UserGrantRole",
                 "UserRevokeRole", "RoleAdd", "RoleGet", "RoleList", "RoleDelete",
                 "RoleGrantPermission", "RoleRevokePermission")
        return grpc.method_handlers_generic_handler(
            "etcdserverpb.Auth", {n: unary(getattr(self, n)) for n in names})

