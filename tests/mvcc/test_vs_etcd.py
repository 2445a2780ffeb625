"""Differential test against the reference: the same seeded random request
sequence goes to a real etcd 3.4 (over gRPC) and to our store (through
KVRequests, no gRPC); every response and every error must be identical,
apart from the header fields the server fills (cluster_id, member_id,
raft_term). Requests etcd's API layer rejects are not sent to ours."""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from petcd import errors
from petcd.pb.etcdserverpb import rpc_pb2 as pb
from petcd.pb.etcdserverpb import rpc_pb2_grpc as pb_grpc

from .harness import Member

ETCD = shutil.which("etcd") or "/usr/bin/etcd"
pytestmark = pytest.mark.skipif(not os.path.exists(ETCD), reason="etcd not installed")

STORE_ERRORS = {e.message: e for e in (errors.COMPACTED, errors.FUTURE_REV,
                                       errors.KEY_NOT_FOUND, errors.LEASE_NOT_FOUND)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[pb_grpc.KVStub]:
    client, peer = free_port(), free_port()
    log = open(tmp_path / "etcd.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [ETCD, "--data-dir", str(tmp_path / "etcd"), "--name", "ref",
         "--listen-client-urls", f"http://127.0.0.1:{client}",
         "--advertise-client-urls", f"http://127.0.0.1:{client}",
         "--listen-peer-urls", f"http://127.0.0.1:{peer}",
         "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
         "--initial-cluster", f"ref=http://127.0.0.1:{peer}"],
        stdout=subprocess.DEVNULL, stderr=log,
    )
    channel = grpc.insecure_channel(f"127.0.0.1:{client}")
    try:
        stub = pb_grpc.KVStub(channel)
        deadline = time.monotonic() + 20
        while True:
            try:
                stub.Range(pb.RangeRequest(key=b"probe"), timeout=1)
                break
            except grpc.RpcError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.1)
        yield stub
    finally:
        channel.close()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


LONG = b"L" * 600
KEYS = [b"a", b"ab", b"b", b"b\x00", b"c", b"k1", b"k2", b"\xff", LONG + b"a", LONG + b"b",
        LONG[:499] + b"M" + b"z" * 200]
ENDS = [b"", b"", b"", b"\x00", b"b", b"c", b"k2", b"\xff", LONG + b"b", b"\xff\xff"]
VALUES = [b"", b"v1", b"v2", b"zz", b"a" * 300]


class Gen:
    def __init__(self, seed: int) -> None:
        self.r = random.Random(seed)
        self.rev = 1  # etcd's revision, to aim revisions at the interesting range

    def rev_near(self) -> int:
        return max(0, self.rev + 1 - self.r.choice([0, 1, 1, 2, 3, 5, 8, 13]))

    def put(self) -> pb.PutRequest:
        r = self.r
        ignore_value = r.random() < 0.08
        return pb.PutRequest(
            key=r.choice(KEYS), value=b"" if ignore_value else r.choice(VALUES),
            prev_kv=r.random() < 0.5, ignore_value=ignore_value,
            ignore_lease=r.random() < 0.08, lease=7 if r.random() < 0.04 else 0)

    def delete(self) -> pb.DeleteRangeRequest:
        r = self.r
        return pb.DeleteRangeRequest(key=r.choice(KEYS), range_end=r.choice(ENDS),
                                     prev_kv=r.random() < 0.5)

    def range(self) -> pb.RangeRequest:
        r = self.r
        maybe = lambda: self.rev_near() if r.random() < 0.15 else 0  # noqa: E731
        return pb.RangeRequest(
            key=r.choice(KEYS), range_end=r.choice(ENDS), limit=r.choice([0, 0, 1, 2, 3]),
            revision=maybe(), sort_order=r.choice([0, 0, 1, 2]),  # type: ignore[arg-type]
            sort_target=r.choice([0, 0, 1, 2, 3, 4]),  # type: ignore[arg-type]
            keys_only=r.random() < 0.3, count_only=r.random() < 0.1,
            min_mod_revision=maybe(), max_mod_revision=maybe(),
            min_create_revision=maybe(), max_create_revision=maybe())

    def compare(self) -> pb.Compare:
        r = self.r
        target = r.choice([0, 1, 2, 3, 4])
        c = pb.Compare(key=r.choice(KEYS), range_end=r.choice([b"", b"", b"\x00", b"c"]),
                       target=target, result=r.choice([0, 1, 2, 3]))  # type: ignore[arg-type]
        if target == pb.Compare.VALUE:
            c.value = r.choice(VALUES)
        elif target == pb.Compare.VERSION:
            c.version = r.choice([0, 1, 2, 3])
        elif target == pb.Compare.CREATE:
            c.create_revision = self.rev_near()
        elif target == pb.Compare.MOD:
            c.mod_revision = self.rev_near()
        else:
            c.lease = r.choice([0, 7])
        return c

    def txn(self, depth: int = 2) -> pb.TxnRequest:
        r = self.r

        def ops() -> list[pb.RequestOp]:
            out = []
            for _ in range(r.choice([0, 1, 2, 3])):
                kind = r.choice(["put", "range", "delete", "txn"] if depth else
                                ["put", "range", "delete"])
                if kind == "put":
                    out.append(pb.RequestOp(request_put=self.put()))
                elif kind == "range":
                    out.append(pb.RequestOp(request_range=self.range()))
                elif kind == "delete":
                    out.append(pb.RequestOp(request_delete_range=self.delete()))
                else:
                    out.append(pb.RequestOp(request_txn=self.txn(depth - 1)))
            return out

        txn = pb.TxnRequest(compare=[self.compare() for _ in range(r.choice([0, 1, 2]))],
                            success=ops(), failure=ops())
        if depth == 2:
            avoid_etcd_panic(txn)
        return txn

    def request(self) -> Any:
        r = self.r.random()
        if r < 0.4:
            return self.put()
        if r < 0.55:
            return self.delete()
        if r < 0.75:
            return self.range()
        if r < 0.95:
            return self.txn()
        return pb.CompactionRequest(revision=self.rev_near(), physical=self.r.random() < 0.5)


