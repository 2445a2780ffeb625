"""Snapshot save / status / restore speed and peak memory, petcd beside etcd 3.4.

Loads --keys keys (256-byte values, 128 puts per Txn) into one petcd member and one etcd
member, then for each: `etcdctl snapshot save` (time, the member's peak RSS while it
streams, file size), `snapshot status` with petcdctl and etcdctl, and restores of each
file with petcdctl and etcdctl (time and the restoring process's peak RSS), the cross
directions (etcd's file into petcd, petcd's into etcd) included.

    python bench/snapshot_bench.py --keys 1000000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc

from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.testing import ETCDCTL_BIN, EtcdProcess, MemberProcess, PetcdProcess, free_port

VALUE = b"v" * 256
PER_TXN = 128


async def load(address: str, keys: int, conns: int = 8) -> float:
    started = time.monotonic()
    chans = [grpc.aio.insecure_channel(address) for _ in range(conns)]
    calls = [ch.unary_unary("/etcdserverpb.KV/Txn",
                            request_serializer=lambda b: b,
                            response_deserializer=lambda b: b) for ch in chans]
    starts = list(range(0, keys, PER_TXN))

    async def worker(i: int) -> None:
        for base in starts[i::conns]:
            req = rpc.TxnRequest(success=[
                rpc.RequestOp(request_put=rpc.PutRequest(key=b"key/%012d" % k, value=VALUE))
                for k in range(base, min(keys, base + PER_TXN))])
            await calls[i](req.SerializeToString(), timeout=60)
    await asyncio.gather(*(worker(i) for i in range(conns)))
    for ch in chans:
        await ch.close()
    return time.monotonic() - started


def rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_measured(cmd: list[str], cwd: Path,
                 watch_pid: int | None = None) -> tuple[float, int, int]:
    """(seconds, peak RSS KiB of the command, peak RSS KiB of watch_pid meanwhile)."""
    peak = [rss_kib(watch_pid) if watch_pid else 0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            peak[0] = max(peak[0], rss_kib(watch_pid or 0))
    t = threading.Thread(target=sample, daemon=True)
    if watch_pid:
        t.start()
    started = time.monotonic()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL")}
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.monotonic() - started
    done.set()
    if status != 0:
        assert proc.stderr is not None
        raise RuntimeError(f"{cmd} failed: {proc.stderr.read().decode()[-2000:]}")
    return elapsed, usage.ru_maxrss, peak[0]


def petcdctl() -> list[str]:
    return [sys.executable, "-m", "petcd.cli.ctl"]


def restore_cmd(tool: str, snap: Path, out: Path) -> list[str]:
    peer = free_port()
    args = ["snapshot", "restore", str(snap), "--name", "r", "--data-dir", str(out),
            "--initial-cluster", f"r=http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}"]
    return (petcdctl() if tool == "petcdctl" else [ETCDCTL_BIN]) + args


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--dir", default=None, help="work directory (default: a temporary one)")
    args = ap.parse_args()
    base = Path(args.dir or tempfile.mkdtemp(prefix="snapbench-"))
    base.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, str, str, str]] = []
    files: dict[str, Path] = {}
    try:
        for kind, cls in (("petcd", PetcdProcess), ("etcd", EtcdProcess)):
            m: MemberProcess = cls(base / kind, args=["--quota-backend-bytes", str(8 << 30)])
            m.start()
            try:
                secs = asyncio.run(load(m.address, args.keys))
                rows.append((kind, "load", f"{secs:.1f} s ({args.keys / secs:,.0f} keys/s)",
                             f"member RSS {rss_kib(m.proc.pid) // 1024} MiB" if m.proc else ""))
                snap = base / f"{kind}.snap"
                assert m.proc is not None
                secs, _, server_peak = run_measured(
                    [ETCDCTL_BIN, "--endpoints", m.endpoint, "snapshot", "save", str(snap)],
                    base, watch_pid=m.proc.pid)
                rows.append((kind, "snapshot save (etcdctl)", f"{secs:.1f} s",
                             f"member peak RSS {server_peak // 1024} MiB, file "
                             f"{snap.stat().st_size / 2**20:.0f} MiB"))
                files[kind] = snap
            finally:
                m.kill()
        for kind, snap in files.items():
            for tool, cmd in (("petcdctl", petcdctl()), ("etcdctl", [ETCDCTL_BIN])):
                secs, peak, _ = run_measured([*cmd, "snapshot", "status", str(snap)], base)
                rows.append((kind, f"status ({tool})", f"{secs:.1f} s",
                             f"peak RSS {peak // 1024} MiB"))
            for tool in ("petcdctl", "etcdctl"):
                out = base / f"restored-{kind}-{tool}"
                secs, peak, _ = run_measured(restore_cmd(tool, snap, out), base)
                rows.append((kind, f"restore ({tool})", f"{secs:.1f} s",
                             f"peak RSS {peak // 1024} MiB"))
                shutil.rmtree(out, ignore_errors=True)
    finally:
        if not args.dir:
            shutil.rmtree(base, ignore_errors=True)
    print(f"{args.keys:,} keys, 256-byte values")
    print(f"{'file from':10} {'step':26} {'time':28} memory")
    for r in rows:
        print(f"{r[0]:10} {r[1]:26} {r[2]:28} {r[3]}")


if __name__ == "__main__":
    main()
