"""Scale: a 3-member cluster loaded with many keys (default 1 million of 256 bytes), petcd
and real etcd 3.4 one after the other in the same run, the same steps for both:

- load rate (puts/s, `--clients` concurrent callers in `--procs` worker processes)
- RSS of each member after the load (anonymous memory and mapped file pages apart: both
  map their backend file, whose touched pages count as RSS but are the page cache's)
- a full paginated range (`--page` keys per call) and one `get --prefix` of `--prefix-keys`
  keys (one response): the member's peak anonymous-memory growth beside the response size
  (RssAnon sampled every 5 ms during the call, the peak minus the value before; the same
  for both servers)
- defragment time (on the leader)
- restart of a follower: clean stop, then kill -9 (time until /health answers and it has
  applied what the leader has); replay is bounded by `--snapshot-count`
- a new member added and caught up by a snapshot (time until it applied the leader's index)

    python bench/scale_bench.py                          # 1M keys, petcd then etcd
    python bench/scale_bench.py --keys 100000 --targets petcd --json out.json

Data dirs go under --dir (default: the system temp dir) and are removed after each target.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from cluster_bench import leader_of, start_cluster
from loadgen import cpu_seconds, member_for, run_processes, run_worker, split_clients

from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.testing import MemberProcess, have_etcd, member_status
from petcd.testing.memory import PeakAnon, proc_mem

KEY_FMT = b"k/%08d"
_BIG = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


# -- load ---------------------------------------------------------------------------------

async def _load_main(address_list: Sequence[str], worker: int, workers: int, keys: int,
                     clients: int, value_size: int, ready: mp.Queue[int], go: Any,
                     out: mp.Queue[tuple[int, int]]) -> None:
    import grpc

    channels = [grpc.aio.insecure_channel(address_list[(worker + i) % len(address_list)],
                                          options=[("grpc.use_local_subchannel_pool", 1)])
                for i in range(max(1, min(clients, 8)))]
    calls = [ch.unary_unary("/etcdserverpb.KV/Put") for ch in channels]
    for ch in channels:
        await asyncio.wait_for(ch.channel_ready(), 60)
    ready.put(worker)
    await asyncio.get_running_loop().run_in_executor(None, go.wait)
    # A PutRequest by hand: field 1 (key), field 2 (value); the value's bytes are shared.
    tail = b"\x12" + _varint(value_size) + b"v" * value_size
    todo = iter(range(worker, keys, workers))
    done = errors = 0

    async def loop(i: int) -> None:
        nonlocal done, errors
        call = calls[i % len(calls)]
        for n in todo:  # one iterator shared by the loops of this process
            key = KEY_FMT % n
            req = b"\x0a" + _varint(len(key)) + key + tail
            for attempt in range(20):
                try:
                    await call(req, timeout=60)
                    break
                except grpc.aio.AioRpcError:
                    errors += 1  # e.g. etcd's "too many requests": back off and retry
                    await asyncio.sleep(0.05 * (attempt + 1))
            else:
                raise RuntimeError(f"put {key!r} failed 20 times")
            done += 1

    await asyncio.gather(*(loop(i) for i in range(clients)))
    out.put((done, errors))
    for ch in channels:
        await ch.close()


def _load_worker(*args: Any) -> None:
    run_worker(_load_main, *args)


def load(addresses: Sequence[str], keys: int, clients: int, procs: int,
         value_size: int) -> tuple[float, int, float]:
    """Put keys 0..keys-1 once each; returns (seconds, retried errors, the load
    processes' CPU seconds)."""
    per = split_clients(clients, procs)  # the workers split the keys between them
    args = [(list(addresses), i, len(per), keys, n, value_size) for i, n in enumerate(per)]
    run = run_processes(_load_worker, args, [], 7200)
    if sum(d for d, _ in run.results) != keys:
        raise RuntimeError(f"load incomplete: {run.results}")
    return run.elapsed, sum(e for _, e in run.results), run.client_cpu


# -- memory -------------------------------------------------------------------------------

def du(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            with contextlib.suppress(FileNotFoundError):  # (a file that went meanwhile)
                total += os.stat(os.path.join(root, f)).st_blocks * 512
    return total


def disk_parts(data_dir: Path) -> dict[str, int]:
    """Bytes on disk of a member's backend file, its WAL and the rest of snap/ (Raft
    snapshot markers, received backend files), both servers lay them out alike."""
    snap = data_dir / "member" / "snap"
    db = 0
    with contextlib.suppress(FileNotFoundError):
        db = os.stat(snap / "db").st_blocks * 512
    return {"db": db, "wal": du(data_dir / "member" / "wal"), "snap": du(snap) - db,
            "total": du(data_dir)}


# -- cluster calls ------------------------------------------------------------------------

def unary(address: str, method: str, req: Any, resp_type: Any, timeout: float = 600) -> Any:
    import grpc

    with grpc.insecure_channel(address, options=_BIG) as ch:
        return ch.unary_unary(method, request_serializer=type(req).SerializeToString,
                              response_deserializer=resp_type.FromString)(req, timeout=timeout)


def wait_for(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.02)


def caught_up(m: MemberProcess, index: int) -> bool:
    st = member_status(m, timeout=2.0)
    return st is not None and st.applied >= index


def leader_index(leader: MemberProcess) -> int:
    st = member_status(leader, timeout=5.0)
    assert st is not None
    return st.committed


def full_range(address: str, keys: int, page: int) -> tuple[float, int]:
    """Every key, `page` at a time (linearizable); returns (seconds, keys seen)."""
    import grpc

    start, end = b"k/", b"k0"
    seen = 0
    t0 = time.monotonic()
    with grpc.insecure_channel(address, options=_BIG) as ch:
        call = ch.unary_unary("/etcdserverpb.KV/Range",
                              request_serializer=rpc.RangeRequest.SerializeToString,
                              response_deserializer=rpc.RangeResponse.FromString)
        while True:
            r = call(rpc.RangeRequest(key=start, range_end=end, limit=page), timeout=600)
            seen += len(r.kvs)
            if not r.more:
                break
            start = r.kvs[-1].key + b"\0"
    return time.monotonic() - t0, seen


def prefix_get(address: str, prefix: bytes) -> tuple[float, int, int]:
    """One Range of the whole prefix; returns (seconds, keys, response bytes)."""
    import grpc

    end = prefix[:-1] + bytes([prefix[-1] + 1])
    with grpc.insecure_channel(address, options=_BIG) as ch:
        call = ch.unary_unary("/etcdserverpb.KV/Range")  # raw bytes back
        t0 = time.monotonic()
        raw = call(rpc.RangeRequest(key=prefix, range_end=end).SerializeToString(), timeout=600)
        elapsed = time.monotonic() - t0
    return elapsed, len(rpc.RangeResponse.FromString(raw).kvs), len(raw)


def member_add(address: str, peer_url: str, timeout: float = 120) -> None:
    import grpc

    deadline = time.monotonic() + timeout
    while True:
        try:
            unary(address, "/etcdserverpb.Cluster/MemberAdd",
                  rpc.MemberAddRequest(peerURLs=[peer_url]), rpc.MemberAddResponse, 30)
            return
        except grpc.RpcError as e:  # strict reconfiguration: not healthy long enough yet
            if "unhealthy" not in str(e.details()) or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


# -- one target ---------------------------------------------------------------------------

def run_target(target: str, base: Path, args: argparse.Namespace) -> dict[str, Any]:
    res: dict[str, Any] = {"target": target}
    snap = str(args.snapshot_count or max(1000, args.keys // 10))
    extra = ["--snapshot-count", snap, "--quota-backend-bytes", str(8 << 30)]
    members = start_cluster(target, base, 3, extra)
    try:
        leader = leader_of(members)
        followers = [m for m in members if m is not leader]
        addrs = [m.address for m in members]
        pids = {m.name + ("*" if m is leader else ""): m.proc.pid for m in members if m.proc}
        cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
        spies = ([spy(leader, f"{target}-load-leader", args.profile)]
                 if args.profile and target != "etcd" else [])
        secs, retried, client_cpu = load(addrs, args.keys, args.clients, args.procs,
                                         args.value_size)
        for p in spies:
            p.send_signal(signal.SIGINT)
            p.wait(60)
        res["load_s"] = secs
        res["load_rate"] = args.keys / secs
        res["load_retries"] = retried
        res["load_client_cpu"] = client_cpu
        idx = leader_index(leader)
        wait_for(lambda: all(caught_up(m, idx) for m in members), 600, "members apply")
        # CPU seconds each member spent on the load (until all applied it).
        res["load_cpu"] = {name: cpu_seconds(pid) - cpu0[name] for name, pid in pids.items()}
        res["rss"] = {name: proc_mem(pid) for name, pid in pids.items()}
        res["disk"] = {m.name: du(m.data_dir) for m in members}
        res["disk_parts"] = disk_parts(leader.data_dir)
        if "reads" in args.steps:
            _reads(leader, res, args)
        if "defrag" in args.steps:
            t0 = time.monotonic()
            unary(leader.address, "/etcdserverpb.Maintenance/Defragment",
                  rpc.DefragmentRequest(), rpc.DefragmentResponse, 1800)
            res["defrag_s"] = time.monotonic() - t0
        if "restart" in args.steps:
            _restarts(leader, followers[0], res)
        if "new" in args.steps:
            _new_member(target, base, members, leader, extra, res,
                        args.profile if target != "etcd" else "")
    finally:
        for m in members:
            m.kill()
        if args.keep_logs:
            for m in members:
                with contextlib.suppress(OSError):
                    shutil.copy(m.log_path, Path(args.keep_logs) / f"{target}-{m.name}.log")
        shutil.rmtree(base / target, ignore_errors=True)
    return res


def _reads(leader: MemberProcess, res: dict[str, Any], args: argparse.Namespace) -> None:
    pid = leader.proc.pid if leader.proc else 0
    with PeakAnon(pid, every=0.005) as pk:
        res["range_s"], n = full_range(leader.address, args.keys, args.page)
    if n != args.keys:
        raise RuntimeError(f"paginated range saw {n} keys, not {args.keys}")
    res["range_anon_growth"] = pk.peak - pk.before
    digits = len(str(args.prefix_keys)) - 1
    prefix = b"k/" + b"0" * (8 - digits)
    cpu0 = cpu_seconds(pid)
    with PeakAnon(pid, every=0.005) as pk:
        res["prefix_s"], n, size = prefix_get(leader.address, prefix)
    res["prefix_cpu"] = cpu_seconds(pid) - cpu0
    if n != min(args.prefix_keys, args.keys):
        raise RuntimeError(f"get --prefix returned {n} keys")
    res["prefix_keys"], res["prefix_bytes"] = n, size
    res["prefix_anon_peak_growth"] = pk.peak - pk.before
    res["prefix_anon_after_growth"] = pk.after - pk.before


def _restarts(leader: MemberProcess, victim: MemberProcess, res: dict[str, Any]) -> None:
    for how in ("stop", "kill9"):
        if how == "stop":
            victim.stop(60)
        else:
            victim.kill()
        idx = leader_index(leader)
        t0 = time.monotonic()
        victim.start(wait=False)
        victim.wait_ready(600)
        res[f"restart_{how}_ready_s"] = time.monotonic() - t0
        wait_for(lambda v=victim, i=idx: caught_up(v, i), 600, "restarted member")
        res[f"restart_{how}_caught_up_s"] = time.monotonic() - t0
        if victim.proc:
            res[f"restart_{how}_rss"] = proc_mem(victim.proc.pid)


def spy(m: MemberProcess, name: str, out_dir: str) -> subprocess.Popen[bytes]:
    """py-spy recording a member until SIGINT (collapsed stacks, for flamegraph.pl)."""
    assert m.proc is not None
    exe = next((e for e in (shutil.which("py-spy"), Path(sys.executable).with_name("py-spy"),
                            "/tmp/spy/bin/py-spy") if e and os.path.exists(e)), "py-spy")
    return subprocess.Popen([str(exe), "record", "--threads", "-f", "raw", "--pid",
                             str(m.proc.pid), "-o", f"{out_dir}/{name}.txt"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _new_member(target: str, base: Path, members: list[MemberProcess], leader: MemberProcess,
                extra: list[str], res: dict[str, Any], profile: str) -> None:
    new = member_for(target, base / target / "m3", name="m3", args=[
        *extra, "--initial-cluster-token", "bench-cluster"])
    new.initial_cluster = ",".join(f"{m.name}={m.peer_url}" for m in [*members, new])
    new.initial_cluster_state = "existing"
    member_add(leader.address, new.peer_url)
    members.append(new)
    idx = leader_index(leader)
    t0 = time.monotonic()
    new.start(wait=False)
    spies = [spy(m, f"{target}-{m.name}", profile) for m in (leader, new) if profile]
    wait_for(lambda: caught_up(new, idx), 1800, "new member")
    res["new_member_s"] = time.monotonic() - t0
    for p in spies:
        p.send_signal(signal.SIGINT)
        p.wait(60)
    if new.proc:
        res["new_member_rss"] = proc_mem(new.proc.pid)
    res["disk_new_member"] = du(new.data_dir)


# -- report -------------------------------------------------------------------------------

def _mb(n: float) -> str:
    return f"{n / 1e6:.0f} MB"


def report(results: Sequence[dict[str, Any]], args: argparse.Namespace) -> None:
    names = [r["target"] for r in results]
    print(f"\n{args.keys} keys x {args.value_size} B, 3 members; load {args.clients} clients "
          f"in {args.procs} processes; snapshot-count {args.snapshot_count or 'keys/10'}")
    print("load: " + os.popen("uptime").read().strip())

    def row(label: str, fn: Callable[[dict[str, Any]], str]) -> None:
        def cell(r: dict[str, Any]) -> str:
            try:
                return fn(r)
            except KeyError:  # (a step not run: --steps)
                return "-"
        print(f"{label:34}" + "".join(f"{cell(r):>38}" for r in results))

    print(f"{'':34}" + "".join(f"{n:>38}" for n in names))
    row("load rate", lambda r: f"{r['load_rate']:.0f} puts/s ({r['load_s']:.0f} s)")
    row("  CPU per put: leader / followers", lambda r: " / ".join(
        f"{r['load_cpu'][n] / args.keys * 1e6:.0f}" for n in sorted(
            r["load_cpu"], key=lambda n: not n.endswith("*"))) + " us")
    row("  the load's own CPU per put",
        lambda r: f"{r['load_client_cpu'] / args.keys * 1e6:.0f} us")
    for i in range(3):
        def rss(r: dict[str, Any], i: int = i) -> str:
            name, m = sorted(r["rss"].items())[i]
            return f"{name} {_mb(m['RssAnon'])} + file {_mb(m['RssFile'])}"
        row(f"RSS member {i} (anon + file)", rss)
    row("disk per member", lambda r: _mb(max(r["disk"].values())))
    row("  leader's db / WAL / snap", lambda r: " / ".join(
        _mb(r["disk_parts"][k]) for k in ("db", "wal", "snap")))
    row(f"paginated range ({args.page}/page)",
        lambda r: f"{r['range_s']:.1f} s, +{_mb(r['range_anon_growth'])} peak")
    row(f"get --prefix ({args.prefix_keys} keys)",
        lambda r: f"{r['prefix_s']:.2f} s ({r.get('prefix_cpu', 0):.2f} s CPU), "
                  f"{_mb(r['prefix_bytes'])} response")
    row("  anon growth: peak (x response) / after",
        lambda r: f"{r['prefix_anon_peak_growth'] / 1e6:.1f} MB "
                  f"({r['prefix_anon_peak_growth'] / r['prefix_bytes']:.2f}x) / "
                  f"{_mb(r['prefix_anon_after_growth'])}")
    row("defragment (leader)", lambda r: f"{r['defrag_s']:.1f} s")
    row("restart (clean): ready / caught up",
        lambda r: f"{r['restart_stop_ready_s']:.1f} / {r['restart_stop_caught_up_s']:.1f} s")
    row("restart (kill -9): ready / caught up",
        lambda r: f"{r['restart_kill9_ready_s']:.1f} / {r['restart_kill9_caught_up_s']:.1f} s")
    row("new member caught up (snapshot)", lambda r: f"{r['new_member_s']:.1f} s")
    row("  its RSS (anon + file)",
        lambda r: f"{_mb(r['new_member_rss']['RssAnon'])} + "
                  f"file {_mb(r['new_member_rss']['RssFile'])}")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--targets", default="petcd,etcd")
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--value-size", type=int, default=256)
    ap.add_argument("--prefix-keys", type=int, default=100_000,
                    help="keys in the one-call get --prefix (a power of 10)")
    ap.add_argument("--page", type=int, default=10_000, help="keys per paginated range call")
    ap.add_argument("--clients", type=int, default=128)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--snapshot-count", type=int, default=0,
                    help="both servers' --snapshot-count (default: keys/10, at least 1000)")
    ap.add_argument("--dir", default=None, help="where data dirs go (removed after)")
    ap.add_argument("--steps", default="reads,defrag,restart,new",
                    help="after the load, which of reads,defrag,restart,new to run")
    ap.add_argument("--profile", default="",
                    help="py-spy stacks of petcd's leader during the load and of the leader"
                         " and new member during the catch-up, to this dir")
    ap.add_argument("--keep-logs", default="", help="copy the members' logs to this dir")
    ap.add_argument("--json", default="", help="also write the figures to this file")
    return ap


def main() -> None:
    args = parser().parse_args()
    # Members compile petcd's modules once and keep the .pyc, as an installed package
    # does (a shell with PYTHONDONTWRITEBYTECODE would recompile them at every start).
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    targets = [t for t in args.targets.split(",") if t]
    if "etcd" in targets and not have_etcd():
        print("etcd not installed: skipping it", file=sys.stderr)
        targets.remove("etcd")
    results = []
    with tempfile.TemporaryDirectory(prefix="scale-bench-", dir=args.dir) as tmp:
        for t in targets:
            print(f"{t}: loading {args.keys} keys ...", flush=True)
            r = run_target(t, Path(tmp), args)
            print(json.dumps(r), flush=True)
            results.append(r)
    report(results, args)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
