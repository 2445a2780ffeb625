"""Watch performance of one member, petcd beside real etcd 3.4 run the same way:

- latency: one watcher, puts one after another; how long after a put is acknowledged
  (and after it was sent) its event reaches the watcher;
- throughput: W watchers (default 100) on a prefix, spread over S streams (default 1),
  while writer processes put as fast as the server takes them; events per second
  delivered to all watchers together, and how long the last events trail the writes.

    python bench/watch_bench.py                      # petcd and etcd, 100 watchers
    python bench/watch_bench.py --streams 100 --seconds 10
    python bench/watch_bench.py --only latency --repeat 5 --before-src OLD/src  # A/B

The clients are Python (grpc.aio, uvloop, separate processes) and share the machine's
cores with the server: server and client CPU are printed beside the rates. etcd sends
one response per watcher per revision, petcd one per watcher per applied batch, so a
Python receiver parses far more messages for etcd: read the client CPU column.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import TARGET_HELP, cpu_seconds, member_for
from lone_put_cpu import sched

from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.testing import MemberProcess, PetcdProcess, have_etcd

WATCH = "/etcdserverpb.Watch/Watch"
PUT = "/etcdserverpb.KV/Put"
OPTIONS = [("grpc.max_receive_message_length", 256 << 20), ("grpc.use_local_subchannel_pool", 1)]


def _create(key: bytes, end: bytes) -> bytes:
    return rpc.WatchRequest(create_request=rpc.WatchCreateRequest(
        key=key, range_end=end)).SerializeToString()


def _run(coro: Any) -> Any:
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as r:
        return r.run(coro)


# -- latency -------------------------------------------------------------------------

Stamps = list[tuple[float, float, float]]  # per put: sent, answered, its event seen


async def _latency(address: str, n: int, value_size: int, separate: bool = False) -> Stamps:
    import grpc

    async with grpc.aio.insecure_channel(address, options=OPTIONS) as ch, \
            grpc.aio.insecure_channel(address, options=OPTIONS) as ch2:
        # separate: the watcher has its own connection (as a watching process would).
        watch = (ch2 if separate else ch).stream_stream(WATCH)()
        put = ch.unary_unary(PUT)
        await watch.write(_create(b"lat", b""))
        await watch.read()  # created
        seen: dict[int, float] = {}
        done = asyncio.Event()
        parse = rpc.WatchResponse.FromString

        async def reader() -> None:
            while (raw := await watch.read()) is not grpc.aio.EOF:
                now = time.perf_counter()
                for e in parse(raw).events:
                    seen[e.kv.mod_revision] = now
                if len(seen) >= n:
                    done.set()

        task = asyncio.get_running_loop().create_task(reader())
        value = b"v" * value_size
        sent: list[tuple[int, float, float]] = []
        req = rpc.PutRequest(key=b"lat", value=value).SerializeToString()
        for _ in range(n):
            t0 = time.perf_counter()
            resp = rpc.PutResponse.FromString(await put(req))
            sent.append((resp.header.revision, t0, time.perf_counter()))
        await asyncio.wait_for(done.wait(), 30)
        watch.cancel()
        task.cancel()
    return [(t0, t1, seen[r]) for r, t0, t1 in sent]


async def _paired(addresses: list[str], n: int, value_size: int, separate: bool
                  ) -> list[list[float]]:
    """One client, one watcher per server; put i goes to every server in turn (the order
    rotating), so each server's i-th sample is taken at the same moment as the others':
    on a loaded machine the noise hits all of them alike. Event after send, ms."""
    import grpc

    value = b"v" * value_size
    req = rpc.PutRequest(key=b"lat", value=value).SerializeToString()
    parse = rpc.WatchResponse.FromString
    chans = []
    sides = []
    for address in addresses:
        ch = grpc.aio.insecure_channel(address, options=OPTIONS)
        wch = grpc.aio.insecure_channel(address, options=OPTIONS) if separate else ch
        chans += [ch, wch]
        watch = wch.stream_stream(WATCH)()
        await watch.write(_create(b"lat", b""))
        await watch.read()  # created
        sides.append((ch.unary_unary(PUT), watch))
    seen: list[dict[int, float]] = [{} for _ in addresses]
    arrived = [asyncio.Event() for _ in addresses]

    async def reader(j: int) -> None:
        watch = sides[j][1]
        while (raw := await watch.read()) is not grpc.aio.EOF:
            now = time.perf_counter()
            for e in parse(raw).events:
                seen[j][e.kv.mod_revision] = now
            arrived[j].set()

    loop = asyncio.get_running_loop()
    tasks = [loop.create_task(reader(j)) for j in range(len(sides))]
    out: list[list[float]] = [[] for _ in addresses]
    for i in range(n):
        for k in range(len(sides)):
            j = (i + k) % len(sides)
            t0 = time.perf_counter()
            rev = rpc.PutResponse.FromString(await sides[j][0](req)).header.revision
            while rev not in seen[j]:
                arrived[j].clear()
                await asyncio.wait_for(arrived[j].wait(), 30)
            out[j].append((seen[j].pop(rev) - t0) * 1000)
    for t in tasks:
        t.cancel()
    for _, watch in sides:
        watch.cancel()
    for ch in chans:
        await ch.close()
    return out


def _paired_proc(addresses: list[str], n: int, value_size: int, separate: bool,
                 out: Any) -> None:
    out.put(_run(_paired(addresses, n, value_size, separate)))


def _latency_proc(address: str, n: int, value_size: int, out: Any, separate: bool = False,
                  cpu: int | None = None) -> None:
    if cpu is not None:  # (a placement experiment: the client on one core)
        os.sched_setaffinity(0, {cpu})
    out.put(_run(_latency(address, n, value_size, separate)))


def latency_stamps(address: str, n: int, value_size: int, separate: bool = False,
                   cpu: int | None = None) -> Stamps:
    """One latency run in a fresh client process: per put, when it was sent, when its
    answer came and when its event was seen (time.perf_counter, the clock servers
    traced by bench/watch_path.py use too)."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_latency_proc, args=(address, n, value_size, q, separate, cpu))
    p.start()
    try:
        return q.get(timeout=300)  # type: ignore[no-any-return]
    finally:
        p.join(10)
        if p.is_alive():
            p.kill()


