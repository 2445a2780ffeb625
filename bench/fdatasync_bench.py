"""What one WAL-sized write + fdatasync costs on this disk, by mechanism and by pace.

    python bench/fdatasync_bench.py [--n 1000] [--size 360] [--gaps 0,300,600]
                                    [--dir DIR] [--prep fallocate|zeros]

Writes `--size` bytes at the end of what was written (as the WAL appends a frame) into a
64 MiB file in --dir (default: the system's temporary directory), then waits for the
fdatasync: inline on the event loop's thread, through native AIO or io_uring completing on
an eventfd the loop watches (petcd.wal.aio / petcd.wal.uring, as the WAL writer does), or
on a thread (run_in_executor). Each line is one mechanism at one pace: `gap` microseconds
of idle loop between a completion and the next write, as a lone writer's puts leave.
The pace matters on ext4 without a journal: an fdatasync also writes the inode's block
whenever the file's mtime moved since the last one (once per timer tick), and a write
into the fallocated (unwritten) extent converts a block (docs/architecture/wal.md).
`--prep zeros` writes the file full of zeros first instead of fallocating it.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import uvloop

from petcd.wal.aio import AioSync
from petcd.wal.fdsync import FdSync
from petcd.wal.uring import UringSync

SIZE = 64 << 20


class Target:
    def __init__(self, path: str, prep: str) -> None:
        self.fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_TRUNC, 0o600)
        if prep == "zeros":
            zeros = b"\0" * (1 << 20)
            for off in range(0, SIZE, len(zeros)):
                os.pwrite(self.fd, zeros, off)
        else:
            os.posix_fallocate(self.fd, 0, SIZE)
        os.fsync(self.fd)
        self.off = 0

    def write(self, record: bytes) -> None:
        if self.off + len(record) > SIZE:
            self.off = 0
        os.pwrite(self.fd, record, self.off)
        self.off += len(record)


async def run(name: str, target: Target, record: bytes, n: int, gap_us: int,
              sync: Callable[[], object]) -> None:
    took = []
    for _ in range(n):
        if gap_us:
            await asyncio.sleep(gap_us / 1e6)
        t = time.perf_counter()
        target.write(record)
        r = sync()
        if r is not None:
            await r  # type: ignore[misc]
        took.append(time.perf_counter() - t)
        if not gap_us:
            await asyncio.sleep(0)
    took.sort()
    print(f"{name:7} gap {gap_us:4} us: median {took[n // 2] * 1e6:6.0f} us  "
          f"p90 {took[int(n * 0.9)] * 1e6:6.0f}  mean {statistics.mean(took) * 1e6:6.0f}",
          flush=True)


def eventfd_sync(fs: FdSync, fd: int) -> Callable[[], asyncio.Future[int]]:
    loop = asyncio.get_running_loop()
    waiting: dict[int, asyncio.Future[int]] = {}
    token = [0]

    def reap() -> None:
        for tok, err in fs.reap():
            waiting.pop(tok).set_result(err)
    loop.add_reader(fs.fileno(), reap)

    def start() -> asyncio.Future[int]:
        token[0] += 1
        fut = waiting[token[0]] = loop.create_future()
        fs.submit(fd, token[0])
        return fut
    return start


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="fdatasync-bench-") as tmp:
        target = Target(os.path.join(tmp, "wal"), args.prep)
        record = b"x" * args.size
        loop = asyncio.get_running_loop()
        pool = concurrent.futures.ThreadPoolExecutor(1)
        kinds: list[tuple[str, FdSync | None]] = [("inline", None), ("thread", None)]
        openers: list[tuple[str, Callable[[], FdSync | None]]] = [
            ("aio", AioSync.open), ("uring", UringSync.open)]
        for name, opener in openers:
            fs = opener()
            if fs is None:
                print(f"{name}: not available here")
            else:
                kinds.append((name, fs))
        print(f"load average {os.getloadavg()[0]:.1f}; {args.n} writes of {args.size} bytes "
              f"each, file prepared with {args.prep}")
        for gap in (int(g) for g in args.gaps.split(",")):
            for name, fs in kinds:
                sync: Callable[[], object]
                if name == "inline":
                    sync = lambda: os.fdatasync(target.fd)  # noqa: E731
                elif name == "thread":
                    sync = lambda: loop.run_in_executor(pool, os.fdatasync, target.fd)  # noqa: E731
                else:
                    assert fs is not None
                    sync = eventfd_sync(fs, target.fd)
                await run(name, target, record, args.n, gap, sync)
                if fs is not None:
                    loop.remove_reader(fs.fileno())
        for _, opened in kinds:
            if opened is not None:
                opened.close()
        pool.shutdown()
        os.close(target.fd)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--size", type=int, default=360, help="bytes per write (a lone put's frame)")
    ap.add_argument("--gaps", default="0,300,600", help="idle microseconds between writes")
    ap.add_argument("--dir", default=None)
    ap.add_argument("--prep", choices=["fallocate", "zeros"], default="fallocate")
    uvloop.run(main(ap.parse_args()))
