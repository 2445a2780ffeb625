"""WAL write and recovery speed.

    python bench/wal_bench.py [--dir DIR] [--seconds S] [--batches 1,64,1024]

Prints the machine's raw fdatasync rate, then entries/s written through
WAL.save() with group commit (one write + one fdatasync per batch) at each
batch size with 256-byte values, the same without fdatasync (the CPU cost
of encoding), and the replay speed of read_all(). Run it on the disk the
data dir will live on (--dir).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from petcd.raft.types import Entry, HardState
from petcd.wal import WAL

VALUE_SIZE = 256


def timed(seconds: float, step: Callable[[], int]) -> tuple[int, float]:
    """Run step() until `seconds` passed; returns (units done, elapsed)."""
    done = 0
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        done += step()
    return done, elapsed


def raw_fdatasync(workdir: str, seconds: float, preallocate: bool) -> float:
    path = os.path.join(workdir, "raw.bin")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    if preallocate:
        os.posix_fallocate(fd, 0, 64 << 20)
        os.fsync(fd)
    block = os.urandom(VALUE_SIZE)
    offset = 0

    def step() -> int:
        nonlocal offset
        os.pwrite(fd, block, offset)
        offset += len(block)
        os.fdatasync(fd)
        return 1

    n, elapsed = timed(seconds, step)
    os.close(fd)
    os.unlink(path)
    return n / elapsed


def wal_write(
    workdir: str, seconds: float, per_batch: int, *, fsync: bool, preallocate: bool = True
) -> tuple[float, float, str]:
    """(entries/s, batches/s, wal dir) of save() with `per_batch` entries a batch."""
    waldir = os.path.join(workdir, f"wal-{per_batch}-{int(fsync)}-{int(preallocate)}")
    wal = WAL.create(waldir, b"bench", fsync=fsync, preallocate=preallocate)
    value = os.urandom(VALUE_SIZE)
    index = 0
    saving = 0.0  # only save() is timed: Raft hands the WAL ready-made entries

    def step() -> int:
        nonlocal index, saving
        batch = [Entry(1, i, data=value) for i in range(index + 1, index + 1 + per_batch)]
        state = HardState(1, 1, index)
        start = time.perf_counter()
        wal.save(state, batch)
        saving += time.perf_counter() - start
        index += per_batch
        return per_batch

    n, _ = timed(seconds, step)
    wal.close()
    return n / saving, n / per_batch / saving, waldir


def replay(waldir: str) -> tuple[float, int]:
    start = time.perf_counter()
    wal = WAL.open(waldir, read_only=True)
    _, _, ents = wal.read_all()
    wal.close()
    return len(ents) / (time.perf_counter() - start), len(ents)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", default=None, help="directory on the disk to measure")
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument("--batches", default="1,64,1024", help="entries per batch")
    args = parser.parse_args()
    sizes = [int(b) for b in args.batches.split(",")]
    workdir = tempfile.mkdtemp(prefix="petcd-wal-bench-", dir=args.dir)
    try:
        print(f"dir {workdir}, {VALUE_SIZE}-byte values, {args.seconds:g}s per figure")
        for prealloc in (True, False):
            rate = raw_fdatasync(workdir, args.seconds, prealloc)
            label = "preallocated file" if prealloc else "appending file   "
            print(f"raw pwrite({VALUE_SIZE}B)+fdatasync, {label}: {rate:10,.0f} /s")
        print(
            f"{'entries/batch':>13} {'entries/s':>12} {'fdatasync/s':>12} {'MB/s':>8}"
            f" {'no-sync entries/s':>18}"
        )
        replay_dir = ""
        for per_batch in sizes:
            eps, bps, waldir = wal_write(workdir, args.seconds, per_batch, fsync=True)
            cpu_eps, _, cpu_dir = wal_write(workdir, args.seconds, per_batch, fsync=False)
            shutil.rmtree(cpu_dir)
            mbps = eps * (VALUE_SIZE + 13) / 1e6
            print(f"{per_batch:>13} {eps:>12,.0f} {bps:>12,.0f} {mbps:>8.1f} {cpu_eps:>18,.0f}")
            replay_dir = waldir
        for per_batch in sizes:
            eps, _, waldir = wal_write(
                workdir, args.seconds, per_batch, fsync=True, preallocate=False
            )
            shutil.rmtree(waldir)
            print(f"{per_batch:>13} {eps:>12,.0f}  (segments not preallocated)")
        rate, count = replay(replay_dir)
        print(f"replay (read_all) of {count:,} entries: {rate:,.0f} entries/s")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
