"""petcdctl's start-up cost beside etcdctl's: CPU seconds (user + sys, from rusage) of
`get k` against one petcd member, min and median of N runs, and the floor petcdctl
cannot go under without a gRPC stack of its own (`import grpc` and the etcdserverpb
messages). Run it with .pyc files written (PYTHONDONTWRITEBYTECODE unset), as an
installed petcdctl runs.

    python bench/ctl_startup.py [--runs 30]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from petcd.testing import SRC_DIR, PetcdProcess

ENV = {"PYTHONPATH": str(SRC_DIR), "PATH": "/usr/bin:/bin"}


def cpu(cmd: list[str], runs: int) -> tuple[float, float]:
    xs = []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV,
                       check=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        xs.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return min(xs), statistics.median(xs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=30)
    opts = ap.parse_args()
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(SRC_DIR / "petcd")],
                   stdout=subprocess.DEVNULL, check=False)
    with tempfile.TemporaryDirectory() as tmp:
        m = PetcdProcess(Path(tmp) / "m")
        m.start()
        try:
            ep = m.address
            ctl = [sys.executable, "-m", "petcd.cli.ctl", "--endpoints", ep]
            subprocess.run([*ctl, "put", "k", "v"], env=ENV, check=True,
                           stdout=subprocess.DEVNULL)
            rows = [("petcdctl get k", [*ctl, "get", "k"]),
                    ("floor: import grpc + rpc_pb2",
                     [sys.executable, "-c",
                      "import grpc; from petcd.pb.etcdserverpb import rpc_pb2"]),
                    ("python -c pass", [sys.executable, "-c", "pass"])]
            if shutil.which("etcdctl"):
                rows.append(("etcdctl get k", ["etcdctl", "--endpoints", ep, "get", "k"]))
            for name, cmd in rows:
                lo, med = cpu(cmd, opts.runs)
                print(f"{name:32s} CPU min {lo * 1000:6.1f} ms  median {med * 1000:6.1f} ms")
        finally:
            m.kill()


if __name__ == "__main__":
    main()
