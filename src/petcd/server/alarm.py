"""Alarms and the backend quota, as etcd has them.

- The alarm set (member ID, alarm type) lives in the LMDB database `alarm` (key: the
  serialized AlarmMember, as etcd keys its `alarm` bucket) and changes only by applying
  `alarm` log entries, so every member agrees and alarms survive restarts.
- While NOSPACE is active, the apply path refuses puts, txns with a put and lease
  grants (etcdserver: mvcc: database space exceeded); deletes, compactions and reads
  pass, so an operator can compact, defragment and disarm. While CORRUPT is active,
  every write is refused (etcdserver: corrupt cluster).
- The quota: a request that would push the backend past --quota-backend-bytes is
  refused on the request path (with a NOSPACE alarm proposed first); on the apply
  path it is applied but answered NOSPACE, and the alarm proposed. Both as etcd 3.4.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from petcd import errors
from petcd.mvcc.backend import Backend, WriteBatch
from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.server import proposal as P
from petcd.server.apply import Applier, Handler

log = logging.getLogger("petcd.alarm")

ALARM = "alarm"  # the InternalRequest kind
ALARM_DB = b"alarm"

DEFAULT_QUOTA_BYTES = 2 << 30  # --quota-backend-bytes 0
MAX_QUOTA_BYTES = 8 << 30  # beyond this etcd warns that performance may suffer
KV_OVERHEAD = 256  # etcd's estimate of a key's metadata, charged per put
LEASE_OVERHEAD = 64  # etcd's estimate of a lease, charged per grant

NOSPACE = rpc.NOSPACE
CORRUPT = rpc.CORRUPT


def cost_put(req: rpc.PutRequest) -> int:
    return KV_OVERHEAD + len(req.key) + len(req.value)


def cost_txn(req: rpc.TxnRequest) -> int:
    """The puts of the costlier branch (top level only, as etcd counts)."""
    def branch(ops: Any) -> int:
        return sum(cost_put(op.request_put) for op in ops
                   if op.WhichOneof("request") == "request_put")
    return max(branch(req.success), branch(req.failure))


def txn_upper_bound(raw_len: int) -> int:
    """A cost no txn of raw_len bytes can exceed: each put op takes at least 4 bytes
    on the wire (op tag and length, put tag and length) and its key and value bytes."""
    return KV_OVERHEAD * (raw_len // 4 + 1) + raw_len


def alarm_text(m: rpc.AlarmMember) -> str:
    """An alarm as etcd words it in StatusResponse.errors (protobuf compact text):
    'memberID:10276657743932975437 alarm:NOSPACE '."""
    out = ""
    if m.memberID:
        out += f"memberID:{m.memberID} "
    if m.alarm:
        out += f"alarm:{rpc.AlarmType.Name(m.alarm)} "
    return out


class Quota:
    """--quota-backend-bytes: 0 means 2 GiB, negative means no quota. The backend size
    (the data file's size, like bbolt's high-water mark in etcd) is refreshed after each
    commit and defragmentation, not read per request."""

    def __init__(self, backend: Backend, quota_bytes: int) -> None:
        self._backend = backend
        if quota_bytes == 0:
            quota_bytes = DEFAULT_QUOTA_BYTES
        self.limit: int | None = quota_bytes if quota_bytes > 0 else None
        if self.limit is not None and self.limit > MAX_QUOTA_BYTES:
            log.warning("backend quota %d exceeds the recommended maximum %d", self.limit,
                        MAX_QUOTA_BYTES)
        # What a request may cost and still fit (limit - size; no limit: any cost).
        self.headroom: float = float("inf")
        self.size = backend.size()
        # The file grows only when the backend commits.
        backend.commit_hooks.append(lambda _took: self.refresh())
        backend.reopen_hooks.append(self.refresh)

    @property
    def size(self) -> int:
        return self._size

    @size.setter
    def size(self, size: int) -> None:
        self._size = size
        self.headroom = float("inf") if self.limit is None else self.limit - size

    def refresh(self) -> None:
        self.size = self._backend.size()

    def available(self, cost: int) -> bool:
        """Whether a request costing `cost` bytes fits (etcd: size + cost < quota)."""
        limit = self.limit
        return cost == 0 or limit is None or self.size + cost < limit


class AlarmStore:
    """The persisted alarm set. Changes are made inside the apply batch and become
    visible to readers (Status, /health) when it ends."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self._db = backend.open_db(ALARM_DB)
        self._committed: tuple[rpc.AlarmMember, ...] = ()
        self._load()
        backend.listeners.append(self)
        backend.reopen_hooks.append(self._reopen)

    def _load(self) -> None:
        with self._backend.read() as txn:
            members = [rpc.AlarmMember.FromString(k) for k, _ in txn.cursor(db=self._db)]
        self._committed = tuple(members)
        self._working = self._committed  # the open batch's view

    def _reopen(self) -> None:
        self._db = self._backend.open_db(ALARM_DB)

    @property
    def active(self) -> tuple[rpc.AlarmMember, ...]:
        """Committed alarms (safe to read from any thread)."""
        return self._committed

    def has(self, alarm: int) -> bool:
        """Whether an alarm of this type is active in the working (apply) state."""
        return any(m.alarm == alarm for m in self._working)

    def get(self, alarm: int) -> list[rpc.AlarmMember]:
        """Alarms of a type (NONE: all), in (type, member) order."""
        found = [m for m in self._working if alarm == rpc.NONE or m.alarm == alarm]
        return sorted(found, key=lambda m: (m.alarm, m.memberID))

    def _find(self, member_id: int, alarm: int) -> rpc.AlarmMember | None:
        for m in self._working:
            if m.memberID == member_id and m.alarm == alarm:
                return m
        return None

    def activate(self, batch: WriteBatch, member_id: int, alarm: int) -> rpc.AlarmMember:
        found = self._find(member_id, alarm)
        if found is not None:
            return found
        m = rpc.AlarmMember(memberID=member_id, alarm=alarm)  # type: ignore[arg-type]
        batch.txn.put(m.SerializeToString(), b"", db=self._db)
        self._working = (*self._working, m)
        return m

    def deactivate(self, batch: WriteBatch, member_id: int,
                   alarm: int) -> rpc.AlarmMember | None:
        found = self._find(member_id, alarm)
        if found is None:
            return None
        batch.txn.delete(found.SerializeToString(), db=self._db)
        self._working = tuple(m for m in self._working if m is not found)
        return found

    # BatchListener
    def before_end(self, batch: WriteBatch) -> None:
        pass

    def after_end(self, batch: WriteBatch) -> None:
        self._committed = self._working

    def after_abort(self, batch: WriteBatch) -> None:
        self._working = self._committed


