"""Server CPU, run-queue wait and context switches per lone put, per thread, petcd and etcd.

    python bench/lone_put_cpu.py [--puts 2000] [--targets petcd,etcd] [--threads] [--op grant]
    python bench/lone_put_cpu.py --targets petcd,before --src DIR/src   # old tree vs this

One member each, one client sending sequential puts (256-byte values), or with `--op
grant` sequential LeaseGrants (server-chosen IDs, TTL 600). Read from
/proc/<pid>/task/*/schedstat (CPU and run-queue wait in ns) and status (voluntary and
involuntary context switches) before and after: less noise-sensitive than puts/s on a
shared machine, and it shows what a busy machine does to a lone write (each wake-up of
a thread waits in the run queue; see docs/ARCHITECTURE.md, "Durability").
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import grpc

from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.testing import EtcdProcess, MemberProcess, PetcdProcess

Sched = dict[tuple[str, str], tuple[int, int, int, int]]


def sched(pid: int) -> Sched:
    """(tid, name) -> (cpu ns, run-queue wait ns, voluntary, involuntary switches)."""
    out: Sched = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        base = f"/proc/{pid}/task/{tid}"
        try:
            name = Path(f"{base}/comm").read_text().strip()
            run, wait, _ = map(int, Path(f"{base}/schedstat").read_text().split())
            fields = dict(line.split(":", 1) for line in
                          Path(f"{base}/status").read_text().splitlines() if ":" in line)
        except OSError:
            continue  # a thread that ended meanwhile
        out[(tid, name)] = (run, wait, int(fields["voluntary_ctxt_switches"]),
                            int(fields["nonvoluntary_ctxt_switches"]))
    return out


def caller(ch: grpc.Channel, op: str) -> Callable[[int], object]:
    """One request of `op` (numbered i): a put of a 256-byte value, or a lease grant."""
    if op == "grant":
        grant = ch.unary_unary("/etcdserverpb.Lease/LeaseGrant",
                               request_serializer=rpc.LeaseGrantRequest.SerializeToString,
                               response_deserializer=rpc.LeaseGrantResponse.FromString)
        return lambda i: grant(rpc.LeaseGrantRequest(TTL=600))
    put = ch.unary_unary("/etcdserverpb.KV/Put",
                         request_serializer=rpc.PutRequest.SerializeToString,
                         response_deserializer=rpc.PutResponse.FromString)
    return lambda i: put(rpc.PutRequest(key=b"k%d" % (i % 1000), value=b"v" * 256))


def measure(target: str, puts: int, per_thread: bool, op: str = "put", src: str = "") -> None:
    with tempfile.TemporaryDirectory(prefix="lone-put-") as tmp:
        m: MemberProcess
        if target == "etcd":
            m = EtcdProcess(Path(tmp) / "m")
        elif target == "before":  # another checkout's petcd (as bench/ab_bench.py runs it)
            m = PetcdProcess(Path(tmp) / "m", env={
                **os.environ, "PETCD_SRC": src,
                "PYTHONPATH": str(Path(__file__).resolve().parent / "stagetrace")})
        else:
            m = PetcdProcess(Path(tmp) / "m")
        m.start()
        try:
            assert m.proc is not None
            with grpc.insecure_channel(m.address) as ch:
                call = caller(ch, op)
                for i in range(300):  # warm-up
                    call(i)
                before = sched(m.proc.pid)
                lats = []
                started = time.perf_counter()
                for i in range(puts):
                    t = time.perf_counter()
                    call(i)
                    lats.append(time.perf_counter() - t)
                took = time.perf_counter() - started
                after = sched(m.proc.pid)
        finally:
            m.stop()
    total = [0, 0, 0, 0]
    for key, now in after.items():
        d = [a - b for a, b in zip(now, before.get(key, (0, 0, 0, 0)), strict=True)]
        total = [t + x for t, x in zip(total, d, strict=True)]
        if per_thread and d[0] > 0:
            print(f"  {target} {key[1]:16} cpu {d[0] / puts / 1e3:5.0f} us  run-queue wait "
                  f"{d[1] / puts / 1e3:5.0f} us  switches {d[2] / puts:.2f} + {d[3] / puts:.2f}")
    print(f"{target:6} {puts / took:6.0f} {op}s/s, median {statistics.median(lats) * 1e6:5.0f} us;"
          f" server per {op}: cpu {total[0] / puts / 1e3:4.0f} us, run-queue wait "
          f"{total[1] / puts / 1e3:5.0f} us, context switches {total[2] / puts:.2f} voluntary"
          f" + {total[3] / puts:.2f} involuntary", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--puts", type=int, default=2000)
    ap.add_argument("--targets", default="petcd,etcd")
    ap.add_argument("--threads", action="store_true", help="one line per thread too")
    ap.add_argument("--op", choices=["put", "grant"], default="put")
    ap.add_argument("--src", default="", help="target 'before': this petcd source dir")
    args = ap.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    targets = args.targets.split(",")
    if args.src and "before" not in targets:
        targets.insert(0, "before")  # (--src alone: the other tree is measured too)
    for target in targets:
        measure(target, args.puts, args.threads, args.op, args.src)


if __name__ == "__main__":
    main()
