"""KV throughput of one member: puts/s and ranges/s (linearizable and serializable),
with 1 client and with 64 concurrent clients, against petcd and against real etcd 3.4
run the same way (both started here on free loopback ports), side by side.

    python bench/kv_bench.py                       # petcd and etcd, 5 s per cell
    python bench/kv_bench.py --targets petcd,petcd-grpcio,etcd --repeat 3

Targets: `petcd` (its own HTTP/2 gRPC server, the default), `petcd-grpcio` (grpc.aio behind
the HTTP/gRPC mux, --experimental-grpc-server=grpcio), `etcd`.

The load generator (bench/loadgen.py, shared with cluster_bench.py) is Python too, so it
is made cheap: worker processes, grpc.aio, requests serialized once up front and sent as
bytes, responses not parsed. Client and server CPU seconds are measured (from /proc) and
printed with the rates: on a 2-core machine the client competes with the server for CPU.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from loadgen import (
    Cell,
    add_common_args,
    median,
    member_for,
    paired_ratio,
    parse_common_args,
    preload,
    print_table,
    run_cell,
    turn_order,
)

from petcd.testing import MemberProcess


def start(target: str, base: Path) -> MemberProcess:
    return member_for(target, base / target).start()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(ap, "put,range-linearizable,range-serializable")
    ap.add_argument("--value-size", type=int, default=256)
    args = ap.parse_args()
    targets, clients, workloads = parse_common_args(args)
    results: dict[tuple[str, str, int], Cell] = {}
    with tempfile.TemporaryDirectory(prefix="kv-bench-") as tmp:
        # All targets run at once and take turns cell by cell, so that a noisy neighbour
        # hurts them alike; each target is idle while another is measured.
        members: dict[str, MemberProcess] = {}
        try:
            for target in targets:
                members[target] = start(target, Path(tmp))
                preload(members[target].address, args.value_size,
                        range_keys=1000 if "range-1000" in workloads else 0)
            for wl in workloads:
                for c in clients:
                    runs: dict[str, list[Cell]] = {t: [] for t in targets}
                    for r in range(max(1, args.repeat)):
                        for t in turn_order(targets, r):
                            runs[t].append(run_cell([members[t]], [members[t].address], wl, c,
                                                    args.procs if c > 1 else 1,
                                                    args.seconds, args.value_size))
                    for t in targets:
                        cell = results[(t, wl, c)] = median(runs[t])
                        print(f"{t:13} {wl:19} clients={c:<3} {cell.rate:9.0f} ops/s  "
                              f"server cpu {cell.server_cpu / cell.seconds:4.2f} cores  "
                              f"client cpu {cell.client_cpu / cell.seconds:4.2f} cores"
                              + (f"  errors {cell.errors}" if cell.errors else ""),
                              flush=True)
                    if ratio := paired_ratio(runs):
                        print(f"{'':13} {wl:19} clients={c:<3} {ratio}", flush=True)
        finally:
            for m in members.values():
                m.stop()
    print_table("ops/s", results, targets,
                [(wl, c, wl) for wl in workloads for c in clients])

if __name__ == "__main__":
    main()