class Alarms:
    """The alarm store, the quota, and the gates they put in front of the apply
    handlers. `on_quota_exceeded` is called (on the apply thread) when an applied
    request went past the quota and no NOSPACE alarm is active yet: the member then
    proposes one."""

    def __init__(self, backend: Backend, applier: Applier, quota_bytes: int,
                 on_quota_exceeded: Callable[[], None]) -> None:
        self.store = AlarmStore(backend)
        self.quota = Quota(backend, quota_bytes)
        self._on_quota_exceeded = on_quota_exceeded
        # What the gates raise: CORRUPT refuses every write; NOSPACE refuses what grows
        # the store (etcd's capped and corrupt appliers).
        self._write_error: errors.EtcdError | None = None
        self._grow_error: errors.EtcdError | None = None
        self._update_gates()
        applier.register(ALARM, self.apply)
        applier.wrap(P.PUT, self._put_gate)
        applier.wrap(P.TXN, self._quota_gate(
            cost_txn, lambda req: txn_upper_bound(req.ByteSize())))
        applier.wrap("lease_grant", self._quota_gate(lambda req: LEASE_OVERHEAD))
        for kind in (P.DELETE_RANGE, P.COMPACTION, "lease_revoke"):
            applier.wrap(kind, self._gate_write)

    def reload(self) -> None:
        """A snapshot from the leader replaced the file: its alarms are the cluster's,
        and the gates follow them."""
        self.store._load()
        self._update_gates()

    def _update_gates(self) -> None:
        store = self.store
        self._nospace = store.has(NOSPACE)
        corrupt = store.has(CORRUPT)
        self._write_error = errors.CORRUPT if corrupt else None
        self._grow_error = errors.CORRUPT if corrupt else (
            errors.NO_SPACE if self._nospace else None)

    @property
    def nospace(self) -> bool:
        return self._nospace

    def apply(self, batch: WriteBatch, req: rpc.AlarmRequest) -> rpc.AlarmResponse:
        """The `alarm` apply handler (GET, ACTIVATE, DEACTIVATE)."""
        store = self.store
        resp = rpc.AlarmResponse()  # etcd leaves its header unset
        if req.action == rpc.AlarmRequest.GET:
            resp.alarms.extend(store.get(req.alarm))
        elif req.action == rpc.AlarmRequest.ACTIVATE:
            raised = not store.has(req.alarm)
            resp.alarms.append(store.activate(batch, req.memberID, req.alarm))
            if raised:
                log.warning("alarm %s raised by member %x", rpc.AlarmType.Name(req.alarm),
                            req.memberID)
        elif req.action == rpc.AlarmRequest.DEACTIVATE:
            m = store.deactivate(batch, req.memberID, req.alarm)
            if m is not None:
                resp.alarms.append(m)
                if not store.has(req.alarm):
                    log.warning("alarm %s disarmed (member %x)",
                                rpc.AlarmType.Name(req.alarm), req.memberID)
        self._update_gates()
        return resp

    # -- gates in front of the apply handlers

    def _exceeded(self) -> None:
        if not self._nospace:
            self._on_quota_exceeded()

    def _quota_gate(self, cost: Callable[[Any], int],
                    bound: Callable[[Any], int] | None = None) -> Callable[[Handler], Handler]:
        """A request that may grow the backend by cost(req): refused under CORRUPT (and
        under NOSPACE when it grows it at all); applied, then answered NO_SPACE when it
        took the backend past the quota (as etcd answers it). `bound(req)`, when given,
        is a cheap upper bound of the cost: with no alarm and far below the quota the
        exact cost (a pass over a txn's ops) is not computed."""
        quota = self.quota

        def wrap(inner: Handler) -> Handler:
            def gate(batch: WriteBatch, req: Any) -> Any:
                if (bound is not None and self._grow_error is None
                        and quota.available(bound(req))):
                    fits = True  # (no alarm: nothing to refuse; fits even at the bound)
                else:
                    size = cost(req)
                    refused = self._grow_error if size > 0 else self._write_error
                    if refused is not None:
                        raise refused()
                    fits = quota.available(size)
                resp = inner(batch, req)
                if fits:
                    return resp
                self._exceeded()
                return errors.NO_SPACE()
            return gate
        return wrap

    def _put_gate(self, inner: Handler) -> Handler:
        """The quota gate of a Put (as _quota_gate with cost_put), with its common case
        first: no alarm, and the put fits below the quota (one comparison)."""
        full = self._quota_gate(cost_put)(inner)
        quota = self.quota

        def gate(batch: WriteBatch, req: rpc.PutRequest) -> Any:
            if self._grow_error is None and \
                    KV_OVERHEAD + len(req.key) + len(req.value) < quota.headroom:
                return inner(batch, req)
            return full(batch, req)
        return gate

    def _gate_write(self, inner: Handler) -> Handler:
        def gate(batch: WriteBatch, req: Any) -> Any:
            if self._write_error is not None:
                raise self._write_error()
            return inner(batch, req)
        return gate
