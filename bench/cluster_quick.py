"""A quick 3-member figure: kv_bench's load (same workers, same cells) against the leader
and against a follower of a petcd cluster on loopback ports. The full multi-member
benchmark is bench/cluster_bench.py; this one is for the Raft driver's own checks.

    python bench/cluster_quick.py                  # put and ranges, 1 and 64 clients
    python bench/cluster_quick.py --members 5 --workloads put --clients 64

Server CPU is the leader's (or the follower's) own; the other members use CPU too.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from kv_bench import preload, run_cell

from petcd.testing import PetcdCluster


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--members", type=int, default=3)
    ap.add_argument("--clients", default="1,64")
    ap.add_argument("--workloads", default="put,range-linearizable,range-serializable")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--value-size", type=int, default=256)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="cluster-quick-") as tmp:
        c = PetcdCluster(Path(tmp), args.members)
        try:
            c.start()
            leader = c.wait_leader()
            follower = c.followers(leader)[0]
            preload(leader, args.value_size)
            for wl in args.workloads.split(","):
                for clients in (int(x) for x in args.clients.split(",")):
                    for role, m in (("leader", leader), ("follower", follower)):
                        cell = run_cell(m, wl, clients, args.procs if clients > 1 else 1,
                                        args.seconds, args.value_size)
                        print(f"{args.members} members, via {role:8} {wl:19} "
                              f"clients={clients:<3} {cell.rate:8.0f} ops/s  server cpu "
                              f"{cell.server_cpu / cell.seconds:4.2f} cores"
                              + (f"  errors {cell.errors}" if cell.errors else ""),
                              flush=True)
        finally:
            c.stop_all()


if __name__ == "__main__":
    main()
