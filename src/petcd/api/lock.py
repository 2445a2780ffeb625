"""v3lockpb.Lock: Lock blocks until the caller's lease holds the named lock and answers
the owner key `name/<lease hex>`; Unlock deletes a key. The recipe is
petcd.server.concurrency's; here only parsing and errors."""

from __future__ import annotations

from typing import Any

import grpc

from petcd import errors
from petcd.api.authz import Authorizer
from petcd.api.kv import abort, parse_request
from petcd.auth.checks import permitted
from petcd.auth.store import AuthStore
from petcd.errors import EtcdError
from petcd.pb.v3lockpb import v3lock_pb2 as pb
from petcd.server.concurrency import Recipes, as_plain
from petcd.server.proposal import entry_size
from petcd.server.watch import prefix_end

Context = grpc.aio.ServicerContext[Any, Any]


def check_recipe(store: AuthStore, user: str, rev: int,
                 req: tuple[bytes, bytes, bool]) -> EtcdError | None:
    """What etcd's lock and election servers need through their in-process client: READ
    on the keys they read (and compare), WRITE too where they write."""
    key, end, write = req
    err = permitted(store, user, rev, key, end, False)
    if err is None and write:
        err = permitted(store, user, rev, key, end, True)
    return err


class RecipeService:
    """What the Lock and Election services share: size check, parsing, and the auth
    check of the keys a call touches (while auth is enabled)."""

    def __init__(self, recipes: Recipes, *, max_request_bytes: int) -> None:
        self._recipes = recipes
        self._max_request_bytes = max_request_bytes
        self._authz: Authorizer | None = None

    async def _parse(self, cls: Any, raw: bytes, context: Context) -> Any:
        if entry_size(len(raw)) > self._max_request_bytes:
            await abort(context, errors.REQUEST_TOO_LARGE)
        return await parse_request(cls, raw, context)

    async def _authorize(self, context: Context, key: bytes, *, prefix: bool,
                         write: bool) -> None:
        node = self._recipes.access.node
        if not node.auth.enabled:
            return
        if self._authz is None:
            self._authz = Authorizer(node)
        end = prefix_end(key) if prefix else b""
        try:
            await self._authz.check(context, check_recipe, (key, end, write))
        except EtcdError as e:
            await abort(context, as_plain(e))


class LockService(RecipeService):
    async def Lock(self, raw: bytes, context: Context) -> bytes:
        req = await self._parse(pb.LockRequest, raw, context)
        await self._authorize(context, req.name + b"/", prefix=True, write=True)
        try:
            header, key = await self._recipes.lock(req.name, req.lease)
        except EtcdError as e:
            await abort(context, as_plain(e))
        return pb.LockResponse(header=header, key=key).SerializeToString()

    async def Unlock(self, raw: bytes, context: Context) -> bytes:
        req = await self._parse(pb.UnlockRequest, raw, context)
        if not req.key:
            await abort(context, as_plain(errors.EMPTY_KEY))
        await self._authorize(context, req.key, prefix=False, write=True)
        try:
            header = await self._recipes.unlock(req.key)
        except EtcdError as e:
            await abort(context, as_plain(e))
        return pb.UnlockResponse(header=header).SerializeToString()

    def handler(self) -> grpc.GenericRpcHandler[Any, Any]:
        unary = grpc.unary_unary_rpc_method_handler
        return grpc.method_handlers_generic_handler("v3lockpb.Lock", {
            "Lock": unary(self.Lock), "Unlock": unary(self.Unlock)})
