"""What a grpc client pays per call against each target: the load workers' own CPU (user,
sys), context switches and syscalls per call, beside the ops/s and the server's CPU per
call, closed loop (as bench/loadgen.py runs) and at fixed offered rates.

    python bench/client_cost.py --workloads put --clients 64 --rates 0,1500,3000 --repeat 3

A grpc.aio client's CPU per call falls steeply as the call rate grows (each wakeup of its
poller and of its event loop serves more answers), so two targets answering at different
rates show different client CPU per call whatever their answers look like: compare them
at the same offered rate (`--rates`, total calls/s; 0 is closed loop). Syscall and
scheduler counts come from `perf stat` tracepoints on the workers (columns left out when
perf cannot attach).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from loadgen import (
    _requests,
    channel,
    cpu_seconds,
    member_for,
    parse_common_args,
    preload,
    split_clients,
)

from petcd.testing import MemberProcess

SYSCALLS = ("epoll_wait", "epoll_pwait", "recvmsg", "sendmsg", "recvfrom", "read", "write",
            "futex")
EVENTS = ["sched:sched_switch", "raw_syscalls:sys_enter",
          *(f"syscalls:sys_enter_{s}" for s in SYSCALLS)]


async def _worker_main(address: str, workload: str, worker: int, concurrency: int,
                       conns: int, seconds: float, rate: float, ready: mp.Queue[Any],
                       go: Any, out: mp.Queue[Any]) -> None:
    """bench/loadgen.py's worker, paced at `rate` calls/s when rate > 0 (each of the
    `concurrency` callers starts a call every concurrency/rate seconds, staggered); puts
    (count, user s, sys s, voluntary and involuntary switches) of the measured part."""
    method, reqs = _requests(workload, worker, 256, 1000)
    channels = [channel(address, None) for _ in range(conns)]
    calls = [ch.unary_unary(method) for ch in channels]
    for ch, call in zip(channels, calls, strict=True):
        await asyncio.wait_for(ch.channel_ready(), 30)
        await call(reqs[0], timeout=30)  # the first call of a channel is not measured
    ready.put(os.getpid())
    await asyncio.get_running_loop().run_in_executor(None, go.wait)
    count = 0
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    start = time.monotonic()
    stop_at = start + seconds
    period = concurrency / rate if rate > 0 else 0.0

    async def loop(i: int) -> None:
        nonlocal count
        call = calls[i % len(calls)]
        j = i
        due = start + i * period / concurrency
        while time.monotonic() < stop_at:
            if period:
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                due += period
            await call(reqs[j % len(reqs)], timeout=30)
            count += 1
            j += concurrency

    await asyncio.gather(*(loop(i) for i in range(concurrency)))
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    out.put((count, r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime,
             r1.ru_nvcsw - r0.ru_nvcsw, r1.ru_nivcsw - r0.ru_nivcsw))
    for ch in channels:
        await ch.close()


def _worker(*args: Any) -> None:
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as r:
        r.run(_worker_main(*args))


@dataclass
class Cost:
    ops: int
    seconds: float
    user: float
    sys: float
    vcsw: int
    ivcsw: int
    server_cpu: float
    events: dict[str, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.ops / self.seconds

    def line(self) -> str:
        n = max(1, self.ops)
        s = (f"{self.rate:7.0f} ops/s  client {(self.user + self.sys) / n * 1e6:5.1f} us/op "
             f"(user {self.user / n * 1e6:5.1f} sys {self.sys / n * 1e6:5.1f}) "
             f"vcsw {self.vcsw / n:4.2f} ivcsw {self.ivcsw / n:4.2f}  "
             f"server {self.server_cpu / n * 1e6:5.1f} us/op")
        if self.events:
            short = {"sched_switch": "switch", "sys_enter": "syscalls"}
            s += "\n      per op: " + " ".join(
                f"{short.get(k, k)} {v / n:.2f}" for k, v in self.events.items())
        return s


def _perf(pids: list[int]) -> subprocess.Popen[str] | None:
    if shutil.which("perf") is None:
        return None
    return subprocess.Popen(["perf", "stat", "-x", ",", "-e", ",".join(EVENTS),
                             "-p", ",".join(map(str, pids))],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _perf_counts(perf: subprocess.Popen[str] | None) -> dict[str, int]:
    if perf is None:
        return {}
    perf.send_signal(signal.SIGINT)
    _, err = perf.communicate(timeout=30)
    counts: dict[str, int] = {}
    for line in err.splitlines():
        f = line.split(",")
        if len(f) > 2 and f[0].strip().isdigit():
            counts[f[2].rsplit(":", 1)[-1].removeprefix("sys_enter_")] = int(f[0])
    return counts


def run_cost(member: MemberProcess, workload: str, clients: int, procs: int, conns: int,
             seconds: float, rate: float) -> Cost:
    ctx = mp.get_context("spawn")
    ready: mp.Queue[Any] = ctx.Queue()
    out: mp.Queue[Any] = ctx.Queue()
    go = ctx.Event()
    split = split_clients(clients, procs)
    workers = [ctx.Process(target=_worker, args=(
        member.address, workload, i, n, max(1, min(n, conns)), seconds, rate * n / clients,
        ready, go, out)) for i, n in enumerate(split)]
    for w in workers:
        w.start()
    try:
        pids = [ready.get(timeout=60) for _ in workers]
        perf = _perf(pids)
        time.sleep(0.3)  # perf attached
        assert member.proc is not None
        s0 = cpu_seconds(member.proc.pid)
        t0 = time.monotonic()
        go.set()
        results = [out.get(timeout=seconds + 60) for _ in workers]
        elapsed = time.monotonic() - t0
        s1 = cpu_seconds(member.proc.pid)
        events = _perf_counts(perf)
    finally:
        for w in workers:
            w.join(30)
            if w.is_alive():
                w.kill()
    total = [sum(r[i] for r in results) for i in range(5)]
    return Cost(int(total[0]), elapsed, total[1], total[2], int(total[3]), int(total[4]),
                s1 - s0, events)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--targets", default="petcd,etcd")
    ap.add_argument("--workloads", default="put")
    ap.add_argument("--clients", default="64")
    ap.add_argument("--rates", default="0", help="offered calls/s, comma list; 0: closed loop")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--conns", type=int, default=8, help="channels per worker (loadgen's 8)")
    args = ap.parse_args()
    targets, clients, workloads = parse_common_args(args)
    with tempfile.TemporaryDirectory(prefix="client-cost-") as tmp:
        members: dict[str, MemberProcess] = {}
        try:
            for t in targets:
                members[t] = member_for(t, Path(tmp) / t).start()
                preload(members[t].address, 256)
            for wl in workloads:
                for c in clients:
                    for rate in (float(r) for r in args.rates.split(",")):
                        for _ in range(max(1, args.repeat)):
                            for t in targets:
                                cost = run_cost(members[t], wl, c, args.procs if c > 1 else 1,
                                                args.conns, args.seconds, rate)
                                load = os.getloadavg()[0]
                                print(f"{t:6} {wl} clients={c} rate={rate:.0f} "
                                      f"{cost.line()}  load {load:.1f}", flush=True)
        finally:
            for m in members.values():
                m.stop()


if __name__ == "__main__":
    main()
