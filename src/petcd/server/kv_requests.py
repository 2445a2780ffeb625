"""KVRequests executes etcd's KV requests (Range, Put, DeleteRange, Txn, Compaction)
against the MVCC store, with etcd's exact semantics and response shapes: reads straight
on the applied state (Node.range/read_txn), writes when their log entry is applied.

Writes run inside the apply loop's WriteBatch; a request that raises
EtcdError leaves nothing behind in the batch. Responses carry only
header.revision; the server fills cluster_id, member_id and raft_term.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from petcd import errors
from petcd.mvcc.backend import WriteBatch
from petcd.mvcc.kvstore import KVStore, KVView
from petcd.mvcc.write import put_request
from petcd.pb.etcdserverpb import rpc_pb2 as pb
from petcd.pb.mvccpb.kv_pb2 import KeyValue
from petcd.pb.wire import varint
from petcd.server.range_encode import RangeStream, encode_range
from petcd.server.txn_plan import Plan, check_ranges, flatten, holds, plan, plan_ops, range_end

_NONE = pb.RangeRequest.NONE
_ASCEND = pb.RangeRequest.ASCEND
_DESCEND = pb.RangeRequest.DESCEND
_SORT_KEY = pb.RangeRequest.KEY
_SORT_FIELDS: dict[int, Callable[[KeyValue], Any]] = {
    pb.RangeRequest.KEY: lambda kv: kv.key,
    pb.RangeRequest.VERSION: lambda kv: kv.version,
    pb.RangeRequest.CREATE: lambda kv: kv.create_revision,
    pb.RangeRequest.MOD: lambda kv: kv.mod_revision,
    pb.RangeRequest.VALUE: lambda kv: kv.value,
}

_ONE_BYTE = [bytes((n,)) for n in range(0x80)]
_TXN_PARSE = pb.TxnResponse.FromString
_PUT_RESPONSE = pb.PutResponse


class KVRequests:
    """The KV service's state machine. `lessor` stays None until leases
    exist (issue 7); until then any request naming a lease fails with
    LEASE_NOT_FOUND, as no lease can exist."""

    def __init__(self, store: KVStore, *, compact_budget: int | None = None,
                 compact_step_time: float = 0.005) -> None:
        self.store = store
        # None: a compaction removes everything within its batch. A number:
        # it visits that many index keys (for at most compact_step_time
        # seconds), and the apply loop must call store.compact_step() in later
        # batches until physically_compacted.
        self.compact_budget = compact_budget
        self.compact_step_time = compact_step_time
        # Requests seen (etcd_mvcc_*_total): plain ints, read when /metrics is scraped.
        self.puts = self.deletes = self.ranges = self.txns = 0

    def _check_lease(self, lease: int) -> None:
        if lease:
            lessor = self.store.lessor
            if lessor is None or not lessor.lease_exists(lease):
                raise errors.LEASE_NOT_FOUND()

    # -- Put / DeleteRange -----------------------------------------------------------

    def put(self, batch: WriteBatch, req: pb.PutRequest) -> pb.PutResponse:
        self.puts += 1
        lease = req.lease
        if lease:
            self._check_lease(lease)
        rev, prev = put_request(self.store, batch, req.key, req.value, lease,
                                req.ignore_value, req.ignore_lease)
        resp = _PUT_RESPONSE()
        resp.header.revision = rev
        if prev is not None and req.prev_kv:
            resp.prev_kv.MergeFromString(prev)
        return resp

    def delete_range(
        self, batch: WriteBatch, req: pb.DeleteRangeRequest
    ) -> pb.DeleteRangeResponse:
        self.deletes += 1
        with self.store.write(batch) as tw:
            resp = pb.DeleteRangeResponse()
            self._delete_into(tw, req, resp)
        return resp

    @staticmethod
    def _delete_into(tw: Any, req: pb.DeleteRangeRequest, resp: pb.DeleteRangeResponse) -> None:
        deleted, prevs = tw.delete_range(req.key, range_end(req.range_end))
        resp.header.revision = tw.rev
        resp.deleted = deleted
        if req.prev_kv:
            for raw in prevs:
                resp.prev_kvs.add().MergeFromString(raw)

    # -- Range -------------------------------------------------------------------------

    def range(self, req: pb.RangeRequest, batch: WriteBatch | None = None) -> pb.RangeResponse:
        """A read: in its own snapshot, or inside `batch` (seeing its writes)."""
        self.ranges += 1
        resp = pb.RangeResponse()
        if batch is None:
            with self.store.read() as view:
                self._range_into(view, req, resp)
        else:
            self._range_into(self.store.view(batch), req, resp)
        return resp

    def range_bytes(self, req: pb.RangeRequest, suffix: bytes) -> bytearray | RangeStream | None:
        """The serialized RangeResponse of a plain range (key order, no revision
        filters) with `suffix` appended, built straight from the stored
        records (range_encode): one buffer, or for a large range a RangeStream made as it
        is sent. None for any other range (use `range`)."""
        if (req.sort_target != _SORT_KEY or req.sort_order == _DESCEND
                or req.min_mod_revision or req.max_mod_revision
                or req.min_create_revision or req.max_create_revision):
            return None
        self.ranges += 1
        return encode_range(self.store, req, suffix)

    @staticmethod
    def _range_into(view: KVView, req: pb.RangeRequest, resp: pb.RangeResponse) -> None:
        if not req.range_end:
            # One key: nothing to sort, limit cannot cut, count is 0 or 1.
            raw = view.get(req.key, req.revision)
            resp.header.revision = view.rev
            if raw is None:
                return
            resp.count = 1
            if req.count_only:
                return
            kv = resp.kvs.add()
            kv.MergeFromString(raw)
            if (
                (req.max_mod_revision and kv.mod_revision > req.max_mod_revision)
                or (req.min_mod_revision and kv.mod_revision < req.min_mod_revision)
                or (req.max_create_revision and kv.create_revision > req.max_create_revision)
                or (req.min_create_revision and kv.create_revision < req.min_create_revision)
            ):
                del resp.kvs[:]
            elif req.keys_only:
                kv.ClearField("value")
            return
        limit = req.limit if req.limit > 0 else 0
        order = req.sort_order
        target = req.sort_target
        filtered = bool(
            req.min_mod_revision
            or req.max_mod_revision
            or req.min_create_revision
            or req.max_create_revision
        )
        # Like etcd, read only limit+1 records (in key order) unless an
        # order or a filter is asked for; so a sort target without an order
        # sorts just those (etcd's quirk, kept). Key order ascending gives the
        # same records as reading everything.
        key_order = target == _SORT_KEY and order != _DESCEND
        fetch = limit + 1 if limit and not filtered and (order == _NONE or key_order) else 0
        if target != _SORT_KEY and order == _NONE:
            order = _ASCEND  # etcd sorts ascending when only a target is given
        in_key_order = not filtered and key_order
        rr = view.range(
            req.key,
            range_end(req.range_end),
            rev=req.revision,
            limit=fetch,
            count_only=req.count_only,
        )
        resp.header.revision = rr.revision
        resp.count = rr.count
        raws = rr.kvs
        if in_key_order:
            if limit and len(raws) > limit:
                del raws[limit:]
                resp.more = True
            out = resp.kvs
            if req.keys_only:
                for raw in raws:
                    kv = out.add()
                    kv.MergeFromString(raw)
                    kv.ClearField("value")
            else:
                for raw in raws:
                    out.add().MergeFromString(raw)
            return
        parse = KeyValue.FromString
        kvs = [parse(raw) for raw in raws]
        if req.max_mod_revision:
            kvs = [kv for kv in kvs if kv.mod_revision <= req.max_mod_revision]
        if req.min_mod_revision:
            kvs = [kv for kv in kvs if kv.mod_revision >= req.min_mod_revision]
        if req.max_create_revision:
            kvs = [kv for kv in kvs if kv.create_revision <= req.max_create_revision]
        if req.min_create_revision:
            kvs = [kv for kv in kvs if kv.create_revision >= req.min_create_revision]
        if order == _DESCEND and target == _SORT_KEY:
            kvs.reverse()
        elif order in (_ASCEND, _DESCEND) and target != _SORT_KEY:
            field = _SORT_FIELDS.get(target)
            if field is not None:
                # Stable, and ties keep key order even when descending, as
                # etcd's insertion sort does for small results.
                kvs.sort(key=field, reverse=order == _DESCEND)
        if limit and len(kvs) > limit:
            del kvs[limit:]
            resp.more = True
        if req.keys_only:
            for kv in kvs:
                kv.ClearField("value")
        resp.kvs.extend(kvs)

    # -- Txn ---------------------------------------------------------------------------

    def txn(self, batch: WriteBatch | None, req: pb.TxnRequest) -> pb.TxnResponse:
        """A Txn. With batch=None it runs on a read snapshot and must not
        write (the caller sends only read-only txns that way)."""
        self.txns += 1
        store = self.store
        if batch is None:
            resp = pb.TxnResponse()
            with store.read() as view:
                read_plan = plan(view, req)
                puts: list[pb.PutRequest] = []
                ranges: list[pb.RangeRequest] = []
                if flatten(read_plan, puts, ranges):
                    raise ValueError("txn with writes needs a write batch")
                check_ranges(view, ranges)
                self._run(view, read_plan, resp)
                resp.header.revision = view.rev
            return resp
        # As etcd: every compare (nested ones too) and every check runs against
        # the state before the txn; only then are the ops applied.
        # (A protobuf repeated field is iterated by indexing it until IndexError: an
        # exception per loop, so an empty one is not looped over.)
        before = store.view(batch) if req.compare else None
        ok = before is None or holds(before, req)
        ops = req.success if ok else req.failure
        if len(ops) == 1:
            op = ops[0]
            if op.WhichOneof("request") == "request_put":
                return self._txn_put(batch, ok, op.request_put)
        if before is None:
            before = store.view(batch)
        resp = pb.TxnResponse()
        txn_plan: Plan = (ok, plan_ops(before, ops))
        puts = []
        ranges = []
        writes = flatten(txn_plan, puts, ranges)
        for put in puts:
            if (put.ignore_value or put.ignore_lease) and before.get(put.key) is None:
                raise errors.KEY_NOT_FOUND()
            self._check_lease(put.lease)
        check_ranges(before, ranges)
        planned = txn_plan[1]
        if writes and len(planned) == 1 and planned[0][0] != "request_txn":
            # One put or delete and nothing else: with its checks passed it fails, if
            # at all, before writing anything (as a plain Put or DeleteRange), so it
            # needs no nested transaction to undo it.
            writes = False
        with store.write(batch, atomic=writes) as tw:
            self._run(tw, txn_plan, resp)
        resp.header.revision = tw.rev
        return resp

    def _txn_put(self, batch: WriteBatch, ok: bool, put: pb.PutRequest) -> pb.TxnResponse:
        """A txn whose branch is one put (etcd benchmark's txn-put; Kubernetes' updates):
        the checks of the general path, in its order, then the put, which fails, if at
        all, before writing anything (as a plain Put), so it needs no nested transaction.
        The response is built as bytes and parsed once: cheaper than filling the nested
        messages field by field."""
        if (put.ignore_value or put.ignore_lease) and \
                self.store.view(batch).get(put.key) is None:
            raise errors.KEY_NOT_FOUND()
        lease = put.lease
        if lease:
            self._check_lease(lease)
        rev, prev = put_request(self.store, batch, put.key, put.value, lease,
                                put.ignore_value, put.ignore_lease)
        rv = varint(rev)
        header = b"\x0a" + _ONE_BYTE[len(rv) + 1] + b"\x18" + rv  # ResponseHeader{revision}
        out = header
        if put.prev_kv and prev is not None:
            out = header + b"\x12" + varint(len(prev)) + prev  # PutResponse.prev_kv
        out = b"\x12" + varint(len(out)) + out  # ResponseOp.response_put
        return _TXN_PARSE(header + (b"\x10\x01\x1a" if ok else b"\x1a") + varint(len(out)) + out)

    def _run(self, view: Any, chosen: Plan, resp: pb.TxnResponse) -> None:
        resp.succeeded = chosen[0]
        out = resp.responses
        for kind, sub, nested in chosen[1]:
            r = out.add()
            if kind == "request_range":
                self._range_into(view, sub, r.response_range)
            elif kind == "request_put":
                rev, prev = view.put(
                    sub.key,
                    sub.value,
                    sub.lease,
                    ignore_value=sub.ignore_value,
                    ignore_lease=sub.ignore_lease,
                )
                pr = r.response_put
                pr.header.revision = rev
                if sub.prev_kv and prev is not None:
                    pr.prev_kv.MergeFromString(prev)
            elif kind == "request_delete_range":
                self._delete_into(view, sub, r.response_delete_range)
            elif nested is not None:
                inner = r.response_txn
                inner.header.SetInParent()  # etcd sends an empty header here
                self._run(view, nested, inner)

    # -- Compaction ----------------------------------------------------------------------

    def compact(self, batch: WriteBatch, req: pb.CompactionRequest) -> pb.CompactionResponse:
        """With the default compact_budget=None the compaction is complete
        (also physically) within `batch`, so a `physical` request is
        satisfied once the batch has committed; otherwise answer a physical
        one when store.physically_compacted."""
        budget = self.compact_budget
        rev = self.store.compact(batch, req.revision, budget=budget, deadline=None if budget is None
                                 else time.perf_counter() + self.compact_step_time)
        resp = pb.CompactionResponse()
        resp.header.revision = rev
        return resp
