"""KV throughput of a 3-member cluster on this machine: puts/s, linearizable and serializable
ranges/s with 1 and with 256 concurrent clients, petcd and real etcd 3.4 started the same
way (free loopback ports, temporary data dirs), side by side with the ratio petcd/etcd.

    python bench/cluster_bench.py                        # 3 members each, 5 s per cell
    python bench/cluster_bench.py --seconds 10 --repeat 3
    python bench/cluster_bench.py --members 1 --targets petcd,etcd   # single members
    python bench/cluster_bench.py --endpoints leader     # every client on the leader
    python bench/cluster_bench.py --py-spy /tmp/prof     # petcd leader profiles per cell

Clients are spread over all members' client URLs by default, starting with the leader (a
single client talks to the leader; followers forward writes to the leader and ask it for
a read index, as etcd's do), or all put on the leader. Server CPU is printed per member,
leader first. The
targets run at the same time and take turns cell by cell, so a noisy neighbour hurts
both alike. The load generator is bench/loadgen.py (shared with kv_bench.py).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from loadgen import (
    WORKLOADS,
    Cell,
    add_common_args,
    median,
    member_for,
    paired_ratio,
    parse_common_args,
    preload,
    run_cell,
    turn_order,
)

from petcd.testing import MemberProcess


def start_cluster(target: str, base: Path, n: int,
                  extra_args: Sequence[str] = ()) -> list[MemberProcess]:
    (base / target).mkdir(parents=True, exist_ok=True)
    args = [*extra_args, "--initial-cluster-token", "bench-cluster"]
    members = [member_for(target, base / target / f"m{i}", name=f"m{i}", args=args)
               for i in range(n)]
    initial = ",".join(f"{m.name}={m.peer_url}" for m in members)
    for m in members:
        m.initial_cluster = initial
    try:
        for m in members:  # all at once: a member waits for a quorum before it is ready
            m.start(wait=False)
        for m in members:
            m.wait_ready(60)
    except BaseException:
        for m in members:
            m.kill()
        raise
    return members


def leader_of(members: Sequence[MemberProcess]) -> MemberProcess:
    import grpc

    from petcd.pb.etcdserverpb import rpc_pb2 as rpc

    deadline = time.monotonic() + 30
    while True:
        ids = {}
        leader = 0
        for m in members:
            with grpc.insecure_channel(m.address) as ch:
                st = ch.unary_unary(
                    "/etcdserverpb.Maintenance/Status",
                    request_serializer=rpc.StatusRequest.SerializeToString,
                    response_deserializer=rpc.StatusResponse.FromString)(
                        rpc.StatusRequest(), timeout=5)
            ids[st.header.member_id] = m
            leader = st.leader or leader
        if leader in ids:
            return ids[leader]
        if time.monotonic() > deadline:
            raise RuntimeError("no leader")
        time.sleep(0.1)


def profile(pid: int, seconds: float, out: Path, native: bool) -> subprocess.Popen[bytes]:
    """py-spy sampling the leader for the cell (collapsed stacks: one line per stack)."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    return subprocess.Popen([py_spy, "record", "--pid", str(pid), "--duration",
                             str(max(1, int(seconds))), "--format", "raw", "--threads",
                             *(["--native"] if native else ["--nonblocking"]),
                             "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(ap, ",".join(WORKLOADS), clients="1,256")
    ap.add_argument("--members", type=int, default=3, help="cluster size (default 3)")
    ap.add_argument("--value-size", type=int, default=256)
    ap.add_argument("--endpoints", choices=("all", "leader"), default="all",
                    help="spread clients over all members (default) or use the leader only")
    ap.add_argument("--py-spy", metavar="DIR", default="",
                    help="record py-spy profiles of the petcd leader, one file per cell")
    ap.add_argument("--native", action="store_true",
                    help="with --py-spy: native frames too (C code of gRPC, uvloop, LMDB)")
    ap.add_argument("--petcd-args", default="", help="extra petcd flags (space separated)")
    args = ap.parse_args()
    targets, clients, workloads = parse_common_args(args)
    if args.py_spy:
        Path(args.py_spy).mkdir(parents=True, exist_ok=True)
    results: dict[tuple[str, str, int], Cell] = {}
    with tempfile.TemporaryDirectory(prefix="cluster-bench-") as tmp:
        clusters: dict[str, list[MemberProcess]] = {}
        addresses: dict[str, list[str]] = {}
        leaders: dict[str, MemberProcess] = {}
        try:
            for t in targets:
                extra = args.petcd_args.split() if t.startswith("petcd") else []
                clusters[t] = start_cluster(t, Path(tmp), args.members, extra)
                leaders[t] = leader_of(clusters[t])
                # The leader first (members in the order CPU is reported): a single client
                # talks to the leader in both clusters, many go round all the members.
                clusters[t].sort(key=lambda m, lead=leaders[t]: m is not lead)
                addresses[t] = ([leaders[t].address] if args.endpoints == "leader"
                                else [m.address for m in clusters[t]])
                preload(leaders[t].address, args.value_size)
                print(f"{t}: {args.members} member(s), leader {leaders[t].name}", flush=True)
            for wl in workloads:
                for c in clients:
                    runs: dict[str, list[Cell]] = {t: [] for t in targets}
                    for r in range(max(1, args.repeat)):
                        for t in turn_order(targets, r):
                            spy = None
                            lead = leaders[t].proc
                            if args.py_spy and t.startswith("petcd") and lead is not None:
                                spy = profile(lead.pid, args.seconds,
                                              Path(args.py_spy) / f"{wl}-{c}-{r}.txt",
                                              args.native)
                            runs[t].append(run_cell(clusters[t], addresses[t], wl, c,
                                                    args.procs if c > 1 else 1,
                                                    args.seconds, args.value_size))
                            if spy is not None:
                                spy.wait(60)
                    for t in targets:
                        cell = results[(t, wl, c)] = median(runs[t])
                        per = "+".join(f"{u / cell.seconds:.2f}" for u in cell.member_cpu)
                        print(f"{t:12} {wl:19} clients={c:<4} {cell.rate:9.0f} ops/s  "
                              f"servers {cell.server_cpu / cell.seconds:4.2f} cores "
                              f"(leader first: {per})  "
                              f"clients {cell.client_cpu / cell.seconds:4.2f} cores"
                              + (f"  errors {cell.errors}" if cell.errors else ""),
                              flush=True)
                    if ratio := paired_ratio(runs):
                        print(f"{'':12} {wl:19} clients={c:<4} {ratio}", flush=True)
        finally:
            for members in clusters.values():
                for m in members:
                    m.stop()
    print(f"\n{args.members}-member cluster, clients on {args.endpoints} endpoint(s); ops/s "
          "(server cores, client cores)")
    print(f"{'workload':19} {'clients':>7} " + "".join(f"{t:>24}" for t in targets)
          + ("  petcd/etcd" if {"petcd", "etcd"} <= set(targets) else ""))
    for wl in workloads:
        for c in clients:
            row = f"{wl:19} {c:>7} "
            for t in targets:
                cell = results[(t, wl, c)]
                row += (f"{cell.rate:>10.0f} ({cell.server_cpu / cell.seconds:4.2f}, "
                        f"{cell.client_cpu / cell.seconds:4.2f})")
            if {"petcd", "etcd"} <= set(targets):
                ratio = results[("petcd", wl, c)].rate / max(results[("etcd", wl, c)].rate, 1e-9)
                row += f"  {ratio:10.2f}"
            print(row)


if __name__ == "__main__":
    main()
