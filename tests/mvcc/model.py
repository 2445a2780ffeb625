"""A deliberately naive in-memory model of etcd's KV semantics: a dict of
per-key histories, every read a linear scan. The property tests run the
same requests against it and the real LMDB store and compare responses."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from petcd import errors
from petcd.pb.etcdserverpb import rpc_pb2 as pb
from petcd.pb.mvccpb.kv_pb2 import KeyValue


@dataclass(frozen=True)
class Rec:
    key: bytes
    create: int
    mod: int
    version: int
    value: bytes
    lease: int

    def pb(self) -> KeyValue:
        return KeyValue(
            key=self.key,
            create_revision=self.create,
            mod_revision=self.mod,
            version=self.version,
            value=self.value,
            lease=self.lease,
        )


@dataclass
class Model:
    rev: int = 1
    compact: int = -1
    # key -> [(main, sub, record or None for a deletion)], oldest first
    hist: dict[bytes, list[tuple[int, int, Rec | None]]] = field(default_factory=dict)

    def clone(self) -> Model:
        return copy.deepcopy(self)

    # -- reads -------------------------------------------------------------------

    def state(self, key: bytes, at: int) -> Rec | None:
        found = None
        for main, _, rec in self.hist.get(key, []):
            if main <= at:
                found = rec
        return found

    @staticmethod
    def in_range(k: bytes, key: bytes, end: bytes) -> bool:
        if end == b"":
            return k == key
        if end == b"\x00":
            return k >= key
        return key <= k < end

    def live(self, key: bytes, end: bytes, at: int) -> list[Rec]:
        out = []
        for k in sorted(self.hist):
            if self.in_range(k, key, end):
                rec = self.state(k, at)
                if rec is not None:
                    out.append(rec)
        return out

    def range(self, req: pb.RangeRequest, view_rev: int | None = None) -> pb.RangeResponse:
        cur = self.rev if view_rev is None else view_rev
        at = req.revision
        if at > cur:
            raise errors.FUTURE_REV
        if at <= 0:
            at = cur
        if at < self.compact:
            raise errors.COMPACTED
        recs = self.live(req.key, req.range_end, at)
        resp = pb.RangeResponse(count=len(recs))
        resp.header.revision = cur
        if req.count_only:
            recs = []
        if req.max_mod_revision:
            recs = [r for r in recs if r.mod <= req.max_mod_revision]
        if req.min_mod_revision:
            recs = [r for r in recs if r.mod >= req.min_mod_revision]
        if req.max_create_revision:
            recs = [r for r in recs if r.create <= req.max_create_revision]
        if req.min_create_revision:
            recs = [r for r in recs if r.create >= req.min_create_revision]
        order, target = req.sort_order, req.sort_target
        filtered = (req.min_mod_revision or req.max_mod_revision
                    or req.min_create_revision or req.max_create_revision)
        if order == pb.RangeRequest.NONE and not filtered and req.limit > 0:
            recs = recs[: req.limit + 1]  # etcd: limit applies before a target-only sort
        if target != pb.RangeRequest.KEY and order == pb.RangeRequest.NONE:
            order = pb.RangeRequest.ASCEND
        attr = {
            pb.RangeRequest.KEY: "key",
            pb.RangeRequest.VERSION: "version",
            pb.RangeRequest.CREATE: "create",
            pb.RangeRequest.MOD: "mod",
            pb.RangeRequest.VALUE: "value",
        }[target]
        if order != pb.RangeRequest.NONE:
            recs = sorted(
                recs, key=lambda r: getattr(r, attr), reverse=order == pb.RangeRequest.DESCEND
            )
        if req.limit > 0 and len(recs) > req.limit:
            recs = recs[: req.limit]
            resp.more = True
        for r in recs:
            kv = r.pb()
            if req.keys_only:
                kv.value = b""
            resp.kvs.append(kv)
        return resp

    # -- writes ------------------------------------------------------------------

    def _put(self, rev: int, sub: int, p: pb.PutRequest, view: int) -> tuple[Rec, Rec | None]:
        prev = self.state(p.key, view)
        if (p.ignore_value or p.ignore_lease) and prev is None:
            raise errors.KEY_NOT_FOUND
        value = prev.value if (p.ignore_value and prev) else p.value
        lease = prev.lease if (p.ignore_lease and prev) else p.lease
        rec = Rec(
            p.key,
            prev.create if prev else rev,
            rev,
            prev.version + 1 if prev else 1,
            value,
            lease,
        )
        self.hist.setdefault(p.key, []).append((rev, sub, rec))
        return rec, prev

    def put(self, p: pb.PutRequest) -> pb.PutResponse:
        if p.lease:
            raise errors.LEASE_NOT_FOUND
        _, prev = self._put(self.rev + 1, 0, p, self.rev)
        self.rev += 1
        resp = pb.PutResponse()
        resp.header.revision = self.rev
        if p.prev_kv and prev:
            resp.prev_kv.CopyFrom(prev.pb())
        return resp

    def _delete(self, rev: int, sub: int, d: pb.DeleteRangeRequest, view: int) -> list[Rec]:
        victims = self.live(d.key, d.range_end, view)
        for i, r in enumerate(victims):
            self.hist[r.key].append((rev, sub + i, None))
        return victims

    def delete_range(self, d: pb.DeleteRangeRequest) -> pb.DeleteRangeResponse:
        victims = self._delete(self.rev + 1, 0, d, self.rev)
        if victims:
            self.rev += 1
        resp = pb.DeleteRangeResponse(deleted=len(victims))
        resp.header.revision = self.rev
        if d.prev_kv:
            resp.prev_kvs.extend(r.pb() for r in victims)
        return resp

    def _compare(self, c: pb.Compare) -> bool:
        recs = self.live(c.key, c.range_end, self.rev)
        if not recs:
            if c.target == pb.Compare.VALUE:
                return False
            recs = [Rec(b"", 0, 0, 0, b"", 0)]
        for r in recs:
            have, want = {
                pb.Compare.VERSION: (r.version, c.version),
                pb.Compare.CREATE: (r.create, c.create_revision),
                pb.Compare.MOD: (r.mod, c.mod_revision),
                pb.Compare.VALUE: (r.value, c.value),
                pb.Compare.LEASE: (r.lease, c.lease),
            }[c.target]
            ok = {
                pb.Compare.EQUAL: have == want,
                pb.Compare.NOT_EQUAL: have != want,
                pb.Compare.GREATER: have > want,  # type: ignore[operator]
                pb.Compare.LESS: have < want,  # type: ignore[operator]
            }[c.result]
            if not ok:
                return False
        return True

    def _ops(self, t: pb.TxnRequest) -> tuple[bool, list[pb.RequestOp]]:
        ok = all(self._compare(c) for c in t.compare)
        return ok, list(t.success if ok else t.failure)

    def _check(self, t: pb.TxnRequest) -> None:
        """etcd's validation, against the state before the txn: puts first,
        then range revisions, each over the whole executed tree."""
        def walk(t: pb.TxnRequest) -> list[pb.RequestOp]:
            out = []
            for op in self._ops(t)[1]:
                if op.WhichOneof("request") == "request_txn":
                    out.extend(walk(op.request_txn))
                else:
                    out.append(op)
            return out

        flat = walk(t)
        for op in flat:
            if op.WhichOneof("request") == "request_put":
                p = op.request_put
                if (p.ignore_value or p.ignore_lease) and self.state(p.key, self.rev) is None:
                    raise errors.KEY_NOT_FOUND
                if p.lease:
                    raise errors.LEASE_NOT_FOUND
        for op in flat:
            if op.WhichOneof("request") == "request_range":
                r = op.request_range.revision
                if r > self.rev:
                    raise errors.FUTURE_REV
                if 0 < r < self.compact:
                    raise errors.COMPACTED

    def txn(self, t: pb.TxnRequest) -> pb.TxnResponse:
        self._check(t)
        # Compares of nested txns see the state before the txn, as in etcd.
        paths: list[tuple[bool, list[pb.RequestOp]]] = []

        def decide(t: pb.TxnRequest) -> None:
            ok, ops = self._ops(t)
            paths.append((ok, ops))
            for op in ops:
                if op.WhichOneof("request") == "request_txn":
                    decide(op.request_txn)

        decide(t)
        saved = self.clone()
        rev = self.rev + 1
        state = {"changed": False, "sub": 0}
        it = iter(paths)

        def run(resp: pb.TxnResponse) -> None:
            ok, ops = next(it)
            resp.succeeded = ok
            for op in ops:
                kind = op.WhichOneof("request")
                out = resp.responses.add()
                view = rev if state["changed"] else self.rev
                if kind == "request_range":
                    out.response_range.CopyFrom(self.range(op.request_range, view))
                elif kind == "request_put":
                    _, prev = self._put(rev, state["sub"], op.request_put, view)
                    state["sub"] += 1
                    state["changed"] = True
                    out.response_put.header.revision = rev
                    if op.request_put.prev_kv and prev:
                        out.response_put.prev_kv.CopyFrom(prev.pb())
                elif kind == "request_delete_range":
                    d = op.request_delete_range
                    victims = self._delete(rev, state["sub"], d, view)
                    state["sub"] += len(victims)
                    if victims:
                        state["changed"] = True
                    dr = out.response_delete_range
                    dr.header.revision = rev if state["changed"] else self.rev
                    dr.deleted = len(victims)
                    if d.prev_kv:
                        dr.prev_kvs.extend(r.pb() for r in victims)
                elif kind == "request_txn":
                    out.response_txn.header.SetInParent()
                    run(out.response_txn)

        resp = pb.TxnResponse()
        try:
            run(resp)
        except errors.EtcdError:
            self.__dict__.update(saved.__dict__)
            raise
        if state["changed"]:
            self.rev = rev
        resp.header.revision = self.rev
        return resp

    def compact_to(self, c: pb.CompactionRequest) -> pb.CompactionResponse:
        at = c.revision
        if at <= self.compact:
            raise errors.COMPACTED
        if at > self.rev:
            raise errors.FUTURE_REV
        self.compact = at
        for key in list(self.hist):
            h = self.hist[key]
            old = [e for e in h if e[0] <= at]
            keep = [] if not old or old[-1][2] is None else [old[-1]]
            h[:] = keep + [e for e in h if e[0] > at]
            if not h:
                del self.hist[key]
        resp = pb.CompactionResponse()
        resp.header.revision = self.rev
        return resp

    def records(self) -> dict[bytes, bytes]:
        """What the backend's `kv` database must hold, exactly."""
        out = {}
        for key, h in self.hist.items():
            for main, sub, rec in h:
                rk = main.to_bytes(8, "big") + b"_" + sub.to_bytes(8, "big")
                if rec is None:
                    out[rk + b"t"] = KeyValue(key=key).SerializeToString()
                else:
                    out[rk] = rec.pb().SerializeToString()
        return out

    def events(self, start: int) -> list[tuple[int, int, bytes, bytes]]:
        """Every change from revision `start` on, in revision order, as
        (revision, type, key, serialized kv as a watcher gets it)."""
        out = []
        for key, h in self.hist.items():
            for main, sub, rec in h:
                if main >= start:
                    if rec is None:
                        kv = KeyValue(key=key, mod_revision=main).SerializeToString()
                        out.append(((main, sub), (main, 1, key, kv)))
                    else:
                        out.append(((main, sub), (main, 0, key, rec.pb().SerializeToString())))
        return [e for _, e in sorted(out)]
