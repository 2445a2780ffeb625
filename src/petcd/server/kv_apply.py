"""Executes etcd's KV requests (Range, Put, DeleteRange, Txn, Compaction)
against the MVCC store, with etcd's exact semantics and response shapes.

Writes run inside the apply loop's WriteBatch; a request that raises
EtcdError leaves nothing behind in the batch. Responses carry only
header.revision; the server fills cluster_id, member_id and raft_term.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from petcd import errors
from petcd.mvcc.backend import WriteBatch
from petcd.mvcc.kvstore import KVStore, _View
from petcd.pb.etcdserverpb import rpc_pb2 as pb
from petcd.pb.mvccpb.kv_pb2 import KeyValue

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

_VALUE = pb.Compare.VALUE
_CMP_FIELDS: dict[int, tuple[str, str]] = {
    # target -> (KeyValue field, Compare field)
    pb.Compare.VERSION: ("version", "version"),
    pb.Compare.CREATE: ("create_revision", "create_revision"),
    pb.Compare.MOD: ("mod_revision", "mod_revision"),
    pb.Compare.VALUE: ("value", "value"),
    pb.Compare.LEASE: ("lease", "lease"),
}
_EMPTY_KV = KeyValue()

# A txn's evaluated compares: whether its compares held, and the same for each
# nested txn of the branch that runs, in order.
_Path = tuple[bool, list["_Path"]]


def range_end(raw: bytes) -> bytes | None:
    """etcd's range_end convention to the store's: empty means the single
    key (None), b"\\0" means every key >= key (b"")."""
    if not raw:
        return None
    if raw == b"\x00":
        return b""
    return raw


class KVApplier:
    """The KV service's state machine. `lessor` stays None until leases
    exist (issue 7); until then any request naming a lease fails with
    LEASE_NOT_FOUND, as no lease can exist."""

    def __init__(self, store: KVStore) -> None:
        self.store = store

    def _check_lease(self, lease: int) -> None:
        if lease:
            lessor = self.store.lessor
            if lessor is None or not lessor.lease_exists(lease):
                raise errors.LEASE_NOT_FOUND

    # -- Put / DeleteRange -----------------------------------------------------------

    def put(self, batch: WriteBatch, req: pb.PutRequest) -> pb.PutResponse:
        self._check_lease(req.lease)
        tw = self.store.write(batch)
        try:
            rev, prev = tw.put(
                req.key,
                req.value,
                req.lease,
                ignore_value=req.ignore_value,
                ignore_lease=req.ignore_lease,
            )
        except BaseException:
            tw.abort()
            raise
        tw.end()
        resp = pb.PutResponse()
        resp.header.revision = rev
        if req.prev_kv and prev is not None:
            resp.prev_kv.MergeFromString(prev)
        return resp

    def delete_range(
        self, batch: WriteBatch, req: pb.DeleteRangeRequest
    ) -> pb.DeleteRangeResponse:
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
        resp = pb.RangeResponse()
        if batch is None:
            with self.store.read() as view:
                self._range_into(view, req, resp)
        else:
            self._range_into(self.store.view(batch), req, resp)
        return resp

    @staticmethod
    def _range_into(view: _View, req: pb.RangeRequest, resp: pb.RangeResponse) -> None:
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
        store = self.store
        resp = pb.TxnResponse()
        if batch is None:
            with store.read() as view:
                path = self._compare_path(view, req)
                self._check_ranges(view, req, path)
                if self._writes_in(req, path):
                    raise ValueError("txn with writes needs a write batch")
                self._run(view, req, path, resp)
                resp.header.revision = view.rev
            return resp
        before = store.view(batch)
        path = self._compare_path(before, req)
        self._check_puts(before, req, path)
        self._check_ranges(before, req, path)
        writes = self._writes_in(req, path)
        with store.write(batch, atomic=writes) as tw:
            self._run(tw, req, path, resp)
        resp.header.revision = tw.rev
        return resp

    def _compare_path(self, view: _View, req: pb.TxnRequest) -> _Path:
        ok = all(self._compare(view, c) for c in req.compare)
        nested = [
            self._compare_path(view, op.request_txn)
            for op in (req.success if ok else req.failure)
            if op.WhichOneof("request") == "request_txn"
        ]
        return ok, nested

    @staticmethod
    def _compare(view: _View, c: pb.Compare) -> bool:
        try:
            raws = view.range(c.key, range_end(c.range_end)).kvs
        except errors.EtcdError:
            return False
        fields = _CMP_FIELDS.get(c.target)
        if fields is None:
            return True
        kv_field, cmp_field = fields
        want = getattr(c, cmp_field)
        if not raws:
            if c.target == _VALUE:
                return False  # a missing key has no value to compare
            kvs = [_EMPTY_KV]
        else:
            kvs = [KeyValue.FromString(raw) for raw in raws]
        result = c.result
        for kv in kvs:
            have = getattr(kv, kv_field)
            if result == pb.Compare.EQUAL:
                ok = have == want
            elif result == pb.Compare.NOT_EQUAL:
                ok = have != want
            elif result == pb.Compare.GREATER:
                ok = have > want
            elif result == pb.Compare.LESS:
                ok = have < want
            else:
                ok = True
            if not ok:
                return False
        return True

    @staticmethod
    def _branch(req: pb.TxnRequest, path: _Path) -> list[tuple[pb.RequestOp, _Path | None]]:
        """The ops that run, each with its nested path if it is a txn."""
        ok, nested = path
        children = iter(nested)
        return [
            (op, next(children) if op.WhichOneof("request") == "request_txn" else None)
            for op in (req.success if ok else req.failure)
        ]

    def _check_puts(self, view: _View, req: pb.TxnRequest, path: _Path) -> None:
        for op, sub in self._branch(req, path):
            if sub is not None:
                self._check_puts(view, op.request_txn, sub)
            elif op.WhichOneof("request") == "request_put":
                put = op.request_put
                if (put.ignore_value or put.ignore_lease) and view.get(put.key) is None:
                    raise errors.KEY_NOT_FOUND
                self._check_lease(put.lease)

    def _check_ranges(self, view: _View, req: pb.TxnRequest, path: _Path) -> None:
        for op, sub in self._branch(req, path):
            if sub is not None:
                self._check_ranges(view, op.request_txn, sub)
            elif op.WhichOneof("request") == "request_range":
                rev = op.request_range.revision
                if rev > view.rev:
                    raise errors.FUTURE_REV
                if 0 < rev < view.compact_rev:
                    raise errors.COMPACTED

    def _writes_in(self, req: pb.TxnRequest, path: _Path) -> bool:
        for op, sub in self._branch(req, path):
            if sub is not None:
                if self._writes_in(op.request_txn, sub):
                    return True
            elif op.WhichOneof("request") in ("request_put", "request_delete_range"):
                return True
        return False

    def _run(self, view: Any, req: pb.TxnRequest, path: _Path, resp: pb.TxnResponse) -> None:
        resp.succeeded = path[0]
        out = resp.responses
        for op, sub in self._branch(req, path):
            kind = op.WhichOneof("request")
            r = out.add()
            if kind == "request_range":
                self._range_into(view, op.request_range, r.response_range)
            elif kind == "request_put":
                put = op.request_put
                rev, prev = view.put(
                    put.key,
                    put.value,
                    put.lease,
                    ignore_value=put.ignore_value,
                    ignore_lease=put.ignore_lease,
                )
                pr = r.response_put
                pr.header.revision = rev
                if put.prev_kv and prev is not None:
                    pr.prev_kv.MergeFromString(prev)
            elif kind == "request_delete_range":
                self._delete_into(view, op.request_delete_range, r.response_delete_range)
            elif kind == "request_txn":
                assert sub is not None
                inner = r.response_txn
                inner.header.SetInParent()  # etcd sends an empty header here
                self._run(view, op.request_txn, sub, inner)

    # -- Compaction ----------------------------------------------------------------------

    def compact(self, batch: WriteBatch, req: pb.CompactionRequest) -> pb.CompactionResponse:
        """Compaction is complete (also physically) within `batch`, so a
        `physical` request is satisfied once the batch has committed."""
        rev = self.store.compact(batch, req.revision)
        resp = pb.CompactionResponse()
        resp.header.revision = rev
        return resp
