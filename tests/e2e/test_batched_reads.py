"""With the backend committing only at snapshots and clean stops (issue 16), every read
path sees each acknowledged write at once: ranges (linearizable and serializable), Txn
compares, watchers starting in the past, lease lookups, HashKV, the Snapshot RPC and
defragment; and a kill -9 loses none of it (replay from the WAL)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc

from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.pb.etcdserverpb import rpc_pb2_grpc as rpc_grpc
from petcd.testing import LAGGING_BACKEND, SRC_DIR, Etcdctl, backend_index


def _watch_history(address: str, key: bytes) -> list[bytes]:
    """Values of every event on `key` from revision 1 (read from the store)."""
    with grpc.insecure_channel(address) as ch:
        stub = rpc_grpc.WatchStub(ch)
        req = rpc.WatchRequest(create_request=rpc.WatchCreateRequest(key=key, start_revision=1))
        values: list[bytes] = []
        calls = stub.Watch(iter([req]), timeout=10)
        for resp in calls:
            values += [e.kv.value for e in resp.events]
            if len(values) >= 3:
                calls.cancel()
                break
    return values


def test_every_read_path_sees_uncommitted_writes(petcd_factory: Any, tmp_path: Path) -> None:
    m = petcd_factory(args=LAGGING_BACKEND)
    ctl = Etcdctl(m.endpoint)
    for v in ("1", "2", "3"):
        assert ctl.ok("put", "k", v).strip() == "OK"
    assert ctl.ok("get", "k", "--print-value-only").strip() == "3"
    assert ctl.ok("get", "k", "--print-value-only", "--consistency=s").strip() == "3"
    assert ctl.ok("get", "k", "--print-value-only", "--rev=3").strip() == "2"
    out = ctl.ok("txn", input='value("k") = "3"\n\nput t yes\n\n\n')
    assert out.startswith("SUCCESS")
    assert _watch_history(m.address, b"k") == [b"1", b"2", b"3"]
    lease = ctl.ok("lease", "grant", "600").split()[1]
    ctl.ok("put", "leased", "x", "--lease", lease)
    assert "leased" in ctl.ok("lease", "timetolive", lease, "--keys")
    hashes = json.loads(ctl.ok("endpoint", "hashkv", "-w", "json"))[0]["HashKV"]
    rev = json.loads(ctl.ok("get", "k", "-w", "json"))["header"]["revision"]
    snap = str(tmp_path / "snap.db")
    ctl.ok("snapshot", "save", snap)  # commits first: the file holds every write
    petcdctl = subprocess.run([sys.executable, "-m", "petcd.cli.ctl", "snapshot", "status",
                               snap, "-w", "json"], capture_output=True, text=True, timeout=60,
                              env={**os.environ, "PYTHONPATH": str(SRC_DIR)})
    status = json.loads(petcdctl.stdout)
    assert status["revision"] == rev
    ctl.ok("put", "after-snapshot", "y")
    ctl.ok("defrag")
    assert ctl.ok("get", "after-snapshot", "--print-value-only").strip() == "y"
    ctl.ok("put", "last", "z")  # only in the WAL now
    applied = json.loads(ctl.ok("endpoint", "status", "-w", "json"))[0]["Status"]["raftIndex"]
    m.kill()
    assert backend_index(m.data_dir) < applied
    m.start()
    assert ctl.ok("get", "last", "--print-value-only").strip() == "z"
    assert ctl.ok("get", "k", "--print-value-only", "--rev=3").strip() == "2"
    after = json.loads(ctl.ok("endpoint", "hashkv", "--rev", str(rev), "-w", "json"))
    assert after[0]["HashKV"]["hash"] == hashes["hash"]
    assert os.path.exists(snap)