def latency(address: str, n: int, value_size: int, separate: bool = False,
            cpu: int | None = None) -> tuple[list[float], list[float], list[float]]:
    """One latency run in a fresh client process: (after ack, after send, put) in ms."""
    stamps = latency_stamps(address, n, value_size, separate, cpu)
    return ([(seen - t1) * 1000 for _, t1, seen in stamps],
            [(seen - t0) * 1000 for t0, _, seen in stamps],
            [(t1 - t0) * 1000 for t0, t1, _ in stamps])


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


# -- throughput ----------------------------------------------------------------------

async def _receiver(address: str, streams: int, per_stream: int, ready: Any, stop: Any,
                    out: Any) -> None:
    import grpc

    async with grpc.aio.insecure_channel(address, options=OPTIONS) as ch:
        calls = [ch.stream_stream(WATCH)() for _ in range(streams)]
        for call in calls:
            for _ in range(per_stream):
                await call.write(_create(b"tp/", b"tp0"))
            for _ in range(per_stream):
                await call.read()
        count = 0
        messages = 0
        last = 0.0
        parse = rpc.WatchResponse.FromString

        async def read(call: Any) -> None:
            nonlocal count, messages, last
            while (raw := await call.read()) is not grpc.aio.EOF:
                count += len(parse(raw).events)
                messages += 1
                last = time.time()

        tasks = [asyncio.get_running_loop().create_task(read(c)) for c in calls]
        ready.put(1)
        while True:
            await asyncio.sleep(0.05)
            expected = stop.value
            if expected and (count >= expected or time.time() - max(last, 1) > 3):
                break
        for c in calls:
            c.cancel()
        for t in tasks:
            t.cancel()
    out.put((count, messages, last))


def _receiver_proc(*args: Any) -> None:
    _run(_receiver(*args))


async def _writer(address: str, concurrency: int, seconds: float, value_size: int,
                  wid: int, go: Any, out: Any) -> None:
    import grpc

    async with grpc.aio.insecure_channel(address, options=OPTIONS) as ch:
        put = ch.unary_unary(PUT)
        reqs = [rpc.PutRequest(key=b"tp/%d/%d" % (wid, i), value=b"v" * value_size)
                .SerializeToString() for i in range(1000)]
        await ch.channel_ready()
        go.wait()
        count = 0
        stop_at = time.monotonic() + seconds

        async def loop(i: int) -> None:
            nonlocal count
            while time.monotonic() < stop_at:
                await put(reqs[i % 1000], timeout=30)
                count += 1
                i += concurrency

        await asyncio.gather(*(loop(i) for i in range(concurrency)))
    out.put((count, time.time()))


def _writer_proc(*args: Any) -> None:
    _run(_writer(*args))


