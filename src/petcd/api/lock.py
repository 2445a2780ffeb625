"""v3lockpb.Lock: Lock blocks until the caller's lease holds the named lock and answers
the owner key `name/<lease hex>`; Unlock deletes a key. The recipe is
petcd.server.concurrency's; here only parsing and errors."""

from __future__ import annotations

from typing import Any

import grpc

from petcd import errors
from petcd.api.authz import Authorizer, bind_caller
from petcd.api.grpc_call import abort, parse_request
from petcd.errors import EtcdError
from petcd.pb.v3lockpb import v3lock_pb2 as pb
from petcd.server.concurrency import Recipes, as_plain
from petcd.server.proposal import entry_size

Context = grpc.aio.ServicerContext[Any, Any]


class RecipeService:
    """What the Lock and Election services share: size check, parsing, and (auth
    enabled) naming the caller, so that every KV step the recipe takes for this call is
    checked and stamped as the caller's (api.authz.recipe_checker behind
    Access.authorize), as etcd's lock and election servers call KV with its token."""

    def __init__(self, recipes: Recipes, *, max_request_bytes: int,
                 authz: Authorizer | None = None) -> None:
        self._recipes = recipes
        self._max_request_bytes = max_request_bytes
        self._authz = authz

    async def _parse(self, cls: Any, raw: bytes, context: Context) -> Any:
        if entry_size(len(raw)) > self._max_request_bytes:
            await abort(context, errors.REQUEST_TOO_LARGE)
        req = await parse_request(cls, raw, context)
        if self._authz is not None:
            try:
                await bind_caller(self._authz, context)
            except EtcdError as e:
                await abort(context, as_plain(e))
        return req


class LockService(RecipeService):
    async def Lock(self, raw: bytes, context: Context) -> bytes:
        req = await self._parse(pb.LockRequest, raw, context)
        try:
            header, key = await self._recipes.lock(req.name, req.lease)
        except EtcdError as e:
            await abort(context, as_plain(e))
        return pb.LockResponse(header=header, key=key).SerializeToString()

    async def Unlock(self, raw: bytes, context: Context) -> bytes:
        req = await self._parse(pb.UnlockRequest, raw, context)
        if not req.key:
            await abort(context, as_plain(errors.EMPTY_KEY))
        try:
            header = await self._recipes.unlock(req.key)
        except EtcdError as e:
            await abort(context, as_plain(e))
        return pb.UnlockResponse(header=header).SerializeToString()

    def handler(self) -> grpc.GenericRpcHandler[Any, Any]:
        unary = grpc.unary_unary_rpc_method_handler
        return grpc.method_handlers_generic_handler("v3lockpb.Lock", {
            "Lock": unary(self.Lock), "Unlock": unary(self.Unlock)})
