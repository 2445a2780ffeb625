"""The backend quota on the request path, as etcd checks it before proposing: a put, a
txn with puts (or a lease grant) that would take the backend past
--quota-backend-bytes makes this member raise its NOSPACE alarm (through the log, and
waited for), and is refused with "etcdserver: mvcc: database space exceeded".

Far below the quota a handler need not even parse: the request's length bounds its
cost. Only near the quota is the exact cost computed.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from petcd import errors
from petcd.api.grpc_call import abort, starts_inline
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
    """KVService with the quota checked in front of Put and Txn (etcd's quotaKVServer).
    Far below the quota the KV handler's awaitable is returned as it is: no coroutine
    of this layer per call."""

    def __init__(self, node: Node, *, max_request_bytes: int, max_txn_ops: int) -> None:
        super().__init__(node, max_request_bytes=max_request_bytes, max_txn_ops=max_txn_ops)
        self._fits_surely = node.maintenance.quota_fits_surely

    @starts_inline
    def Put(self, raw: bytes, context: Context) -> Awaitable[bytes]:
        if self._fits_surely(KV_OVERHEAD + len(raw)):
            return KVService.Put(self, raw, context)
        return self._put_near_quota(raw, context)

    async def _put_near_quota(self, raw: bytes, context: Context) -> bytes:
        try:
            cost = cost_put(rpc.PutRequest.FromString(raw))
        except DecodeError:
            cost = 0  # the KV handler answers the decoding error
        await check_quota(self._node, cost, context)
        return await KVService.Put(self, raw, context)

    @starts_inline
    def Txn(self, raw: bytes, context: Context) -> Awaitable[bytes]:
        if self._fits_surely(txn_upper_bound(len(raw))):
            return KVService.Txn(self, raw, context)
        return self._txn_near_quota(raw, context)

    async def _txn_near_quota(self, raw: bytes, context: Context) -> bytes:
        try:
            cost = cost_txn(rpc.TxnRequest.FromString(raw))
        except DecodeError:
            cost = 0
        await check_quota(self._node, cost, context)
        return await KVService.Txn(self, raw, context)
