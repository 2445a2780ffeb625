"""A/B: this checkout's petcd against another checkout's (e.g. the commit before a change,
unpacked with `git archive <commit> src | tar -x -C DIR`), cell by cell in the same run.

    python bench/ab_bench.py --src DIR/src [--workloads put] [--clients 1,64] [--repeat 3]

Workloads: those of bench/loadgen.py (put, txn-put, range-l, range-s) and those of
bench/lease_bench.py (grant, keepalive).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import lease_bench
from loadgen import ALIASES, Cell, median, preload, run_cell

from petcd.testing import PetcdProcess

LEASE_WORKLOADS = ("grant", "keepalive")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", required=True, help="the other checkout's src directory")
    ap.add_argument("--workloads", default="put")
    ap.add_argument("--clients", default="1,64")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--procs", type=int, default=2)
    args = ap.parse_args()
    trace_dir = Path(__file__).resolve().parent / "stagetrace"
    with tempfile.TemporaryDirectory(prefix="ab-bench-") as tmp:
        members = {
            "before": PetcdProcess(Path(tmp) / "before", env={
                **os.environ, "PETCD_SRC": args.src, "PYTHONPATH": str(trace_dir)}),
            "after": PetcdProcess(Path(tmp) / "after"),
        }
        try:
            for m in members.values():
                m.start()
                preload(m.address, 256)
            for wl in (ALIASES.get(w, w) for w in args.workloads.split(",")):
                for c in (int(x) for x in args.clients.split(",")):
                    runs: dict[str, list[Cell]] = {k: [] for k in members}
                    procs = args.procs if c > 1 else 1
                    for _ in range(args.repeat):
                        for k, m in members.items():
                            if wl in LEASE_WORKLOADS:
                                cell = lease_bench.run_cell(m, wl, c, procs, args.seconds, 4)
                            else:
                                cell = run_cell([m], [m.address], wl, c, procs,
                                                args.seconds, 256)
                            runs[k].append(cell)
                    b, a = median(runs["before"]), median(runs["after"])
                    print(f"{wl:19} clients={c:<4} before {b.rate:8.0f} ops/s "
                          f"({b.server_cpu / b.ops * 1e6:5.0f} us cpu/op)  after "
                          f"{a.rate:8.0f} ops/s ({a.server_cpu / a.ops * 1e6:5.0f} us cpu/op)"
                          f"  after/before {a.rate / b.rate:4.2f}", flush=True)
        finally:
            for m in members.values():
                m.stop()


if __name__ == "__main__":
    main()
