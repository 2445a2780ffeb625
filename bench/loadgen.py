"""The load generator shared by the KV benchmarks (kv_bench.py: one member; cluster_bench.py:
a 3-member cluster): worker processes running grpc.aio clients, requests serialized once
up front and sent as bytes, responses not parsed. A cell is one workload at one
concurrency; it reports ops/s and the CPU seconds of the servers and of the clients
(from /proc): on a small machine the client competes with the servers for CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.testing import EtcdProcess, MemberProcess, PetcdProcess, have_etcd

CLK_TCK = os.sysconf("SC_CLK_TCK")
WORKLOADS = ("put", "txn-put", "range-linearizable", "range-serializable")
ALIASES = {"range-l": "range-linearizable", "range-s": "range-serializable"}
# Not in the default lists: a serializable range of 1000 keys (preload(range_keys=1000)).
RANGE_1000 = "range-1000"

# What every benchmark can be pointed at: petcd with its own HTTP/2 gRPC server (the default),
# petcd on grpc.aio behind the HTTP/gRPC mux (the fallback server), and real etcd 3.4.
TARGETS = ("petcd", "petcd-grpcio", "etcd")
TARGET_HELP = ("comma list of petcd (its own HTTP/2 gRPC server), petcd-grpcio "
               "(--experimental-grpc-server=grpcio), etcd")


def add_common_args(ap: argparse.ArgumentParser, workloads: str, clients: str = "1,64") -> None:
    """The options every single-member and cluster benchmark takes."""
    ap.add_argument("--targets", default="petcd,etcd",
                    help=TARGET_HELP + " (default: petcd,etcd)")
    ap.add_argument("--clients", default=clients, help=f"concurrency levels (default {clients})")
    ap.add_argument("--workloads", default=workloads)
    ap.add_argument("--seconds", type=float, default=5.0, help="per cell (default 5)")
    ap.add_argument("--procs", type=int, default=2,
                    help="load generator processes for concurrent runs (default 2)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="runs per cell; the median run is reported (shared machines are noisy)")


def parse_common_args(args: argparse.Namespace) -> tuple[list[str], list[int], list[str]]:
    """Targets (etcd dropped when it is not installed), concurrency levels, workloads."""
    targets = [t for t in args.targets.split(",") if t]
    if "etcd" in targets and not have_etcd():
        print("etcd not installed: skipping it", file=sys.stderr)
        targets.remove("etcd")
    # Short names as the notes write them; a name no bench knows fails in _requests.
    workloads = [ALIASES.get(w, w) for w in args.workloads.split(",")]
    return targets, [int(c) for c in args.clients.split(",")], workloads


def print_table(title: str, results: dict[tuple[str, str, int], Cell], targets: Sequence[str],
                rows: Sequence[tuple[str, int, str]]) -> None:
    """The summary: one row per (workload, clients, label), rate (server, client cores)."""
    print(f"\n{title} (server cores used, client cores used)")
    print(f"{'workload':19} {'clients':>7} " + " ".join(f"{t:>26}" for t in targets))
    for wl, c, label in rows:
        row = f"{label:19} {c:>7} "
        for t in targets:
            cell = results[(t, wl, c)]
            row += (f"{cell.rate:>10.0f} ({cell.server_cpu / cell.seconds:4.2f}, "
                    f"{cell.client_cpu / cell.seconds:4.2f})  ")
        print(row)


def member_for(target: str, data_dir: Path, name: str = "default",
               args: Sequence[str] = ()) -> MemberProcess:
    """A not yet started member of the given benchmark target."""
    if target == "etcd":
        return EtcdProcess(data_dir, name=name, args=args)
    if target not in TARGETS:
        raise SystemExit(f"unknown target {target!r}: {TARGET_HELP}")
    extra = ["--experimental-grpc-server=grpcio"] if target == "petcd-grpcio" else []
    return PetcdProcess(data_dir, name=name, args=[*extra, *args])


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
    member_cpu: tuple[float, ...] = ()  # per member, in the order given to run_cell

    @property
    def rate(self) -> float:
        return self.ops / self.seconds


def _requests(workload: str, worker: int, value_size: int, keys: int) -> tuple[str, list[bytes]]:
    if workload == "put":
        value = b"v" * value_size
        return "/etcdserverpb.KV/Put", [
            rpc.PutRequest(key=b"bench/%d/%06d" % (worker, i), value=value).SerializeToString()
            for i in range(keys)]
    if workload == "txn-put":  # etcd benchmark's txn-put: a Txn of one put
        value = b"v" * value_size
        return "/etcdserverpb.KV/Txn", [
            rpc.TxnRequest(success=[rpc.RequestOp(request_put=rpc.PutRequest(
                key=b"bench/%d/%06d" % (worker, i), value=value))]).SerializeToString()
            for i in range(keys)]
    if workload == RANGE_1000:
        return "/etcdserverpb.KV/Range", [rpc.RangeRequest(
            key=b"bench/1k/", range_end=b"bench/1k0", serializable=True).SerializeToString()]
    if workload not in WORKLOADS:
        raise ValueError(f"unknown workload {workload!r} (one of {', '.join(WORKLOADS)})")
    serializable = workload == "range-serializable"
    return "/etcdserverpb.KV/Range", [
        rpc.RangeRequest(key=b"bench/0/%06d" % (i % 100),
                         serializable=serializable).SerializeToString()
        for i in range(100)]


# TLS for the load: (root CA, client key, client certificate chain) in PEM.
TLSCreds = tuple[bytes, bytes | None, bytes | None]


def channel(address: str, tls: TLSCreds | None, *, aio: bool = True) -> Any:
    """A grpc channel of its own (no shared subchannel); over TLS when `tls` is given."""
    import grpc

    opts = [("grpc.use_local_subchannel_pool", 1)]
    mod: Any = grpc.aio if aio else grpc
    if tls is None:
        return mod.insecure_channel(address, options=opts)
    return mod.secure_channel(address, grpc.ssl_channel_credentials(*tls), options=opts)


async def _worker_main(addresses: Sequence[str], workload: str, worker: int, concurrency: int,
                       conns: int, seconds: float, value_size: int, tls: TLSCreds | None,
                       metadata: tuple[tuple[str, str], ...], keys: int,
                       ready: mp.Queue[int], go: Any, out: mp.Queue[tuple[int, int]]) -> None:
    import grpc

    method, reqs = _requests(workload, worker, value_size, keys)
    # Connections go round the addresses, starting at a different one in each worker.
    channels = [channel(addresses[(worker + i) % len(addresses)], tls)
                for i in range(conns)]
    calls = [ch.unary_unary(method) for ch in channels]  # bytes in, bytes out
    for ch in channels:
        await asyncio.wait_for(ch.channel_ready(), 30)
    ready.put(worker)
    await asyncio.get_running_loop().run_in_executor(None, go.wait)
    count = 0
    errors = 0
    stop_at = time.monotonic() + seconds
    n = len(reqs)
    md = metadata or None  # e.g. (("token", ...),) with auth on

    async def loop(i: int) -> None:
        nonlocal count, errors
        call = calls[i % len(calls)]
        j = i
        while time.monotonic() < stop_at:
            try:
                await call(reqs[j % n], timeout=30, metadata=md)
                count += 1
            except grpc.aio.AioRpcError:
                errors += 1
            j += concurrency

    await asyncio.gather(*(loop(i) for i in range(concurrency)))
    out.put((count, errors))
    for ch in channels:
        await ch.close()


def run_worker(main: Any, *args: Any) -> None:
    """Body of a load worker process: `main(*args)` on uvloop. Its arguments end with
    the `ready`, `go` and `out` queues; a worker that fails says so on `ready` and `out`
    (-1), so the parent neither waits for it nor counts it."""
    ready, out = args[-3], args[-1]
    try:
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as r:
            r.run(main(*args))
    except BaseException:
        ready.put(-1)
        out.put((0, -1))
        raise


def _worker(*args: Any) -> None:
    run_worker(_worker_main, *args)


async def read_http_response(reader: asyncio.StreamReader) -> int:
    """Read one HTTP/1.1 response (Content-Length or chunked body, not parsed): its status."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    i = lower.find(b"content-length:")
    if i >= 0:
        n = int(lower[i + 15:lower.index(b"\r\n", i)])
        await reader.readexactly(n)
    else:  # chunked (etcd's error answers)
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip() or b"0", 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return status


