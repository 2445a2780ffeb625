"""What handing a WAL save to the disk costs, per mechanism, without the disk: WalWriter
saves on tmpfs (/dev/shm, where fdatasync returns at once), interleaved block by block.

    python bench/wal_handoff_bench.py [--blocks 10] [--saves 500] [--busy-us 0]

Mechanisms: 0 (the WAL thread), uring (io_uring), aio (native AIO); see
server/raftnode/walwriter.py. Prints per save the median and mean wall time, the CPU of
every thread of this process (the io_uring workers included; native AIO's kernel worker
is not a thread of ours) and voluntary context switches. --busy-us keeps the loop thread
busy that long after each save is started, as a member's loop is (the inline apply,
other requests): the WAL thread then waits for the GIL, the kernel's workers do not.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import uvloop

from petcd.raft.types import Entry, EntryType, HardState
from petcd.server.raftnode.walwriter import WalWriter
from petcd.server.worker import Worker
from petcd.wal.storage import MemberStorage

MODES = ("0", "uring", "aio")


def threads_total() -> tuple[int, int]:
    """(CPU ns, voluntary context switches) of all threads of this process."""
    cpu = switches = 0
    for tid in os.listdir("/proc/self/task"):
        try:
            cpu += int(Path(f"/proc/self/task/{tid}/schedstat").read_text().split()[0])
            for line in Path(f"/proc/self/task/{tid}/status").read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches"):
                    switches += int(line.split()[1])
        except OSError:
            continue  # a thread that ended meanwhile
    return cpu, switches


async def run(blocks: int, saves: int, busy: float, base: str) -> None:
    writers: dict[str, tuple[WalWriter, MemberStorage, Worker]] = {}
    for mode in MODES:
        storage = MemberStorage.create(os.path.join(base, mode), b"bench")
        thread = Worker(f"wal-{mode}")
        writer = WalWriter(storage, thread, fdsync=mode)
        writer.start()
        if mode != "0" and writer.uses_thread:
            print(f"{mode}: not available here (falls back to the thread)")
        writers[mode] = (writer, storage, thread)
    lat: dict[str, list[float]] = {m: [] for m in MODES}
    cpu = dict.fromkeys(MODES, 0)
    switches = dict.fromkeys(MODES, 0)
    index = dict.fromkeys(MODES, 1)
    try:
        for b in range(blocks):
            for mode in MODES if b % 2 else MODES[::-1]:
                writer = writers[mode][0]
                cpu0, sw0 = threads_total()
                for _ in range(saves):
                    i = index[mode]
                    index[mode] = i + 1
                    started = time.perf_counter()
                    saved = writer.save(HardState(1, 1, i - 1),
                                        [Entry(1, i, EntryType.NORMAL, b"x" * 300)], None)
                    until = time.perf_counter() + busy
                    while time.perf_counter() < until:
                        pass
                    await saved
                    lat[mode].append(time.perf_counter() - started)
                cpu1, sw1 = threads_total()
                cpu[mode] += cpu1 - cpu0
                switches[mode] += sw1 - sw0
    finally:
        for writer, storage, thread in writers.values():
            writer.close()
            thread.shutdown()
            storage.close()
    print(f"load average {os.getloadavg()[0]:.1f}; {blocks}x{saves} saves each, loop busy "
          f"{busy * 1e6:.0f} us after each")
    for mode in MODES:
        n = len(lat[mode])
        print(f"{mode:6} median {statistics.median(lat[mode]) * 1e6:6.1f} us  mean "
              f"{statistics.mean(lat[mode]) * 1e6:6.1f} us  cpu/save {cpu[mode] / n / 1e3:6.1f}"
              f" us  voluntary switches/save {switches[mode] / n:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--blocks", type=int, default=10)
    ap.add_argument("--saves", type=int, default=500)
    ap.add_argument("--busy-us", type=float, default=0.0)
    args = ap.parse_args()
    base = tempfile.mkdtemp(prefix="wal-handoff-", dir="/dev/shm")
    try:
        uvloop.install()
        asyncio.run(run(args.blocks, args.saves, args.busy_us / 1e6, base))
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