def avoid_etcd_panic(txn: pb.TxnRequest) -> None:
    """etcd 3.4 panics (and cannot restart) on a txn that deletes a key and
    then puts it with ignore_value/ignore_lease: its duplicate-key check
    misses from-key ("\\0") delete ranges, and the put then fails midway.
    (petcd answers KEY_NOT_FOUND and changes nothing; see test_kvstore.)
    Such txns are not sent."""
    puts, deletes = [], 0

    def walk(t: pb.TxnRequest) -> None:
        nonlocal deletes
        for op in list(t.success) + list(t.failure):
            kind = op.WhichOneof("request")
            if kind == "request_put":
                puts.append(op.request_put)
            elif kind == "request_delete_range":
                deletes += 1
            elif kind == "request_txn":
                walk(op.request_txn)

    walk(txn)
    if deletes:
        for put in puts:
            put.ignore_value = put.ignore_lease = False


def call_etcd(stub: pb_grpc.KVStub, req: Any) -> Any:
    method = {pb.PutRequest: stub.Put, pb.DeleteRangeRequest: stub.DeleteRange,
              pb.RangeRequest: stub.Range, pb.TxnRequest: stub.Txn,
              pb.CompactionRequest: stub.Compact}[type(req)]
    try:
        resp = method(req, timeout=10)
    except grpc.RpcError as err:
        return err
    for name in ("cluster_id", "member_id", "raft_term"):
        resp.header.ClearField(name)
    return resp


def test_same_responses_as_etcd(etcd: pb_grpc.KVStub, tmp_path: Path) -> None:
    compare_with_etcd(etcd, tmp_path, seed=20240611, steps=700)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(12))
def test_same_responses_as_etcd_long(etcd: pb_grpc.KVStub, tmp_path: Path, seed: int) -> None:
    compare_with_etcd(etcd, tmp_path, seed=seed, steps=3000)


def compare_with_etcd(etcd: pb_grpc.KVStub, tmp_path: Path, seed: int, steps: int) -> None:
    m = Member(str(tmp_path / "petcd"))
    gen = Gen(seed)
    index = 0
    compared = {"ok": 0, "store_error": 0}
    try:
        for _ in range(steps):
            req = gen.request()
            want = call_etcd(etcd, req)
            if isinstance(want, grpc.RpcError):
                store_err = STORE_ERRORS.get(want.details() or "")
                if store_err is None:
                    continue  # rejected by etcd's API layer: never reaches the store
                want = store_err
            else:
                gen.rev = want.header.revision
            if isinstance(req, pb.RangeRequest):
                try:
                    got = m.kv.range(req)
                except errors.EtcdError as err:
                    got = err
            else:
                index += 1
                (got,) = m.apply([(index, req)])
            if isinstance(want, errors.EtcdError):
                assert got.kind is want.kind, (req, got)
                compared["store_error"] += 1
            else:
                assert got == want, (req, got, want)
                compared["ok"] += 1
        assert compared["ok"] > steps * 0.6 and compared["store_error"] > steps * 0.03, compared
        assert m.store.current_revision == gen.rev
    finally:
        m.close()
