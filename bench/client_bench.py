"""petcd.client's own overhead: puts/s and gets/s through `Client` (threads) and
`AsyncClient` (asyncio tasks) with 1 and 64 concurrent callers, beside the raw grpc stubs
(sync and grpc.aio) doing the same calls, against one member. Everything runs in this
one process, so the client CPU per call (µs, process time / calls) shows what the client
layer adds: request building, response parsing into dataclasses, retry bookkeeping.

    python bench/client_bench.py [--targets etcd,petcd] [--seconds 3] [--clients 1,64]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import member_for

from petcd.client import AsyncClient, Client
from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.pb.etcdserverpb import rpc_pb2_grpc as rpc_grpc

VALUE = b"v" * 64


def run_threads(n: int, seconds: float, op: Callable[[int, int], Any]) -> tuple[float, float]:
    """n threads calling op(thread, i) for `seconds`: (calls/s, CPU µs per call)."""
    stop = time.monotonic() + seconds
    counts = [0] * n

    def loop(t: int) -> None:
        i = 0
        while time.monotonic() < stop:
            op(t, i)
            i += 1
        counts[t] = i

    cpu0, t0 = time.process_time(), time.monotonic()
    threads = [threading.Thread(target=loop, args=(t,)) for t in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    elapsed, cpu = time.monotonic() - t0, time.process_time() - cpu0
    total = sum(counts)
    return total / elapsed, cpu / max(total, 1) * 1e6


async def run_tasks(n: int, seconds: float,
                    op: Callable[[int, int], Awaitable[Any]]) -> tuple[float, float]:
    stop = time.monotonic() + seconds
    counts = [0] * n

    async def loop(t: int) -> None:
        i = 0
        while time.monotonic() < stop:
            await op(t, i)
            i += 1
        counts[t] = i

    cpu0, t0 = time.process_time(), time.monotonic()
    await asyncio.gather(*(loop(t) for t in range(n)))
    elapsed, cpu = time.monotonic() - t0, time.process_time() - cpu0
    total = sum(counts)
    return total / elapsed, cpu / max(total, 1) * 1e6


def key(t: int, i: int) -> bytes:
    return b"cb/%d/%d" % (t, i % 1000)


def bench_sync(address: str, n: int, seconds: float) -> dict[str, tuple[float, float]]:
    out = {}
    with grpc.insecure_channel(address) as ch:
        kv = rpc_grpc.KVStub(ch)
        out["raw grpc stub (sync)", "put"] = run_threads(
            n, seconds, lambda t, i: kv.Put(rpc.PutRequest(key=key(t, i), value=VALUE)))
        out["raw grpc stub (sync)", "get"] = run_threads(
            n, seconds, lambda t, i: kv.Range(rpc.RangeRequest(key=key(t, i))))
    with Client(address) as c:
        out["Client", "put"] = run_threads(n, seconds, lambda t, i: c.put(key(t, i), VALUE))
        out["Client", "get"] = run_threads(n, seconds, lambda t, i: c.get(key(t, i)))
    return out


async def bench_async(address: str, n: int, seconds: float) -> dict[str, tuple[float, float]]:
    out = {}
    async with grpc.aio.insecure_channel(address) as ch:
        kv = rpc_grpc.KVStub(ch)
        out["raw grpc.aio stub", "put"] = await run_tasks(
            n, seconds, lambda t, i: kv.Put(rpc.PutRequest(key=key(t, i), value=VALUE)))
        out["raw grpc.aio stub", "get"] = await run_tasks(
            n, seconds, lambda t, i: kv.Range(rpc.RangeRequest(key=key(t, i))))
    async with AsyncClient(address) as c:
        out["AsyncClient", "put"] = await run_tasks(
            n, seconds, lambda t, i: c.put(key(t, i), VALUE))
        out["AsyncClient", "get"] = await run_tasks(n, seconds, lambda t, i: c.get(key(t, i)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--targets", default="etcd,petcd")
    ap.add_argument("--clients", default="1,64")
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    for target in args.targets.split(","):
        with tempfile.TemporaryDirectory() as d:
            m = member_for(target, Path(d) / "m")
            m.start()
            try:
                results: dict[Any, tuple[float, float]] = {}
                for n in map(int, args.clients.split(",")):
                    for (mode, op), v in bench_sync(m.address, n, args.seconds).items():
                        results[mode, n, op] = v
                    for (mode, op), v in asyncio.run(
                            bench_async(m.address, n, args.seconds)).items():
                        results[mode, n, op] = v
            finally:
                m.kill()
        print(f"\n{target}: calls/s (client CPU µs per call), {args.seconds:g} s per cell")
        print(f"{'mode':22} {'callers':>7} {'puts/s':>18} {'gets/s':>18}")
        for mode in ("raw grpc stub (sync)", "Client", "raw grpc.aio stub", "AsyncClient"):
            for n in map(int, args.clients.split(",")):
                cells = [results[mode, n, op] for op in ("put", "get")]
                print(f"{mode:22} {n:>7} " + " ".join(
                    f"{rate:>9.0f} ({us:5.0f} µs)" for rate, us in cells))


if __name__ == "__main__":
    main()
