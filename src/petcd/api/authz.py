"""Who is calling, and may they: the API side of auth, used by every service while
auth is enabled (services test `node.auth.enabled` first: one attribute when it is off).

The caller is named by a token in the `token` gRPC metadata (etcd's clients) or
`authorization` (what the HTTP gateway passes the Authorization header as), else, with
--client-cert-auth, by the verified client certificate's common name (etcd's rule; a
token wins), else nobody. A check reads the auth revision first, checks the request
against the state, and returns the stamp the proposal carries: (user, that revision).
Applying refuses a stamp whose revision is no longer current (petcd.auth.apply).
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, TypeVar

import grpc

from petcd import errors
from petcd.auth import checks
from petcd.auth.store import AuthStore
from petcd.auth.tokens import SimpleTokens
from petcd.errors import EtcdError
from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.server.node import Node
from petcd.server.proposal import ANON, Stamp

Context = grpc.aio.ServicerContext[Any, Any]
R = TypeVar("R")
# (user name, token revision; 0 = the store's current one)
Who = tuple[str, int]
_NOBODY: Who = ("", 0)
TOKEN_KEYS = ("token", "authorization")


def token_of(context: Context) -> str | None:
    md = context.invocation_metadata()
    if md:
        for k, v in md:
            if k in TOKEN_KEYS:
                token = v.decode() if isinstance(v, bytes) else v
                if k == "authorization" and token[:7].lower() == "bearer ":
                    token = token[7:]
                return token
    return None


def common_name(context: Context) -> str | None:
    """The CN of the client's verified certificate, if the transport has one."""
    auth_context = getattr(context, "auth_context", None)
    if auth_context is None:
        return None
    try:
        names = auth_context().get("x509_common_name")
    except Exception:
        return None
    if not names:
        return None
    cn = names[0]
    return cn.decode() if isinstance(cn, bytes) else str(cn)


class Authorizer:
    def __init__(self, node: Node) -> None:
        self._node = node
        self.store: AuthStore = node.auth
        self.tokens = node.tokens
        # etcd names a caller by its certificate only with --client-cert-auth (a client
        # certificate required by --trusted-ca-file alone does not count).
        self._by_cn = node.opts.client_cert_auth

    async def who(self, context: Context) -> Who:
        """The caller; raises INVALID_AUTH_TOKEN for a token that is not (or no longer)
        valid. ("", 0) when nobody is named."""
        token = token_of(context)
        if token is None:
            cn = common_name(context) if self._by_cn else None
            return (cn, 0) if cn else _NOBODY
        tokens = self.tokens
        if isinstance(tokens, SimpleTokens):
            user = tokens.lookup(token)
            if user is None:
                info = tokens.parse(token)
                if info is None or info.index <= self._node.applied_index:
                    raise errors.INVALID_AUTH_TOKEN()
                # Issued through a member ahead of us: wait until we applied it.
                barrier = self._node.read_barrier()
                if barrier is not None:
                    await barrier
                user = tokens.lookup(token)
                if user is None:
                    raise errors.INVALID_AUTH_TOKEN()
            return (user, 0)
        info = tokens.parse(token)
        if info is None:
            raise errors.INVALID_AUTH_TOKEN()
        return (info.user, info.revision)

    async def check(self, context: Context,
                    check: Callable[[AuthStore, str, int, R], EtcdError | None],
                    request: R) -> tuple[str, int]:
        """Raise the error refusing `request`, or return its stamp."""
        user, token_rev = await self.who(context)
        store = self.store
        rev = store.revision
        err = check(store, user, token_rev or (rev if user else 0), request)
        if err is not None:
            raise err
        return (user, rev)

    async def admin(self, context: Context) -> tuple[str, int]:
        """Only a user with the root role (etcd's IsAdminPermitted); returns the stamp."""
        user, _ = await self.who(context)
        store = self.store
        rev = store.revision
        err = store.is_admin(user)
        if err is not None:
            raise err
        return (user, rev)


# etcd's auth package errors, for the calls where etcd hands them to gRPC unconverted
# (its maintenance server): clients see code Unknown and these words.
_UNCONVERTED = {
    errors.USER_EMPTY: "auth: user name is empty",
    errors.USER_NOT_FOUND: "auth: user not found",
    errors.PERMISSION_DENIED: "auth: permission denied",
    errors.INVALID_AUTH_TOKEN: "auth: invalid auth token",
}


async def require_admin(authz: Authorizer, context: Context, *,
                        unconverted: bool = False) -> None:
    """With auth enabled, end the call unless the caller has the root role.
    `unconverted`: answer as etcd's maintenance server does (see _UNCONVERTED)."""
    if authz.store.enabled:
        try:
            await authz.admin(context)
        except EtcdError as e:
            if unconverted and e.kind in _UNCONVERTED:
                await context.abort(grpc.StatusCode.UNKNOWN, _UNCONVERTED[e.kind])
            await context.abort(e.code, e.message)


# The caller of a Lock or Election call, for the KV steps the recipes make on its
# behalf (petcd.server.concurrency calls Access.authorize before each, as etcd's lock
# and election servers call KV with the caller's token). Set per call, in its task.
CALLER: ContextVar[Who | None] = ContextVar("petcd_auth_caller", default=None)


async def bind_caller(authz: Authorizer, context: Context) -> None:
    """Name this call's caller for the recipe steps (auth enabled; raises EtcdError)."""
    if authz.store.enabled:
        CALLER.set(await authz.who(context))


def recipe_checker(authz: Authorizer) -> Callable[[object], Stamp]:
    """Access.authorize for the recipes: checks a step as the KV service would for the
    bound caller and returns the stamp its proposal carries."""
    store = authz.store

    def authorize(request: object) -> Stamp:
        if not store.enabled:
            return ANON
        user, token_rev = CALLER.get() or _NOBODY
        rev = store.revision
        as_rev = token_rev or (rev if user else 0)
        err: EtcdError | None = None
        if isinstance(request, rpc.TxnRequest):
            err = checks.check_txn(store, user, as_rev, request)
        elif isinstance(request, rpc.DeleteRangeRequest):
            err = checks.check_delete(store, user, as_rev, request)
        elif isinstance(request, rpc.RangeRequest):
            err = checks.check_range(store, user, as_rev, request)
        if err is not None:
            raise err
        return (user, rev)

    return authorize