def throughput(member: MemberProcess, watchers: int, streams: int, writers: int,
               concurrency: int, seconds: float, value_size: int) -> dict[str, float]:
    ctx = mp.get_context("spawn")  # gRPC does not survive a fork
    recv_procs = min(streams, 2) if watchers else 0
    ready, out, wout = ctx.Queue(), ctx.Queue(), ctx.Queue()
    stop = ctx.Value("q", 0)
    go = ctx.Event()
    per_proc = [streams // recv_procs + (1 if i < streams % recv_procs else 0)
                for i in range(recv_procs)]
    per_stream = watchers // streams if watchers else 0
    receivers = [ctx.Process(target=_receiver_proc, args=(member.address, per_proc[i],
                                                          per_stream, ready, stop, out))
                 for i in range(recv_procs)]
    wprocs = [ctx.Process(target=_writer_proc, args=(member.address, concurrency, seconds,
                                                     value_size, i, go, wout))
              for i in range(writers)]
    for p in receivers + wprocs:
        p.start()
    try:
        for _ in receivers:
            ready.get(timeout=60)
        assert member.proc is not None
        server0 = cpu_seconds(member.proc.pid)
        client0 = sum(cpu_seconds(p.pid) for p in receivers if p.pid)
        t0 = time.time()
        go.set()
        wres = [wout.get(timeout=seconds + 60) for _ in wprocs]
        puts = sum(c for c, _ in wres)
        writes_end = max(t for _, t in wres)
        stop.value = puts * per_stream * streams
        res = [out.get(timeout=120) for _ in receivers]
        server1 = cpu_seconds(member.proc.pid)
        client1 = sum(cpu_seconds(p.pid) for p in receivers if p.pid)
    finally:
        for p in receivers + wprocs:
            p.join(10)
            if p.is_alive():
                p.kill()
    events = sum(c for c, _, _ in res)
    last = max([writes_end] + [t for _, _, t in res])
    span = last - t0
    return {"puts/s": puts / (writes_end - t0), "events/s": events / span,
            "delivered": events / max(1, puts * per_stream * streams),
            "messages/s": sum(m for _, m, _ in res) / span,
            "trail_s": max(0.0, last - writes_end),
            "server_cores": (server1 - server0) / span,
            "client_cores": (client1 - client0) / span}


def start(target: str, base: Path, before_src: str = "") -> MemberProcess:
    if target == "petcd-before":  # another checkout's petcd (see bench/ab_bench.py)
        trace_dir = Path(__file__).resolve().parent / "stagetrace"
        return PetcdProcess(base / target, env={"PETCD_SRC": before_src,
                                                "PYTHONPATH": str(trace_dir)}).start()
    return member_for(target, base / target).start()


