"""A/B: this checkout's petcd against another checkout's (e.g. the commit before a change,
unpacked with `git archive <commit> src | tar -x -C DIR`), cell by cell in the same run.

    python bench/ab_bench.py --src DIR/src [--workloads put] [--clients 1,64] [--repeat 3]
                             [--members 3]

Workloads: those of bench/loadgen.py (put, txn-put, range-l, range-s) and those of
bench/lease_bench.py (grant, keepalive). With --members 3 each side is a 3-member
cluster, and the clients talk to its leader.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import lease_bench
from cluster_bench import leader_of
from loadgen import ALIASES, Cell, median, paired_ratios, preload, run_cell

from petcd.testing import PetcdProcess

LEASE_WORKLOADS = ("grant", "keepalive")


def median_of(xs: list[float]) -> float:
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", required=True, help="the other checkout's src directory")
    ap.add_argument("--workloads", default="put")
    ap.add_argument("--clients", default="1,64")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--members", type=int, default=1, help="cluster size of each side")
    ap.add_argument("--before-env", action="append", default=[], metavar="NAME=VALUE",
                    help="environment of the `before` side only (e.g. PETCD_WAL_AIO=0 with "
                         "--src of this tree: one mechanism against another)")
    args = ap.parse_args()
    trace_dir = Path(__file__).resolve().parent / "stagetrace"
    with tempfile.TemporaryDirectory(prefix="ab-bench-") as tmp:
        env = {"before": {**os.environ, "PETCD_SRC": args.src, "PYTHONPATH": str(trace_dir),
                          **dict(e.split("=", 1) for e in args.before_env)},
               "after": dict(os.environ)}
        clusters: dict[str, list[PetcdProcess]] = {}
        for side in ("before", "after"):
            names = [f"m{i}" for i in range(args.members)]
            (Path(tmp) / side).mkdir()
            clusters[side] = [PetcdProcess(Path(tmp) / side / n, name=n, env=env[side],
                                           args=["--initial-cluster-token", side])
                              for n in names]
            if args.members > 1:
                initial = ",".join(f"{m.name}={m.peer_url}" for m in clusters[side])
                for m in clusters[side]:
                    m.initial_cluster = initial
        everyone = [m for ms in clusters.values() for m in ms]
        try:
            for m in everyone:
                m.start(wait=False)
            for m in everyone:
                m.wait_ready(60)
            members = {side: leader_of(ms) if len(ms) > 1 else ms[0]
                       for side, ms in clusters.items()}
            for m in members.values():
                preload(m.address, 256,
                        range_keys=1000 if "range-1000" in args.workloads else 0)
            for wl in (ALIASES.get(w, w) for w in args.workloads.split(",")):
                for c in (int(x) for x in args.clients.split(",")):
                    runs: dict[str, list[Cell]] = {k: [] for k in members}
                    procs = args.procs if c > 1 else 1
                    for _ in range(args.repeat):
                        for k, m in members.items():
                            if wl in LEASE_WORKLOADS:
                                cell = lease_bench.run_cell(m, wl, c, procs, args.seconds, 4)
                            else:
                                cell = run_cell(clusters[k], [m.address], wl, c, procs,
                                                args.seconds, 256)
                            runs[k].append(cell)
                    b, a = median(runs["before"]), median(runs["after"])
                    # Client CPU per op falls as the rate grows (bench/client_cost.py):
                    # compare it between sides only at like rates.
                    print(f"{wl:19} clients={c:<4} before {b.rate:8.0f} ops/s "
                          f"({b.server_cpu / b.ops * 1e6:5.0f} us cpu/op, client "
                          f"{b.client_cpu / b.ops * 1e6:5.0f})  after "
                          f"{a.rate:8.0f} ops/s ({a.server_cpu / a.ops * 1e6:5.0f} us cpu/op, "
                          f"client {a.client_cpu / a.ops * 1e6:5.0f})"
                          f"  after/before {a.rate / b.rate:4.2f}", flush=True)
                    # (each repeat's two cells ran back to back: their ratios, and the
                    # median of those, say more than the ratio of medians when load moves)
                    pairs = paired_ratios(runs["after"], runs["before"])
                    print(f"{'':19} paired after/before: median {median_of(pairs):4.2f} "
                          f"({' '.join(f'{r:4.2f}' for r in pairs)}); load average "
                          f"{os.getloadavg()[0]:.1f}", flush=True)
        finally:
            for m in everyone:
                m.stop()


if __name__ == "__main__":
    main()
