"""Puts on a few hot keys, round after round with no compaction: does a put cost more as
each key's history grows? One member per target (petcd and etcd), taking turns round by
round; per round: puts/s, server CPU per put (all threads, and the two busiest), the
backend's commits (count and mean duration, from /metrics: both expose
etcd_disk_backend_commit_duration_seconds) and the data directory's size.

    python bench/history_growth.py [--rounds 10] [--seconds 4] [--clients 64] [--keys 1000]

--keys is per load worker (bench/loadgen.py: the worker's keys are written round-robin), so
each key gets about puts / (keys * procs) revisions per round. With --keys 200000 nearly
every put makes a new key: the same load without the history, for comparison. With
--compact each round ends with a Compact at the member's revision (as kube-apiserver
compacts every few minutes); the next round starts once it is physically done.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import member_for, preload, run_cell, turn_order

from petcd.testing import MemberProcess, have_etcd

_COMMIT = "etcd_disk_backend_commit_duration_seconds"


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of each thread of `pid`."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        out[tid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def commits(m: MemberProcess) -> tuple[float, float]:
    """(seconds, count) of the backend commits so far."""
    with urllib.request.urlopen(f"http://{m.address}/metrics", timeout=10) as r:
        text = r.read().decode()

    def value(name: str) -> float:
        found = re.search(rf"^{name} (\S+)", text, re.M)
        return float(found.group(1)) if found else 0.0

    return value(f"{_COMMIT}_sum"), value(f"{_COMMIT}_count")


def compact(m: MemberProcess) -> None:
    """Compact at the member's current revision and wait until it is physically done."""
    import grpc

    from petcd.pb.etcdserverpb import rpc_pb2 as rpc
    from petcd.pb.etcdserverpb import rpc_pb2_grpc as rpc_grpc

    with grpc.insecure_channel(m.address) as ch:
        kv = rpc_grpc.KVStub(ch)
        rev = kv.Range(rpc.RangeRequest(key=b"bench"), timeout=30).header.revision
        kv.Compact(rpc.CompactionRequest(revision=rev, physical=True), timeout=120)


def data_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--targets", default="petcd,etcd")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--keys", type=int, default=1000, help="keys per load worker")
    ap.add_argument("--compact", action="store_true",
                    help="compact at the member's revision after each of its rounds")
    args = ap.parse_args()
    targets = [t for t in args.targets.split(",") if t and (t != "etcd" or have_etcd())]
    with tempfile.TemporaryDirectory(prefix="history-growth-") as tmp:
        members: dict[str, MemberProcess] = {}
        try:
            for t in targets:
                members[t] = member_for(t, Path(tmp) / t).start()
                preload(members[t].address, 256)
            for r in range(args.rounds):
                for t in turn_order(targets, r):
                    m = members[t]
                    assert m.proc is not None
                    c0, t0 = commits(m), thread_cpu(m.proc.pid)
                    cell = run_cell([m], [m.address], "put", args.clients, args.procs,
                                    args.seconds, 256, keys=args.keys)
                    c1, t1 = commits(m), thread_cpu(m.proc.pid)
                    if args.compact:
                        compact(m)
                    puts = cell.rate * cell.seconds or 1.0
                    busiest = sorted((t1[k] - t0.get(k, 0.0) for k in t1), reverse=True)[:2]
                    n = c1[1] - c0[1]
                    print(f"round {r:2} {t:6} {cell.rate:8.0f} puts/s  server "
                          f"{cell.server_cpu / puts * 1e6:5.1f} us/put (busiest threads "
                          + " + ".join(f"{b / puts * 1e6:.1f}" for b in busiest)
                          + f")  backend commits {n:3.0f}, mean "
                          f"{(c1[0] - c0[0]) / max(n, 1) * 1e3:5.1f} ms  data "
                          f"{data_mb(Path(tmp) / t):5.0f} MB", flush=True)
        finally:
            for m in members.values():
                m.stop()


if __name__ == "__main__":
    main()
