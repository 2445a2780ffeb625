"""The backend quota on the request path, as etcd checks it before proposing: a put, a
txn with puts (or a lease grant) that would take the backend past
--quota-backend-bytes makes this member raise its NOSPACE alarm (through the log, and
waited for), and is refused with "etcdserver: mvcc: database space exceeded".

Far below the quota a handler need not even parse: the request's length bounds its
cost. Only near the quota is the exact cost computed.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf.message import DecodeError

from petcd import errors
from petcd.api.grpc_call import abort
from petcd.api.kv import KVService
from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.server.alarm import KV_OVERHEAD, LEASE_OVERHEAD, cost_put, cost_txn, txn_upper_bound
from petcd.server.node import Node

__all__ = ["LEASE_OVERHEAD", "QuotaKVService", "check_quota"]

Context = grpc.aio.ServicerContext[Any, Any]


async def check_quota(node: Node, cost: int, context: Context) -> None:
    """Refuse (abort the call with NO_SPACE) a request costing `cost` bytes that does
    not fit, after raising the alarm. For LeaseGrant: cost = LEASE_OVERHEAD."""
    if node.maintenance.quota_available(cost):
        return
    await node.maintenance.raise_nospace()
    await abort(context, errors.NO_SPACE)


class QuotaKVService(KVService):
    """KVService with the quota checked in front of Put and Txn (etcd's quotaKVServer)."""

    async def Put(self, raw: bytes, context: Context) -> bytes:
        node = self._node
        if not node.maintenance.quota_fits_surely(KV_OVERHEAD + len(raw)):
            try:
                cost = cost_put(rpc.PutRequest.FromString(raw))
            except DecodeError:
                cost = 0  # the KV handler answers the decoding error
            await check_quota(node, cost, context)
        return await super().Put(raw, context)

    async def Txn(self, raw: bytes, context: Context) -> bytes:
        node = self._node
        if not node.maintenance.quota_fits_surely(txn_upper_bound(len(raw))):
            try:
                cost = cost_txn(rpc.TxnRequest.FromString(raw))
            except DecodeError:
                cost = 0
            await check_quota(node, cost, context)
        return await super().Txn(raw, context)
