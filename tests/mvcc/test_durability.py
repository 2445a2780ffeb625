"""kill -9 in the middle of applying: after reopening, the data is exactly
that of the batches up to the stored consistent index, and every batch whose
commit returned is there."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from petcd.pb.etcdserverpb import rpc_pb2 as pb

from .harness import Member

SRC = str(Path(__file__).resolve().parents[2] / "src")

CHILD = textwrap.dedent(
    """
    import sys
    from petcd.mvcc import Backend, KVStore
    from petcd.pb.etcdserverpb import rpc_pb2 as pb
    from petcd.server.kv_requests import KVRequests

    backend = Backend(sys.argv[1], map_size=1 << 30)
    kv = KVRequests(KVStore(backend))
    index = backend.consistent_index()[0]
    backend_rev = kv.store.current_revision
    while True:
        index += 1
        with backend.begin_write() as batch:
            kv.put(batch, pb.PutRequest(key=b"counter", value=b"%d" % index))
            for j in range(20):
                kv.put(batch, pb.PutRequest(key=b"n%d/%d" % (index, j), value=b"x" * 100))
            if index % 7 == 0:
                kv.compact(batch, pb.CompactionRequest(revision=backend_rev - 5))
            batch.set_consistent_index(index, 1)
        backend_rev = kv.store.current_revision
        print(index, flush=True)
    """
)


def test_kill_during_apply(tmp_path: Path) -> None:
    db = str(tmp_path / "member" / "snap" / "db")
    env = dict(os.environ, PYTHONPATH=SRC)
    for round_ in range(3):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, db], stdout=subprocess.PIPE, env=env, text=True
        )
        assert child.stdout is not None
        acked = 0
        try:
            deadline = time.monotonic() + 30
            while acked < 15 * (round_ + 1) and time.monotonic() < deadline:
                line = child.stdout.readline()
                if not line:
                    break
                acked = int(line)
            time.sleep(0.003 * round_)  # land the kill at different points
        finally:
            child.send_signal(signal.SIGKILL)
            assert child.wait() == -signal.SIGKILL, "child died by itself"
        assert acked > 0, "child made no progress"
        m = Member(str(tmp_path), sync=True)
        try:
            applied, term = m.backend.consistent_index()
            assert applied >= acked and term == 1
            assert m.store.current_revision == 1 + 21 * applied
            counter = m.kv.range(pb.RangeRequest(key=b"counter")).kvs[0]
            assert counter.value == b"%d" % applied and counter.version == applied
            present = m.kv.range(pb.RangeRequest(key=b"n", range_end=b"o", count_only=True))
            assert present.count == 20 * applied
        finally:
            m.close()
