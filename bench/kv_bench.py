"""KV throughput of one member: puts/s and ranges/s (linearizable and serializable),
with 1 client and with 64 concurrent clients, against petcd and against real etcd 3.4
run the same way (both started here on free loopback ports), side by side.

    python bench/kv_bench.py                       # petcd (mux) and etcd, 5 s per cell
    python bench/kv_bench.py --targets petcd,petcd-direct --seconds 10

Targets: `petcd` (gRPC and HTTP on one port, through the mux), `petcd-direct` (petcd with
--listen-client-http-urls, so gRPC owns the client port: no mux hop), `petcd-h2` (petcd's
own HTTP/2 server, --experimental-grpc-server=h2), `etcd`.

The load generator is Python too, so it is made cheap: worker processes, grpc.aio,
requests serialized once up front and sent as bytes, responses not parsed. Client and
server CPU seconds are measured (from /proc) and printed with the rates: on a 2-core
machine the client competes with the server for CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.testing import EtcdProcess, MemberProcess, PetcdProcess, have_etcd

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its threads (from /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


@dataclass
class Cell:
    workload: str
    clients: int
    ops: int
    seconds: float
    server_cpu: float
    client_cpu: float
    errors: int

    @property
    def rate(self) -> float:
        return self.ops / self.seconds


def _requests(workload: str, worker: int, value_size: int, keys: int) -> tuple[str, list[bytes]]:
    if workload == "put":
        value = b"v" * value_size
        return "/etcdserverpb.KV/Put", [
            rpc.PutRequest(key=b"bench/%d/%06d" % (worker, i), value=value).SerializeToString()
            for i in range(keys)]
    serializable = workload == "range-serializable"
    return "/etcdserverpb.KV/Range", [
        rpc.RangeRequest(key=b"bench/0/%06d" % (i % 100),
                         serializable=serializable).SerializeToString()
        for i in range(100)]


async def _worker_main(address: str, workload: str, worker: int, concurrency: int,
                       conns: int, seconds: float, value_size: int,
                       ready: mp.Queue[int], go: Any, out: mp.Queue[tuple[int, int]]) -> None:
    import grpc

    method, reqs = _requests(workload, worker, value_size, 1000)
    channels = [grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool",
                                                             1)])
                for _ in range(conns)]
    calls = [ch.unary_unary(method) for ch in channels]  # bytes in, bytes out
    for ch in channels:
        await asyncio.wait_for(ch.channel_ready(), 30)
    ready.put(worker)
    await asyncio.get_running_loop().run_in_executor(None, go.wait)
    count = 0
    errors = 0
    stop_at = time.monotonic() + seconds
    n = len(reqs)

    async def loop(i: int) -> None:
        nonlocal count, errors
        call = calls[i % len(calls)]
        j = i
        while time.monotonic() < stop_at:
            try:
                await call(reqs[j % n], timeout=30)
                count += 1
            except grpc.aio.AioRpcError:
                errors += 1
            j += concurrency

    await asyncio.gather(*(loop(i) for i in range(concurrency)))
    out.put((count, errors))
    for ch in channels:
        await ch.close()


def _worker(address: str, workload: str, worker: int, concurrency: int, conns: int,
            seconds: float, value_size: int, ready: mp.Queue[int], go: Any,
            out: mp.Queue[tuple[int, int]]) -> None:
    try:
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as r:
            r.run(_worker_main(address, workload, worker, concurrency, conns, seconds,
                               value_size, ready, go, out))
    except BaseException:
        ready.put(-1)
        out.put((0, -1))
        raise


def run_cell(member: MemberProcess, workload: str, clients: int, procs: int, seconds: float,
             value_size: int) -> Cell:
    procs = max(1, min(procs, clients))
    # spawn, not fork: the parent has used gRPC, and gRPC does not survive a fork.
    ctx = mp.get_context("spawn")
    ready: mp.Queue[int] = ctx.Queue()
    out: mp.Queue[tuple[int, int]] = ctx.Queue()
    go = ctx.Event()
    per = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
    workers = [ctx.Process(target=_worker, args=(member.address, workload, i, per[i],
                                                 max(1, min(per[i], 8)), seconds, value_size,
                                                 ready, go, out))
               for i in range(procs)]
    for w in workers:
        w.start()
    try:
        if any(ready.get(timeout=60) < 0 for _ in workers):
            raise RuntimeError("a load worker failed to connect")
        assert member.proc is not None
        server0 = cpu_seconds(member.proc.pid)
        client0 = sum(cpu_seconds(w.pid) for w in workers if w.pid)
        t0 = time.monotonic()
        go.set()
        results = [out.get(timeout=seconds + 60) for _ in workers]
        elapsed = time.monotonic() - t0
        server1 = cpu_seconds(member.proc.pid)
        client1 = sum(cpu_seconds(w.pid) for w in workers if w.pid)
    finally:
        for w in workers:
            w.join(10)
            if w.is_alive():
                w.kill()
    if any(e < 0 for _, e in results):
        raise RuntimeError("a load worker failed")
    return Cell(workload, clients, sum(c for c, _ in results), elapsed,
                server1 - server0, client1 - client0, sum(e for _, e in results))


def preload(member: MemberProcess, value_size: int) -> None:
    import grpc

    with grpc.insecure_channel(member.address) as ch:
        put = ch.unary_unary("/etcdserverpb.KV/Put")
        for i in range(100):
            put(rpc.PutRequest(key=b"bench/0/%06d" % i,
                               value=b"v" * value_size).SerializeToString())


def start(target: str, base: Path) -> MemberProcess:
    if target == "etcd":
        return EtcdProcess(base / "etcd").start()
    args = ["--experimental-grpc-server=h2"] if target == "petcd-h2" else []
    return PetcdProcess(base / target, separate_http=target == "petcd-direct",
                        args=args).start()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--targets", default="petcd,etcd",
                    help="comma list of petcd, petcd-direct, petcd-h2, etcd "
                         "(default: petcd,etcd)")
    ap.add_argument("--clients", default="1,64", help="concurrency levels (default 1,64)")
    ap.add_argument("--workloads", default="put,range-linearizable,range-serializable")
    ap.add_argument("--seconds", type=float, default=5.0, help="per cell (default 5)")
    ap.add_argument("--procs", type=int, default=2,
                    help="load generator processes for concurrent runs (default 2)")
    ap.add_argument("--value-size", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=1,
                    help="runs per cell; the median run is reported (shared machines are noisy)")
    args = ap.parse_args()
    targets = [t for t in args.targets.split(",") if t]
    if "etcd" in targets and not have_etcd():
        print("etcd not installed: skipping it", file=sys.stderr)
        targets.remove("etcd")
    clients = [int(c) for c in args.clients.split(",")]
    workloads = args.workloads.split(",")
    results: dict[tuple[str, str, int], Cell] = {}
    with tempfile.TemporaryDirectory(prefix="kv-bench-") as tmp:
        # All targets run at once and take turns cell by cell, so that a noisy neighbour
        # hurts them alike; each target is idle while another is measured.
        members: dict[str, MemberProcess] = {}
        try:
            for target in targets:
                members[target] = start(target, Path(tmp))
                preload(members[target], args.value_size)
            for wl in workloads:
                for c in clients:
                    runs: dict[str, list[Cell]] = {t: [] for t in targets}
                    for _ in range(max(1, args.repeat)):
                        for t in targets:
                            runs[t].append(run_cell(members[t], wl, c,
                                                    args.procs if c > 1 else 1,
                                                    args.seconds, args.value_size))
                    for t in targets:
                        ordered = sorted(runs[t], key=lambda cell: cell.rate)
                        cell = results[(t, wl, c)] = ordered[len(ordered) // 2]
                        print(f"{t:13} {wl:19} clients={c:<3} {cell.rate:9.0f} ops/s  "
                              f"server cpu {cell.server_cpu / cell.seconds:4.2f} cores  "
                              f"client cpu {cell.client_cpu / cell.seconds:4.2f} cores"
                              + (f"  errors {cell.errors}" if cell.errors else ""),
                              flush=True)
        finally:
            for m in members.values():
                m.stop()
    print("\nops/s (server cores used, client cores used)")
    header = f"{'workload':19} {'clients':>7} " + " ".join(f"{t:>26}" for t in targets)
    print(header)
    for wl in workloads:
        for c in clients:
            row = f"{wl:19} {c:>7} "
            for t in targets:
                cell = results[(t, wl, c)]
                row += (f"{cell.rate:>10.0f} ({cell.server_cpu / cell.seconds:4.2f}, "
                        f"{cell.client_cpu / cell.seconds:4.2f})  ")
            print(row)


if __name__ == "__main__":
    main()
