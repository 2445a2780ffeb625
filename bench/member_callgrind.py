"""Instructions per request of a whole petcd member (h2, handler, Raft, WAL, apply), under
callgrind, which a busy machine does not move:

    python bench/member_callgrind.py [--ops put,grant,watchput] [--calls 300] [--src DIR]
                                     [--clients 1]

Starts one member under `valgrind --tool=callgrind --instr-atstart=no`, warms it up with
sequential requests from one client, switches instrumentation on for --calls sequential
requests (a put of a 256-byte value, or a LeaseGrant with a server-chosen ID and TTL 600,
or a put whose event a watcher on the same channel receives before the next put)
and off again, then on again for as long as the calls took with no calls (the member's
idle work: Raft ticks, timers), and prints (calls - idle) / --calls. --clients N keeps N
calls in flight (N threads over up to 16 connections, as the 64-client benchmarks do):
the per-batch costs spread over the batch, which under callgrind's slowness is larger
than a real run's. --src DIR runs
another checkout's petcd beside this one (e.g. `git archive <commit> src | tar -x -C
DIR`), --keep DIR keeps the callgrind.out files for callgrind_annotate. --loop-thread
counts only the event loop's thread (callgrind's --separate-threads): the backend
commits on their own thread are timed (every 100 ms of a member that callgrind slows
~50-fold), so how many fall inside the measured calls varies from run to run.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import grpc
from lone_put_cpu import caller

from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.testing import PetcdProcess

_SITE = Path(__file__).resolve().parent / "cgsite"


class _Grinded(PetcdProcess):
    def __init__(self, data_dir: Path, out: Path, src: str, threads: bool = False) -> None:
        super().__init__(data_dir, env={"PETCD_SRC": src, "PYTHONPATH": str(_SITE)})
        self.out = out
        self.threads = threads

    def command(self) -> list[str]:
        split = ["--separate-threads=yes"] if self.threads else []
        return ["valgrind", "--tool=callgrind", "--instr-atstart=no", *split,
                f"--callgrind-out-file={self.out}", *super().command()]


def _control(pid: int, *args: str) -> str:
    return subprocess.run(["callgrind_control", *args, str(pid)], check=True,
                          capture_output=True, text=True).stdout


def watched_put(ch: grpc.Channel) -> Callable[[int], object]:
    """A put (as caller's) whose event a watcher on the same channel receives before
    the next put is sent: the member's work per put plus its watch event."""
    import queue
    import threading

    requests: queue.Queue[rpc.WatchRequest | None] = queue.Queue()
    requests.put(rpc.WatchRequest(create_request=rpc.WatchCreateRequest(
        key=b"k", range_end=b"l")))
    stream = ch.stream_stream("/etcdserverpb.Watch/Watch",
                              request_serializer=rpc.WatchRequest.SerializeToString,
                              response_deserializer=rpc.WatchResponse.FromString)(
        iter(requests.get, None))
    seen: queue.Queue[int] = queue.Queue()
    created = threading.Event()

    def read() -> None:
        try:
            for resp in stream:
                if resp.created:
                    created.set()
                for e in resp.events:
                    seen.put(e.kv.mod_revision)
        except grpc.RpcError:
            pass  # (cancelled at the end)

    threading.Thread(target=read, daemon=True).start()
    # (a put before the watch exists has no event to wait for)
    if not created.wait(120):
        raise RuntimeError("the watch was not created")
    put = ch.unary_unary("/etcdserverpb.KV/Put",
                         request_serializer=rpc.PutRequest.SerializeToString,
                         response_deserializer=rpc.PutResponse.FromString)

    def call(i: int) -> object:
        rev = put(rpc.PutRequest(key=b"k%d" % (i % 1000), value=b"v" * 256)).header.revision
        while seen.get(timeout=30) != rev:
            pass
        return rev
    return call


def _run_calls(callers: list[Callable[[int], object]], calls: int, clients: int) -> None:
    """`calls` requests, `clients` at a time (client k uses callers[k % len(callers)])."""
    if clients <= 1:
        for i in range(calls):
            callers[0](i)
        return

    def client(k: int) -> None:
        call = callers[k % len(callers)]
        for i in range(k, calls, clients):
            call(i)

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))


def measure(op: str, calls: int, src: str, keep: str, clients: int = 1,
            loop_thread: bool = False) -> tuple[float, float]:
    with tempfile.TemporaryDirectory(prefix="member-cg-") as tmp:
        out = Path(tmp) / "callgrind.out"
        m = _Grinded(Path(tmp) / "m", out, src, loop_thread)
        m.start(timeout=300)
        try:
            assert m.proc is not None
            channels = [grpc.insecure_channel(m.address) for _ in range(min(clients, 16))]
            try:
                callers = [watched_put(ch) if op == "watchput" else caller(ch, op)
                           for ch in channels]
                _run_calls(callers, max(100, clients * 4), clients)  # warm-up
                # (valgrind's pid is the member's: it runs the program in its process)
                pid = m.proc.pid
                _control(pid, "-z")
                _control(pid, "-i", "on")
                started = time.monotonic()
                _run_calls(callers, calls, clients)
                took = time.monotonic() - started
                _control(pid, "-i", "off")
                _control(pid, "-d")
                # The member's idle work (ticks, timers) for as long again, subtracted.
                _control(pid, "-i", "on")
                time.sleep(took)
                _control(pid, "-i", "off")
                _control(pid, "-d")
            finally:
                for ch in channels:
                    ch.close()
        finally:
            m.stop(timeout=60)
        dumps = []
        # (split by thread: callgrind.out.<dump>-<thread>, the main thread being 01)
        files = Path(tmp).glob("callgrind.out.*-01" if loop_thread else "callgrind.out.*")
        for f in sorted(files, key=lambda f: int(f.name.split(".")[-1].split("-")[0])):
            text = f.read_text(errors="replace")
            dumps.append(sum(int(n) for n in re.findall(r"^totals: (\d+)", text, re.M)))
            if keep:
                Path(keep).mkdir(parents=True, exist_ok=True)
                shutil.copy(f, Path(keep) / f"{op}-{'before' if src else 'this'}-{f.name}")
    busy, idle = dumps[0], dumps[1]
    return busy / calls, (busy - idle) / calls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ops", default="put,grant")
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--src", default="", help="another checkout's src, measured first")
    ap.add_argument("--clients", type=int, default=1, help="calls in flight (default 1)")
    ap.add_argument("--keep", default="", help="keep the callgrind.out files here")
    ap.add_argument("--loop-thread", action="store_true",
                    help="count only the event loop's thread (the member's main thread)")
    args = ap.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f} (instruction counts do not depend on it)")
    trees = ([("before", args.src)] if args.src else []) + [("this", "")]
    for op in args.ops.split(","):
        for name, src in trees:
            raw, net = measure(op, args.calls, src, args.keep, args.clients, args.loop_thread)
            print(f"{op:6} {name:7} {net / 1e3:8.1f} k instructions per call "
                  f"({raw / 1e3:.1f} k before the idle work is subtracted)", flush=True)


if __name__ == "__main__":
    main()