def pin(pid: int, cpus: set[int]) -> None:
    """Placement experiments only: every thread of a server process on `cpus` (threads it
    starts later inherit the mask)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        os.sched_setaffinity(int(tid), cpus)


def paired(members: dict[str, MemberProcess], args: Any, separate: bool) -> None:
    ctx = mp.get_context("spawn")
    names = list(members)
    def totals(m: MemberProcess) -> tuple[int, int]:
        assert m.proc is not None
        st = sched(m.proc.pid).values()
        return sum(x[0] for x in st), sum(x[2] + x[3] for x in st)

    for r in range(args.repeat):
        before = {t: totals(members[t]) for t in names}
        q = ctx.Queue()
        p = ctx.Process(target=_paired_proc, args=([members[t].address for t in names],
                                                   args.latency_puts, args.value_size,
                                                   separate, q))
        p.start()
        res = q.get(timeout=600)
        p.join()
        n = args.latency_puts
        cpu = "  ".join(f"{t} {(totals(members[t])[0] - before[t][0]) / n / 1e3:.0f} us, "
                        f"{(totals(members[t])[1] - before[t][1]) / n:.1f} switches"
                        for t in names)
        print(f"server CPU and context switches per put (+event): {cpu}")
        load = os.getloadavg()[0]
        cols = "  ".join(f"{t} p50 {statistics.median(x):.3f} p90 {pct(x, 90):.3f}"
                         for t, x in zip(names, res, strict=True))
        print(f"paired run {r} ({args.latency_puts} puts each, {args.watcher_conn} "
              f"connection, load {load:.2f}): {cols}", flush=True)
        for i, t in enumerate(names):
            for u, y in zip(names[i + 1:], res[i + 1:], strict=True):
                ratios = [a / b for a, b in zip(res[i], y, strict=True)]
                print(f"    {t}/{u}: median of per-put ratios "
                      f"{statistics.median(ratios):.3f}", flush=True)


def print_latency(target: str, n: int, conn: str, runs: list[tuple[list[float], list[float],
                                                                    list[float]]]) -> None:
    for after_ack, after_send, put_ms in runs:
        print(f"{target:12} latency ({n} sequential puts, 1 watcher, {conn} connection): "
              f"event after ack p50 {statistics.median(after_ack):.2f} ms "
              f"p99 {pct(after_ack, 99):.2f} ms; after send p50 "
              f"{statistics.median(after_send):.2f} ms p99 {pct(after_send, 99):.2f} "
              f"ms; put p50 {statistics.median(put_ms):.2f} ms", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--targets", default="petcd,etcd",
                    help=TARGET_HELP + "; petcd-before: the checkout given by --before-src")
    ap.add_argument("--before-src", default="",
                    help="another checkout's src directory (adds target petcd-before)")
    ap.add_argument("--only", choices=["all", "latency", "throughput"], default="all")
    ap.add_argument("--latency-puts", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=1,
                    help="latency runs per target, the targets taking turns (one client "
                         "process per run); the median of the runs' p50 is printed last")
    ap.add_argument("--paired", action="store_true",
                    help="latency: one client process takes turns putting to every target "
                         "(sample i of each at the same moment; for loaded machines)")
    ap.add_argument("--watcher-conn", choices=["same", "separate"], default="same",
                    help="the latency watcher on the putting client's connection or its own")
    ap.add_argument("--server-cpus", default="",
                    help="placement experiment: pin the servers' threads to these CPUs "
                         "(comma list)")
    ap.add_argument("--client-cpu", type=int, default=None,
                    help="placement experiment: pin the latency client to this CPU")
    ap.add_argument("--watchers", type=int, default=100)
    ap.add_argument("--streams", type=int, default=1)
    ap.add_argument("--writers", type=int, default=2, help="writer processes")
    ap.add_argument("--concurrency", type=int, default=32, help="puts in flight per writer")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--value-size", type=int, default=100)
    args = ap.parse_args()
    targets = [t for t in args.targets.split(",") if t]
    if args.before_src and "petcd-before" not in targets:
        targets.insert(0, "petcd-before")
    if "etcd" in targets and not have_etcd():
        print("etcd not installed: skipping it", file=sys.stderr)
        targets.remove("etcd")
    separate = args.watcher_conn == "separate"
    with tempfile.TemporaryDirectory(prefix="watch-bench-") as tmp:
        if args.only != "throughput":
            # Every target up at once, latency runs taking turns: the same conditions.
            members = {t: start(t, Path(tmp), args.before_src) for t in targets}
            try:
                if args.server_cpus:
                    for m in members.values():
                        assert m.proc is not None
                        pin(m.proc.pid, {int(c) for c in args.server_cpus.split(",")})
                runs: dict[str, list[Any]] = {t: [] for t in targets}
                if args.paired:
                    paired(members, args, separate)
                    return
                for _ in range(args.repeat):
                    for t, m in members.items():
                        runs[t].append(latency(m.address, args.latency_puts, args.value_size,
                                               separate, args.client_cpu))
                        print_latency(t, args.latency_puts, args.watcher_conn, runs[t][-1:])
                if args.repeat > 1:
                    for t in targets:
                        p50s = [statistics.median(s) for _, s, _ in runs[t]]
                        print(f"{t:12} median of {args.repeat} runs: event after send p50 "
                              f"{statistics.median(p50s):.3f} ms (runs: "
                              f"{' '.join(f'{x:.2f}' for x in p50s)}); load average "
                              f"{os.getloadavg()[0]:.2f}", flush=True)
            finally:
                for m in members.values():
                    m.stop()
        if args.only == "latency":
            return
        (Path(tmp) / "tp").mkdir()
        for target in targets:
            member = start(target, Path(tmp) / "tp", args.before_src)
            try:
                base = throughput(member, 0, 1, args.writers, args.concurrency, args.seconds,
                                  args.value_size)
                print(f"{target:12} baseline (no watchers, {args.writers}x{args.concurrency} "
                      f"writers): {base['puts/s']:.0f} puts/s; server "
                      f"{base['server_cores']:.2f} cores", flush=True)
                r = throughput(member, args.watchers, args.streams, args.writers,
                               args.concurrency, args.seconds, args.value_size)
                print(f"{target:12} throughput ({args.watchers} watchers on {args.streams} "
                      f"stream(s), {args.writers}x{args.concurrency} writers): "
                      f"{r['puts/s']:.0f} puts/s, {r['events/s']:.0f} events/s delivered "
                      f"({r['delivered']:.1%} of puts x watchers, {r['messages/s']:.0f} "
                      f"responses/s), last events {r['trail_s']:.2f} s after the writes; "
                      f"server {r['server_cores']:.2f} cores, receivers "
                      f"{r['client_cores']:.2f} cores", flush=True)
            finally:
                member.stop()


if __name__ == "__main__":
    main()
