"""The one-put txn path (KVRequests._txn_put) answers exactly as the general txn path:
the same response bytes, the same errors, the same store afterwards."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from petcd.errors import EtcdError
from petcd.pb.etcdserverpb import rpc_pb2 as pb
from petcd.server.kv_requests import KVRequests

from .harness import Member


def run(tmp: Path, name: str, general: bool, reqs: list[Any]) -> list[Any]:
    m = Member(str(tmp / name))
    out: list[Any] = []
    try:
        for i, req in enumerate(reqs, 1):
            if general:
                saved = KVRequests._txn_put
                KVRequests._txn_put = _one_put_off  # type: ignore[method-assign]
            try:
                (res,) = m.apply([(i, req)])
            finally:
                if general:
                    KVRequests._txn_put = saved  # type: ignore[method-assign]
            out.append(str(res) if isinstance(res, EtcdError) else res.SerializeToString())
        out.append(sorted(m.kv_records().items()))
    finally:
        m.close()
    return out


def _one_put_off(self: KVRequests, batch: Any, ok: bool, put: pb.PutRequest) -> Any:
    """The general path's answer for the same txn."""
    req = pb.TxnRequest()
    branch = req.success if ok else req.failure
    branch.add().request_put.CopyFrom(put)
    branch.add()  # a second (empty) op keeps it off the one-put path
    if not ok:  # a compare that fails, so the failure branch runs
        req.compare.add(key=b"\xff-missing", target=pb.Compare.VALUE, result=pb.Compare.EQUAL)
    resp = self.txn(batch, req)
    if isinstance(resp, pb.TxnResponse):
        del resp.responses[1]
    return resp


def put(key: bytes, value: bytes = b"v", **kw: Any) -> pb.PutRequest:
    return pb.PutRequest(key=key, value=value, **kw)


def txn(p: pb.PutRequest, *, holds: bool = True) -> pb.TxnRequest:
    req = pb.TxnRequest()
    if holds:
        req.compare.add(key=p.key, target=pb.Compare.VERSION, result=pb.Compare.GREATER,
                        version=-1)
        req.success.add().request_put.CopyFrom(p)
    else:
        req.compare.add(key=p.key, target=pb.Compare.VERSION, result=pb.Compare.LESS,
                        version=-1)
        req.failure.add().request_put.CopyFrom(p)
        req.success.add().request_range.key = p.key
    return req


CASES = [
    txn(put(b"a")),
    txn(put(b"a", b"w", prev_kv=True)),
    txn(put(b"b", prev_kv=True)),  # new key: no prev_kv
    txn(put(b"a", b"x" * 300, prev_kv=True), holds=False),
    txn(put(b"a", ignore_value=True, value=b"", prev_kv=True)),
    txn(put(b"missing", ignore_value=True, value=b"")),  # KEY_NOT_FOUND
    txn(put(b"c", lease=42)),  # LEASE_NOT_FOUND (no lessor)
    txn(put(b"missing2", ignore_value=True, value=b"", lease=42)),  # KEY_NOT_FOUND first
    txn(put(b"k" * 600, prev_kv=True)),  # a long key (surrogate index key)
    txn(put(b"k" * 600, b"again", prev_kv=True), holds=False),
]


def test_one_put_txn_matches_general_path(tmp_path: Path) -> None:
    fast = run(tmp_path, "fast", False, CASES)
    slow = run(tmp_path, "slow", True, CASES)
    assert fast == slow
    assert any(isinstance(x, str) for x in fast)  # the error cases were errors
