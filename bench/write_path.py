"""Where a lone write's time goes, stage by stage, inside one petcd member.

    python bench/write_path.py [--puts 2000] [--src DIR] [--op grant] [--members 3]

Starts a member whose functions on the write path record timestamps (bench/stagetrace,
loaded via PYTHONPATH), sends --puts sequential puts (or with `--op grant`, LeaseGrants)
from one client, and prints the median and mean time between consecutive stages of each.
--src runs another checkout's petcd (e.g. an older commit unpacked with `git archive`)
for a before/after comparison in the same conditions. With --members N, a cluster of N
traced members; the client talks to the leader and the table is the leader's (its "WAL
done -> handed out" then includes waiting for a follower's acknowledgement).

    python bench/write_path.py --clients 64 [--seconds 5] [--src DIR]

With --clients N (> 1), one member takes puts from N concurrent clients (bench/loadgen.py,
as kv_bench runs them) for --seconds, traced by bench/batchtrace, and the table is per
batch (bench/batch_timeline.py): batch sizes, fdatasync in flight, the disk's idle gaps,
the loop thread's CPU and idle time and what it waited for, backend commits; plus each
thread's CPU and run-queue wait from /proc.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import itertools

import grpc
from cluster_bench import leader_of
from lone_put_cpu import caller

from petcd.testing import PetcdProcess

STAGES = ["recv", "propose", "flush", "wal_start", "wal_end", "hand_out", "apply_start",
          "apply_end", "answered", "sent"]
# A lone voter's lone write applied while its WAL frame goes to the disk (write_lone):
# the fdatasync returns after the apply.
OVERLAPPED = ["recv", "propose", "flush", "wal_start", "hand_out", "apply_start",
              "apply_end", "wal_end", "answered", "sent"]
OVERLAPPED_LABELS = {
    "hand_out": "WAL write + write-back started -> handed out",
    "wal_end": "applied -> fdatasync returned (disk write overlapped the apply)",
    "answered": "durable -> watchers told, caller's future resolved",
}
LABELS = {
    "propose": "request read -> proposed (h2, parse, handler)",
    "flush": "proposed -> handed to Raft (Ready loop wakes)",
    "wal_start": "Raft propose + Ready -> WAL write starts (thread hop)",
    "wal_end": "WAL write + fdatasync",
    "hand_out": "WAL done -> committed entries handed out (hop back)",
    "apply_start": "handed out -> apply starts",
    "apply_end": "apply (LMDB txn; before: + synced commit)",
    "answered": "applied -> caller's future resolved",
    "sent": "resolved -> response written (handler, h2)",
}


def cycles(events: list[tuple[str, int]],
           stages: list[str] = STAGES) -> list[dict[str, int]]:
    """One dict stage -> time per put: from each 'propose', the last 'recv' before it and
    the first of each later stage in order."""
    out = []
    last_recv = 0
    i = 0
    while i < len(events):
        name, t = events[i]
        if name == "recv":
            last_recv = t
        if name != "propose":
            i += 1
            continue
        cyc = {"recv": last_recv, "propose": t}
        want = 2
        j = i + 1
        while j < len(events) and want < len(stages):
            n, tj = events[j]
            if n == "propose":
                break
            if n == stages[want]:
                cyc[n] = tj
                want += 1
            j += 1
        if want == len(stages):
            out.append(cyc)
        i = j
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--puts", type=int, default=2000)
    ap.add_argument("--src", default="", help="petcd source dir to run instead of this one")
    ap.add_argument("--op", choices=["put", "grant"], default="put")
    ap.add_argument("--members", type=int, default=1, help="cluster size (table: the leader's)")
    ap.add_argument("--clients", type=int, default=1,
                    help="concurrent clients (> 1: the per-batch timeline of one member)")
    ap.add_argument("--seconds", type=float, default=5.0, help="with --clients: load time")
    args = ap.parse_args()
    if args.clients > 1:
        concurrent(args)
        return
    trace_dir = Path(__file__).resolve().parent / "stagetrace"
    with tempfile.TemporaryDirectory(prefix="write-path-") as tmp:
        members = [PetcdProcess(Path(tmp) / f"m{i}", name=f"m{i}", env={
            **os.environ, "PETCD_STAGES_OUT": str(Path(tmp) / f"stages{i}.json"),
            "PETCD_SRC": args.src, "PYTHONPATH": str(trace_dir)},
            args=["--initial-cluster-token", "write-path"]) for i in range(args.members)]
        initial = ",".join(f"{m.name}={m.peer_url}" for m in members)
        for m in members:
            m.initial_cluster = initial
        lats = []
        try:
            for m in members:  # all at once: a member waits for a quorum before it is ready
                m.start(wait=False)
            for m in members:
                m.wait_ready(60)
            lead = leader_of(members) if len(members) > 1 else members[0]
            with grpc.insecure_channel(lead.address) as ch:
                call = caller(ch, args.op)
                for i in range(args.puts):
                    t = time.perf_counter()
                    call(i)
                    lats.append(time.perf_counter() - t)
        finally:
            for m in members:
                m.stop()
        out = Path(tmp) / f"stages{members.index(lead)}.json"
        events = [(n, t) for n, t in json.loads(out.read_text())]
    stages, labels = STAGES, LABELS
    cyc = cycles(events)[len(lats) // 10:]  # skip the warm-up
    overlapped = cycles(events, OVERLAPPED)[len(lats) // 10:]
    if len(overlapped) > len(cyc):
        stages, labels, cyc = OVERLAPPED, {**LABELS, **OVERLAPPED_LABELS}, overlapped
    commits = [e - s for (n, s), (n2, e) in itertools.pairwise(events)
               if n == "commit_start" and n2 == "commit_end"]
    print(f"{len(cyc)} {args.op}s traced; client-observed latency: median "
          f"{statistics.median(lats) * 1e6:.0f} us, mean {statistics.mean(lats) * 1e6:.0f} us")
    print(f"{'stage':58} {'median us':>10} {'mean us':>9}")
    for prev, cur in itertools.pairwise(stages):
        d = [(c[cur] - c[prev]) / 1e3 for c in cyc]
        print(f"{labels[cur]:58} {statistics.median(d):10.0f} {statistics.mean(d):9.0f}")
    total = [(c["sent"] - c["recv"]) / 1e3 for c in cyc]
    print(f"{'server total (request read -> response written)':58} "
          f"{statistics.median(total):10.0f} {statistics.mean(total):9.0f}")
    if commits:
        print(f"batched backend commits: {len(commits)}, median "
              f"{statistics.median(commits) / 1e3:.0f} us (off the puts' path)")


def concurrent(args: argparse.Namespace) -> None:
    """--clients N: one traced member under N concurrent put clients; the batch table."""
    from batch_timeline import build, report
    from loadgen import preload, run_cell
    from lone_put_cpu import sched

    trace_dir = Path(__file__).resolve().parent / "batchtrace"
    with tempfile.TemporaryDirectory(prefix="write-path-") as tmp:
        out = Path(tmp) / "events.json"
        m = PetcdProcess(Path(tmp) / "m", env={
            **os.environ, "PETCD_STAGES_OUT": str(out), "PETCD_SRC": args.src,
            "PYTHONPATH": str(trace_dir)})
        try:
            m.start()
            preload(m.address, 256)
            assert m.proc is not None
            before = sched(m.proc.pid)
            cell = run_cell([m], [m.address], "put", args.clients, 2, args.seconds, 256)
            after = sched(m.proc.pid)
        finally:
            m.stop()
        events = [tuple(e) for e in json.loads(out.read_text())]
    print(f"{args.clients} clients: {cell.rate:.0f} puts/s, server "
          f"{cell.server_cpu / cell.seconds:.2f} cores, client "
          f"{cell.client_cpu / cell.seconds:.2f} cores, load {os.getloadavg()[0]:.1f}")
    print("threads busy in the run: CPU and run-queue wait, ms per second")
    for key, (cpu, wait, vol, invol) in sorted(after.items()):
        b = before.get(key, (0, 0, 0, 0))
        if cpu - b[0] > 1e6:
            print(f"  {key[1]:16} cpu {(cpu - b[0]) / 1e6 / cell.seconds:6.0f}  run-queue "
                  f"{(wait - b[1]) / 1e6 / cell.seconds:5.0f}  voluntary switches/s "
                  f"{(vol - b[2]) / cell.seconds:6.0f}  involuntary/s "
                  f"{(invol - b[3]) / cell.seconds:5.0f}")
    print(report(build(events)))  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
