"""The latency bump of a large compaction, petcd beside etcd 3.4: load --keys keys with
--revisions versions each, then a lone client puts one key in a loop while a Compact
(physical) of the whole history runs; prints put latency before, during and after, and how
long the compaction took.

    python bench/compaction_bench.py --keys 20000 --revisions 5
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import threading
import time
from pathlib import Path

import grpc

from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.testing import EtcdProcess, MemberProcess, PetcdProcess

PER_TXN = 128


async def load(address: str, keys: int, revisions: int, conns: int = 8) -> int:
    chans = [grpc.aio.insecure_channel(address) for _ in range(conns)]
    calls = [ch.unary_unary("/etcdserverpb.KV/Txn", request_serializer=lambda b: b,
                            response_deserializer=rpc.TxnResponse.FromString) for ch in chans]
    batches = [(r, b) for r in range(revisions) for b in range(0, keys, PER_TXN)]
    revision = 0

    async def worker(i: int) -> None:
        nonlocal revision
        for r, base in batches[i::conns]:
            req = rpc.TxnRequest(success=[
                rpc.RequestOp(request_put=rpc.PutRequest(key=b"c/%09d" % k, value=b"%d" % r))
                for k in range(base, min(keys, base + PER_TXN))])
            resp = await calls[i](req.SerializeToString(), timeout=120)
            revision = max(revision, resp.header.revision)
    await asyncio.gather(*(worker(i) for i in range(conns)))
    for ch in chans:
        await ch.close()
    return revision


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))] * 1000 if xs else float("nan")


def run(m: MemberProcess, keys: int, revisions: int) -> str:
    revision = asyncio.run(load(m.address, keys, revisions))
    samples: list[tuple[float, float]] = []
    stop = threading.Event()

    def probe() -> None:
        with grpc.insecure_channel(m.address) as ch:
            put = ch.unary_unary("/etcdserverpb.KV/Put",
                                 request_serializer=rpc.PutRequest.SerializeToString,
                                 response_deserializer=rpc.PutResponse.FromString)
            while not stop.is_set():
                t0 = time.monotonic()
                put(rpc.PutRequest(key=b"probe", value=b"x"), timeout=30)
                samples.append((t0, time.monotonic() - t0))

    t = threading.Thread(target=probe)
    t.start()
    time.sleep(2.0)
    start = time.monotonic()
    with grpc.insecure_channel(m.address) as ch:
        ch.unary_unary("/etcdserverpb.KV/Compact",
                       request_serializer=rpc.CompactionRequest.SerializeToString,
                       response_deserializer=rpc.CompactionResponse.FromString)(
            rpc.CompactionRequest(revision=revision, physical=True), timeout=600)
    end = time.monotonic()
    time.sleep(2.0)
    stop.set()
    t.join()
    before = [d for s, d in samples if s < start]
    during = [d for s, d in samples if start <= s < end]
    after = [d for s, d in samples if s >= end]

    def cell(xs: list[float]) -> str:
        if not xs:
            return "-"
        return (f"p50 {pct(xs, 0.5):.2f} p99 {pct(xs, 0.99):.2f} max {max(xs) * 1000:.1f} ms "
                f"({len(xs)} puts, mean {statistics.mean(xs) * 1000:.2f})")
    return (f"compaction of {revision} revisions took {end - start:.2f} s\n"
            f"    before: {cell(before)}\n    during: {cell(during)}\n    after:  {cell(after)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keys", type=int, default=20000)
    ap.add_argument("--revisions", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="compactbench-") as d:
        for kind, cls in (("petcd", PetcdProcess), ("etcd", EtcdProcess)):
            m: MemberProcess = cls(Path(d) / kind,
                                   args=["--quota-backend-bytes", str(8 << 30)])
            m.start()
            try:
                print(f"{kind}: {run(m, args.keys, args.revisions)}", flush=True)
            finally:
                m.kill()


if __name__ == "__main__":
    main()