async def _http_main(requests: Callable[[str, str, int, int], Sequence[bytes]],
                     ok: Sequence[int], address: str, workload: str, worker: int,
                     concurrency: int, seconds: float, value_size: int, ready: mp.Queue[int],
                     go: Any, out: mp.Queue[tuple[int, int]]) -> None:
    """An HTTP/1.1 load worker: `concurrency` keep-alive connections, one request in
    flight each, cycling through requests(address, workload, worker, value_size) (built
    up front); a response whose status is in `ok` counts, any other is an error."""
    reqs = requests(address, workload, worker, value_size)
    host, port = address.rsplit(":", 1)
    conns = [await asyncio.open_connection(host, int(port)) for _ in range(concurrency)]
    ready.put(worker)
    await asyncio.get_running_loop().run_in_executor(None, go.wait)
    count = errors = 0
    stop_at = time.monotonic() + seconds
    n = len(reqs)

    async def loop(i: int) -> None:
        nonlocal count, errors
        reader, writer = conns[i]
        j = i
        while time.monotonic() < stop_at:
            writer.write(reqs[j % n])
            if await read_http_response(reader) in ok:
                count += 1
            else:
                errors += 1
            j += concurrency

    await asyncio.gather(*(loop(i) for i in range(concurrency)))
    out.put((count, errors))
    for _, w in conns:
        w.close()


