"""v3electionpb.Election: Campaign, Proclaim, Leader, Observe (a server stream) and
Resign, with etcd's semantics and errors. The recipe is petcd.server.concurrency's;
here only parsing and errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from petcd.api.grpc_call import abort
from petcd.api.lock import RecipeService
from petcd.errors import EtcdError
from petcd.pb.v3electionpb import v3election_pb2 as pb
from petcd.server.concurrency import MISSING_LEADER_KEY, as_plain

Context = grpc.aio.ServicerContext[Any, Any]


class ElectionService(RecipeService):
    async def Campaign(self, raw: bytes, context: Context) -> bytes:
        req = await self._parse(pb.CampaignRequest, raw, context)
        try:
            header, key, rev, lease = await self._recipes.campaign(req.name, req.lease,
                                                                   req.value)
        except EtcdError as e:
            await abort(context, as_plain(e))
        return pb.CampaignResponse(header=header, leader=pb.LeaderKey(
            name=req.name, key=key, rev=rev, lease=lease)).SerializeToString()

    async def Proclaim(self, raw: bytes, context: Context) -> bytes:
        req = await self._parse(pb.ProclaimRequest, raw, context)
        if not req.HasField("leader"):
            await abort(context, MISSING_LEADER_KEY)
        ld = req.leader
        try:
            header = await self._recipes.proclaim(ld.name, ld.key, ld.rev, ld.lease,
                                                  req.value)
        except EtcdError as e:
            await abort(context, as_plain(e))
        return pb.ProclaimResponse(header=header).SerializeToString()

    async def Leader(self, raw: bytes, context: Context) -> bytes:
        req = await self._parse(pb.LeaderRequest, raw, context)
        try:
            header, kv = await self._recipes.leader(req.name)
        except EtcdError as e:
            await abort(context, as_plain(e))
        return pb.LeaderResponse(header=header, kv=kv).SerializeToString()

    async def Observe(self, raw: bytes, context: Context) -> AsyncIterator[bytes]:
        req = await self._parse(pb.LeaderRequest, raw, context)
        try:
            async for header, kv in self._recipes.observe(req.name):
                yield pb.LeaderResponse(header=header, kv=kv).SerializeToString()
        except EtcdError as e:
            await abort(context, as_plain(e))

    async def Resign(self, raw: bytes, context: Context) -> bytes:
        req = await self._parse(pb.ResignRequest, raw, context)
        if not req.HasField("leader"):
            await abort(context, MISSING_LEADER_KEY)
        try:
            header = await self._recipes.resign(req.leader.key, req.leader.rev)
        except EtcdError as e:
            await abort(context, as_plain(e))
        return pb.ResignResponse(header=header).SerializeToString()

    def handler(self) -> grpc.GenericRpcHandler[Any, Any]:
        unary = grpc.unary_unary_rpc_method_handler
        return grpc.method_handlers_generic_handler("v3electionpb.Election", {
            "Campaign": unary(self.Campaign), "Proclaim": unary(self.Proclaim),
            "Leader": unary(self.Leader),
            "Observe": grpc.unary_stream_rpc_method_handler(self.Observe),
            "Resign": unary(self.Resign)})
