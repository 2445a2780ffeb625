"""Lease throughput of one member: leases granted/s (LeaseGrant, server-chosen IDs) and
keep-alives/s (LeaseKeepAlive streams, one request in flight per stream), with 1 and
with 64 concurrent clients, against petcd and against real etcd 3.4 run the same way
(both started here on free loopback ports), side by side.

    python bench/lease_bench.py                      # petcd and etcd, 5 s per cell
    python bench/lease_bench.py --targets petcd --clients 64 --seconds 10 --repeat 3

A keep-alive client is one stream renewing leases of its own (`--leases-per-client`,
round robin), as a service keeping its sessions alive does. Load generation, timing
and CPU accounting as bench/kv_bench.py (worker processes, grpc.aio, pre-serialized
requests, responses not parsed; client and server CPU from /proc).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import (
    Cell,
    add_common_args,
    one_member_each,
    run_processes,
    run_worker,
    split_clients,
)

from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.testing import MemberProcess

GRANT = "/etcdserverpb.Lease/LeaseGrant"
KEEPALIVE = "/etcdserverpb.Lease/LeaseKeepAlive"


async def _worker_main(address: str, workload: str, worker: int, concurrency: int,
                       conns: int, seconds: float, leases_per_client: int,
                       ready: mp.Queue[int], go: Any, out: mp.Queue[tuple[int, int]]) -> None:
    import grpc

    channels = [grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool",
                                                             1)])
                for _ in range(conns)]
    for ch in channels:
        await asyncio.wait_for(ch.channel_ready(), 30)
    grant = [ch.unary_unary(GRANT) for ch in channels]  # bytes in, bytes out
    grant_req = rpc.LeaseGrantRequest(TTL=600).SerializeToString()
    streams: list[Any] = []
    renewals: list[list[bytes]] = []
    if workload == "keepalive":
        # Each client: its own leases (granted now, outside the measurement) and stream.
        for i in range(concurrency):
            ids = []
            for _ in range(leases_per_client):
                resp = rpc.LeaseGrantResponse.FromString(await grant[i % conns](grant_req))
                ids.append(resp.ID)
            renewals.append([rpc.LeaseKeepAliveRequest(ID=x).SerializeToString() for x in ids])
            streams.append(channels[i % conns].stream_stream(KEEPALIVE)())
    ready.put(worker)
    await asyncio.get_running_loop().run_in_executor(None, go.wait)
    count = 0
    errors = 0
    stop_at = time.monotonic() + seconds

    async def grants(i: int) -> None:
        nonlocal count, errors
        call = grant[i % conns]
        while time.monotonic() < stop_at:
            try:
                await call(grant_req, timeout=30)
                count += 1
            except grpc.aio.AioRpcError:
                errors += 1

    async def keep_alives(i: int) -> None:
        nonlocal count, errors
        stream, reqs = streams[i], renewals[i]
        n = len(reqs)
        j = 0
        while time.monotonic() < stop_at:
            await stream.write(reqs[j % n])
            raw = await stream.read()
            if raw is grpc.aio.EOF:  # type: ignore[attr-defined]
                errors += 1
                return
            count += 1
            j += 1
        await stream.done_writing()

    body = grants if workload == "grant" else keep_alives
    await asyncio.gather(*(body(i) for i in range(concurrency)))
    out.put((count, errors))
    for ch in channels:
        await ch.close()


def _worker(*args: Any) -> None:
    run_worker(_worker_main, *args)


def run_cell(member: MemberProcess, workload: str, clients: int, procs: int, seconds: float,
             leases_per_client: int) -> Cell:
    args = [(member.address, workload, i, n, max(1, min(n, 8)), seconds, leases_per_client)
            for i, n in enumerate(split_clients(clients, procs))]
    assert member.proc is not None
    return run_processes(_worker, args, [member.proc.pid], seconds + 60).cell(workload, clients)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(ap, "grant,keepalive")
    ap.add_argument("--leases-per-client", type=int, default=4)
    args = ap.parse_args()
    one_member_each(
        args, "lease-bench-", {"grant": "leases granted/s", "keepalive": "keep-alives/s"},
        "rate/s",
        lambda m, wl, c, procs: run_cell(m, wl, c, procs, args.seconds,
                                         args.leases_per_client))


if __name__ == "__main__":
    main()