def _http_worker(*args: Any) -> None:
    run_worker(_http_main, *args)


def http_cell(requests: Callable[[str, str, int, int], Sequence[bytes]], ok: Sequence[int],
              member: MemberProcess, workload: str, clients: int, procs: int, seconds: float,
              value_size: int) -> Cell:
    """A cell of HTTP/1.1 load workers against one member (see _http_main); `requests`
    must be a module-level function (the worker processes get it by name)."""
    args = [(requests, tuple(ok), member.address, workload, i, n, seconds, value_size)
            for i, n in enumerate(split_clients(clients, procs))]
    assert member.proc is not None
    return run_processes(_http_worker, args, [member.proc.pid], seconds + 60).cell(
        workload, clients)


def split_clients(clients: int, procs: int) -> list[int]:
    """`clients` spread over at most `procs` worker processes, as evenly as they go."""
    procs = max(1, min(procs, clients))
    return [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]


@dataclass
class WorkerRun:
    """What `run_processes` measured: each worker's (count, errors), the wall time from
    the start signal, CPU seconds of each watched pid and of the workers."""

    results: list[tuple[int, int]]
    elapsed: float
    server_cpu: tuple[float, ...]
    client_cpu: float

    def cell(self, workload: str, clients: int) -> Cell:
        return Cell(workload, clients, sum(c for c, _ in self.results), self.elapsed,
                    sum(self.server_cpu), self.client_cpu,
                    sum(e for _, e in self.results), self.server_cpu)


def run_processes(target: Callable[..., None], worker_args: Sequence[tuple[Any, ...]],
                  pids: Sequence[int], timeout: float, ready_timeout: float = 120) -> WorkerRun:
    """One spawned process per entry of `worker_args`, each running
    `target(*args, ready, go, out)`: wait until all are connected, release them
    together, and collect their (count, errors) within `timeout` seconds."""
    # spawn, not fork: the parent has used gRPC, and gRPC does not survive a fork.
    ctx = mp.get_context("spawn")
    ready: mp.Queue[int] = ctx.Queue()
    out: mp.Queue[tuple[int, int]] = ctx.Queue()
    go = ctx.Event()
    workers = [ctx.Process(target=target, args=(*args, ready, go, out)) for args in worker_args]
    for w in workers:
        w.start()
    try:
        if any(ready.get(timeout=ready_timeout) < 0 for _ in workers):
            raise RuntimeError("a load worker failed to connect")
        server0 = [cpu_seconds(p) for p in pids]
        client0 = sum(cpu_seconds(w.pid) for w in workers if w.pid)
        t0 = time.monotonic()
        go.set()
        results = [out.get(timeout=timeout) for _ in workers]
        elapsed = time.monotonic() - t0
        server1 = [cpu_seconds(p) for p in pids]
        client1 = sum(cpu_seconds(w.pid) for w in workers if w.pid)
    finally:
        for w in workers:
            w.join(30)
            if w.is_alive():
                w.kill()
    if any(e < 0 for _, e in results):
        raise RuntimeError("a load worker failed")
    used = tuple(b - a for a, b in zip(server0, server1, strict=True))
    return WorkerRun(results, elapsed, used, client1 - client0)


def run_cell(members: Sequence[MemberProcess], addresses: Sequence[str], workload: str,
             clients: int, procs: int, seconds: float, value_size: int,
             tls: TLSCreds | None = None,
             metadata: tuple[tuple[str, str], ...] = (), keys: int = 1000) -> Cell:
    """`clients` concurrent callers in `procs` worker processes, spread over `addresses`
    (over TLS when `tls` is given); server CPU is summed over `members`. `metadata` goes
    with every call; each put or txn-put worker writes `keys` keys of its own, round-robin."""
    args = [(list(addresses), workload, i, n, max(1, min(n, 8)), seconds, value_size, tls,
             metadata, keys) for i, n in enumerate(split_clients(clients, procs))]
    pids = [m.proc.pid for m in members if m.proc is not None]
    return run_processes(_worker, args, pids, seconds + 60, ready_timeout=60).cell(
        workload, clients)


