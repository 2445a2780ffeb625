"""A large store (1M keys by default; PETCD_SNAPSHOT_KEYS to change) through the Snapshot
RPC: streamed without the member holding the file in memory, read by etcdctl, restored
by petcdctl into a member that serves every key. Slow: `make soak`."""

from __future__ import annotations

import asyncio
import json
import os
import threading
from pathlib import Path
from typing import Any

import grpc
import pytest
from maintenance.conftest import needs_etcd, petcdctl

from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.testing import Etcdctl, PetcdProcess, free_port

pytestmark = [needs_etcd, pytest.mark.slow]

KEYS = int(os.environ.get("PETCD_SNAPSHOT_KEYS", "1000000"))


async def load(address: str, keys: int, conns: int = 8) -> None:
    value = b"v" * 256
    async with grpc.aio.insecure_channel(address) as ch:
        txn = ch.unary_unary("/etcdserverpb.KV/Txn", request_serializer=lambda b: b,
                             response_deserializer=lambda b: b)
        bases = list(range(0, keys, 128))

        async def worker(i: int) -> None:
            for base in bases[i::conns]:
                req = rpc.TxnRequest(success=[
                    rpc.RequestOp(request_put=rpc.PutRequest(key=b"big/%09d" % k, value=value))
                    for k in range(base, min(keys, base + 128))])
                for attempt in range(5):
                    try:
                        await txn(req.SerializeToString(), timeout=120)
                        break
                    except grpc.aio.AioRpcError as e:
                        # "request timed out": the member did not apply it within its
                        # request timeout (a WAL fdatasync took 8 s on a disk shared with
                        # other test runs). It may or may not be applied; the same puts
                        # again are harmless, as a client's retry is.
                        if e.code() != grpc.StatusCode.UNAVAILABLE or attempt == 4:
                            raise
        await asyncio.gather(*(worker(i) for i in range(conns)))


def rss_mib(pid: int) -> float:
    """Anonymous resident memory: the mapped database file's pages are page cache."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    return 0.0


def test_million_keys_snapshot(petcd_factory: Any, tmp_path: Path) -> None:
    src = petcd_factory(args=["--quota-backend-bytes", str(8 << 30)])
    asyncio.run(load(src.address, KEYS))
    assert src.proc is not None
    before = rss_mib(src.proc.pid)
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        assert src.proc is not None
        while not done.wait(0.05):
            peak[0] = max(peak[0], rss_mib(src.proc.pid))
    t = threading.Thread(target=sample)
    t.start()
    try:
        Etcdctl(src.endpoint, cwd=str(tmp_path), timeout=900).ok("snapshot", "save", "big.db")
    finally:
        done.set()
        t.join()
    size_mib = (tmp_path / "big.db").stat().st_size / 2**20
    # Streamed from a file: the member grows by far less than the file it sends.
    assert peak[0] - before < max(64.0, size_mib / 4), (before, peak[0], size_mib)
    st = json.loads(Etcdctl("127.0.0.1:1", cwd=str(tmp_path), timeout=900).ok(
        "snapshot", "status", "big.db", "-w", "json"))
    assert st["totalKey"] >= KEYS
    peer = free_port()
    r = petcdctl("snapshot", "restore", "big.db", "--name", "r", "--data-dir", "r",
                 "--initial-cluster", f"r=http://127.0.0.1:{peer}",
                 "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                 cwd=tmp_path, timeout=1800)
    assert r.returncode == 0, r.stderr
    dst = PetcdProcess(tmp_path / "r", name="r", peer_port=peer)
    try:
        dst.start(timeout=300)
        with grpc.insecure_channel(dst.address) as ch:
            count = ch.unary_unary(
                "/etcdserverpb.KV/Range",
                request_serializer=rpc.RangeRequest.SerializeToString,
                response_deserializer=rpc.RangeResponse.FromString)(
                rpc.RangeRequest(key=b"big/", range_end=b"big0", count_only=True)).count
        assert count == KEYS
    finally:
        dst.kill()
