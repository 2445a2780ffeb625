"""A request that is one put (mvcc.write.put_request: a Put, a txn of one put) answers,
writes, counts and attaches leases exactly as the TxnWrite path it skips, and falls
back to that path for long and empty keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from petcd import errors
from petcd.errors import EtcdError
from petcd.mvcc import write
from petcd.mvcc.write import put_request, put_through_txnwrite
from petcd.pb.etcdserverpb import rpc_pb2 as pb
from petcd.pb.mvccpb.kv_pb2 import KeyValue
from petcd.server import kv_requests

from .harness import Member


class Lessor:
    """Every lease exists; attach/detach calls are recorded in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, bytes]] = []

    def lease_exists(self, lease_id: int) -> bool:
        return True

    def attach(self, lease_id: int, key: bytes) -> None:
        self.calls.append(("attach", lease_id, key))

    def detach(self, lease_id: int, key: bytes) -> None:
        self.calls.append(("detach", lease_id, key))


def put(key: bytes, value: bytes = b"v", **kw: Any) -> pb.PutRequest:
    return pb.PutRequest(key=key, value=value, **kw)


def one_put_txn(p: pb.PutRequest) -> pb.TxnRequest:
    return pb.TxnRequest(success=[pb.RequestOp(request_put=p)])


LONG = b"L" * 700
REQUESTS: list[Any] = [
    put(b"a"),
    put(b"a", b"w", prev_kv=True),
    put(b"b", lease=7, prev_kv=True),
    put(b"b", b"again", lease=8, prev_kv=True),  # detach 7, attach 8
    put(b"b", ignore_value=True, value=b"", prev_kv=True),  # keeps the value, drops lease 8
    put(b"b", b"x", ignore_lease=True),
    put(b"b", b"y", lease=8, ignore_lease=True),  # (etcd refuses this pair at the API)
    put(b"missing", ignore_value=True, value=b""),  # KEY_NOT_FOUND, nothing written
    put(b"missing", ignore_lease=True),  # KEY_NOT_FOUND
    put(b""),  # EMPTY_KEY (the TxnWrite way)
    pb.DeleteRangeRequest(key=b"a"),
    put(b"a", b"back", prev_kv=True),  # created again after its tombstone
    put(LONG, prev_kv=True),  # a long key: the TxnWrite way
    put(LONG, b"2", lease=9, prev_kv=True),
    one_put_txn(put(b"t", lease=3, prev_kv=True)),
    one_put_txn(put(b"t", b"2", prev_kv=True)),
    one_put_txn(put(b"nope", ignore_value=True, value=b"")),  # KEY_NOT_FOUND
    one_put_txn(put(b"t", ignore_lease=True, prev_kv=True)),
]


def run(path: Path, fast: bool, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    if not fast:
        monkeypatch.setattr(kv_requests, "put_request", put_through_txnwrite)
    m = Member(str(path))
    lessor = Lessor()
    m.store.lessor = lessor
    _ = m.store.live_keys  # (counted now: kept by each request from here on)
    out: list[Any] = []
    try:
        for req in REQUESTS:
            with m.backend.begin_write() as batch:
                try:
                    res = m.dispatch(batch, req)
                except EtcdError as e:
                    res = e
                events = list(batch.events)
            out.append((str(res) if isinstance(res, EtcdError) else res.SerializeToString(),
                        events, m.store.working_revision, m.store.live_keys,
                        m.store.put_bytes, list(lessor.calls)))
        out.append(sorted(m.kv_records().items()))
        with m.backend.read() as txn:
            out.append(list(txn.cursor(db=m.store._index).iternext_dup()))
            out.append(sorted(txn.cursor(db=m.store._longkeys)))
    finally:
        monkeypatch.undo()
        m.close()
    return out


def test_put_request_matches_the_txnwrite_path(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    fast = run(tmp_path / "fast", True, monkeypatch)
    general = run(tmp_path / "general", False, monkeypatch)
    assert fast == general
    answers = [a[0] for a in fast[:len(REQUESTS)]]
    assert answers.count(str(errors.KEY_NOT_FOUND)) == 3
    assert answers.count(str(errors.EMPTY_KEY)) == 1


def test_put_request_refuses_an_open_writer_or_a_stale_batch(tmp_path: Path) -> None:
    m = Member(str(tmp_path))
    try:
        with m.backend.begin_write() as batch:
            tw = m.store.write(batch)
            with pytest.raises(RuntimeError, match="another write request"):
                put_request(m.store, batch, b"k", b"v", 0, False, False)
            tw.end()
            assert put_request(m.store, batch, b"k", b"v", 0, False, False) == (2, None)
        with pytest.raises(RuntimeError, match="not the backend's open write batch"):
            put_request(m.store, batch, b"k", b"v", 0, False, False)
        with m.backend.read() as txn:  # nothing of the refused calls was written
            assert len(list(txn.cursor(db=m.store._kv))) == 1
    finally:
        m.close()


def test_put_request_uses_the_batchs_cursor_across_batches(tmp_path: Path) -> None:
    """The index cursor is the batch's (made once per batch, dropped at its end): a put in
    the next batch must not use the last batch's cursor."""
    m = Member(str(tmp_path))
    try:
        for i in range(3):
            with m.backend.begin_write() as batch:
                assert put_request(m.store, batch, b"k", b"%d" % i, 0, False, False)[0] \
                    == 2 * i + 2
                prev = write.put_request(m.store, batch, b"j", b"x", 0, False, False)[1]
                assert (None if prev is None else KeyValue.FromString(prev).mod_revision) == \
                    (None if i == 0 else 2 * i + 1)
        assert KeyValue.FromString(m.store.range(b"k").kvs[0]).value == b"2"
    finally:
        m.close()