def take_turns(targets: Sequence[str], workloads: Sequence[str], clients: Sequence[int],
               repeat: int, unit: dict[str, str], run: Callable[[str, str, int], Cell]
               ) -> dict[tuple[str, str, int], Cell]:
    """Every (workload, clients) cell `repeat` times with the targets taking turns (noise
    hurts them alike); prints each target's median cell and returns them all."""
    results: dict[tuple[str, str, int], Cell] = {}
    wl_width = max(len(w) for w in workloads)
    unit_width = max(len(u) for u in unit.values())
    for wl in workloads:
        for c in clients:
            runs: dict[str, list[Cell]] = {t: [] for t in targets}
            for _ in range(max(1, repeat)):
                for t in targets:
                    runs[t].append(run(t, wl, c))
            for t in targets:
                cell = results[(t, wl, c)] = median(runs[t])
                print(f"{t:13} {wl:{wl_width}} clients={c:<3} {cell.rate:9.0f} "
                      f"{unit[wl]:{unit_width}}"
                      f"  server cpu {cell.server_cpu / cell.seconds:4.2f} cores"
                      f"  client cpu {cell.client_cpu / cell.seconds:4.2f} cores"
                      + (f"  errors {cell.errors}" if cell.errors else ""), flush=True)
    return results


def one_member_each(args: argparse.Namespace, prefix: str, unit: dict[str, str], title: str,
                    cell: Callable[[MemberProcess, str, int, int], Cell],
                    member_args: Sequence[str] = (),
                    prepare: Callable[[MemberProcess], None] | None = None) -> None:
    """A one-member bench: a member per target (prepared once), every cell with the targets
    taking turns (cell(member, workload, clients, procs)), the members stopped, the table."""
    targets, clients, workloads = parse_common_args(args)
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        members: dict[str, MemberProcess] = {}
        try:
            for target in targets:
                m = members[target] = member_for(target, Path(tmp) / target,
                                                 args=member_args).start()
                if prepare is not None:
                    prepare(m)
            results = take_turns(
                targets, workloads, clients, args.repeat, unit,
                lambda t, wl, c: cell(members[t], wl, c, args.procs if c > 1 else 1))
        finally:
            for m in members.values():
                m.stop()
    print_table(title, results, targets,
                [(wl, c, unit[wl]) for wl in workloads for c in clients])


def preload(address: str, value_size: int, tls: TLSCreds | None = None,
            range_keys: int = 0) -> None:
    """The 100 keys the range workloads read (and `range_keys` for range-1000)."""
    with channel(address, tls, aio=False) as ch:
        put = ch.unary_unary("/etcdserverpb.KV/Put")
        for i in range(100):
            put(rpc.PutRequest(key=b"bench/0/%06d" % i,
                               value=b"v" * value_size).SerializeToString(), timeout=30)
        txn = ch.unary_unary("/etcdserverpb.KV/Txn")
        for start in range(0, range_keys, 100):
            txn(rpc.TxnRequest(success=[rpc.RequestOp(request_put=rpc.PutRequest(
                key=b"bench/1k/%04d" % i, value=b"v" * value_size))
                for i in range(start, min(start + 100, range_keys))]).SerializeToString(),
                timeout=30)


def median(cells: Sequence[Cell]) -> Cell:
    ordered = sorted(cells, key=lambda cell: cell.rate)
    return ordered[len(ordered) // 2]


def turn_order(targets: Sequence[str], repeat: int) -> list[str]:
    """The targets' order in repeat number `repeat`: reversed every other one, so that a
    machine getting slower or faster through a run does not favour the one run first."""
    return list(targets) if repeat % 2 == 0 else list(targets)[::-1]


def paired_ratios(tops: Sequence[Cell], bottoms: Sequence[Cell]) -> list[float]:
    """The rate ratios of runs made one after the other (repeat by repeat), sorted."""
    return sorted(a.rate / b.rate for a, b in zip(tops, bottoms, strict=True) if b.rate)


def paired_ratio(runs: dict[str, list[Cell]]) -> str:
    """petcd/etcd for one cell: the ratio of the medians, and the median of the ratios of
    the runs made one after the other (each pair saw about the same machine)."""
    if "petcd" not in runs or "etcd" not in runs:
        return ""
    p, e = runs["petcd"], runs["etcd"]
    pairs = paired_ratios(p, e)
    if not pairs:
        return ""
    text = f"petcd/etcd {median(p).rate / max(median(e).rate, 1e-9):.3f}"
    if len(pairs) > 1:
        text += (f" (paired median {pairs[len(pairs) // 2]:.3f}, pairs "
                 + " ".join(f"{x:.2f}" for x in pairs) + ")")
    return text
