"""Applying the lease entries of the log (LeaseGrant, LeaseRevoke, LeaseCheckpoint), on
the event loop thread inside the batch's write transaction. Each handler raises
EtcdError having changed nothing, or returns the response (its header carries only
the revision; the server adds cluster, member and term)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from petcd.lease.lessor import Lessor
from petcd.mvcc.backend import WriteBatch
from petcd.mvcc.kvstore import KVStore
from petcd.pb.etcdserverpb import rpc_pb2 as rpc

# The InternalRequest oneof fields that carry lease requests.
LEASE_GRANT = "lease_grant"
LEASE_REVOKE = "lease_revoke"
LEASE_CHECKPOINT = "lease_checkpoint"

_GrantResponse = rpc.LeaseGrantResponse


class LeaseApplier:
    def __init__(self, lessor: Lessor, store: KVStore) -> None:
        self.lessor = lessor
        self.store = store

    def register(self, register: Callable[[str, Callable[[Any, Any], Any]], None]) -> None:
        """Route the lease kinds to this applier (pass `Applier.register`)."""
        register(LEASE_GRANT, self.grant)
        register(LEASE_REVOKE, self.revoke)
        register(LEASE_CHECKPOINT, self.checkpoint)

    def grant(self, batch: WriteBatch, req: rpc.LeaseGrantRequest) -> rpc.LeaseGrantResponse:
        lease = self.lessor.grant(batch, req.ID, req.TTL)
        resp = _GrantResponse()  # (fields set one by one: upb's keyword init costs more)
        resp.header.revision = self.store.working_revision
        resp.ID = lease.id
        resp.TTL = lease.ttl
        return resp

    def revoke(self, batch: WriteBatch, req: rpc.LeaseRevokeRequest) -> rpc.LeaseRevokeResponse:
        self.lessor.revoke(batch, self.store, req.ID)
        resp = rpc.LeaseRevokeResponse()
        resp.header.revision = self.store.working_revision
        return resp

    def checkpoint(self, batch: WriteBatch,
                   req: rpc.LeaseCheckpointRequest) -> rpc.LeaseCheckpointResponse:
        for cp in req.checkpoints:
            self.lessor.checkpoint(batch, cp.ID, cp.remaining_TTL)
        resp = rpc.LeaseCheckpointResponse()
        resp.header.revision = self.store.working_revision
        return resp
