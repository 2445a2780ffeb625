"""Defragment on a real member: the file shrinks after a large dataset is deleted and
compacted, and the member keeps serving reads and writes during and after it (writes
wait for the swap, reads go on during the copy)."""

from __future__ import annotations

import threading
import time
from typing import Any

from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.testing import Etcdctl

from .conftest import Stubs

VALUE = b"v" * 16_384


def fill(stubs: Stubs, prefix: bytes, txns: int) -> None:
    """txns x 64 puts of 16 KiB (1 MiB per txn)."""
    for t in range(txns):
        ops = [rpc.RequestOp(request_put=rpc.PutRequest(key=b"%s/%05d" % (prefix, t * 64 + i),
                                                        value=VALUE)) for i in range(64)]
        stubs.kv.Txn(rpc.TxnRequest(success=ops), timeout=30)


def test_defrag_shrinks_the_file_and_keeps_serving(petcd_factory: Any) -> None:
    m = petcd_factory()
    stubs = Stubs(m)
    fill(stubs, b"gone", 24)
    fill(stubs, b"kept", 40)  # what the copy has to move: ~40 MiB
    stubs.kv.DeleteRange(rpc.DeleteRangeRequest(key=b"gone/", range_end=b"gone0"))
    rev = stubs.kv.Range(rpc.RangeRequest(key=b"x")).header.revision
    stubs.kv.Compact(rpc.CompactionRequest(revision=rev, physical=True), timeout=60)
    marker = stubs.kv.Put(rpc.PutRequest(key=b"marker", value=b"m")).header.revision
    before = stubs.maintenance.Status(rpc.StatusRequest())
    hash_before = stubs.maintenance.HashKV(rpc.HashKVRequest(revision=marker)).hash

    stop = threading.Event()
    failures: list[BaseException] = []
    reads: list[float] = []
    writes: list[tuple[int, float]] = []

    def reader() -> None:
        s = Stubs(m)
        try:
            while not stop.is_set():
                r = s.kv.Range(rpc.RangeRequest(key=b"kept/00007", serializable=True),
                               timeout=30)
                assert r.kvs[0].value == VALUE
                reads.append(time.monotonic())
        except BaseException as e:
            failures.append(e)
        finally:
            s.close()

    def writer() -> None:
        s = Stubs(m)
        try:
            i = 0
            while not stop.is_set():
                s.kv.Put(rpc.PutRequest(key=b"live/%d" % i, value=b"%d" % i), timeout=30)
                writes.append((i, time.monotonic()))
                i += 1
        except BaseException as e:
            failures.append(e)
        finally:
            s.close()

    threads = [threading.Thread(target=reader), threading.Thread(target=writer)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    started = time.monotonic()
    stubs.maintenance.Defragment(rpc.DefragmentRequest(), timeout=60)
    ended = time.monotonic()
    time.sleep(0.3)
    stop.set()
    for t in threads:
        t.join(60)
    assert not failures, failures

    after = stubs.maintenance.Status(rpc.StatusRequest())
    assert before.dbSize > 60 << 20
    assert after.dbSize < before.dbSize * 0.75  # the deleted third is gone from the file
    assert after.dbSize >= 40 << 20  # and the kept data is still there
    # Every acknowledged write is there; reads were served while the copy ran.
    last = writes[-1][0]
    got = stubs.kv.Range(rpc.RangeRequest(key=b"live/", range_end=b"live0"))
    assert got.count == last + 1
    took = ended - started
    assert took > 0.04, "too little data to watch the copy"
    middle = (started + took / 4, ended - took / 4)
    assert any(middle[0] < t < middle[1] for t in reads), (took, len(reads))
    assert any(t > ended for _, t in writes) and any(t > ended for t in reads)
    assert stubs.kv.Range(rpc.RangeRequest(key=b"kept/", range_end=b"kept0",
                                           count_only=True)).count == 40 * 64
    assert stubs.maintenance.HashKV(rpc.HashKVRequest(revision=marker)).hash == hash_before
    out = Etcdctl(m.endpoint).ok("defrag")
    assert out == f"Finished defragmenting etcd member[{m.endpoint}]\n"
    stubs.close()
