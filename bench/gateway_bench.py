"""JSON gateway throughput of one member: puts/s and ranges/s over HTTP/1.1 (POST
/v3/kv/put, POST /v3/kv/range, keep-alive connections, one request in flight each),
with 1 and 64 concurrent clients, against petcd and real etcd 3.4 started the same way
on free loopback ports, side by side.

    python bench/gateway_bench.py                       # petcd and etcd, 5 s per cell
    python bench/gateway_bench.py --clients 64 --seconds 10 --repeat 3

Clients are bench/loadgen.py's worker processes (uvloop) speaking HTTP/1.1 through
asyncio streams: request bytes built once up front, responses read (status line,
headers, body) but not parsed as JSON. CPU of server and clients from /proc.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import (
    Cell,
    add_common_args,
    member_for,
    parse_common_args,
    preload,
    print_table,
    run_processes,
    run_worker,
    split_clients,
    take_turns,
)

from petcd.testing import MemberProcess

WORKLOADS = ("put", "range")


def _requests(host: str, workload: str, worker: int, value_size: int) -> list[bytes]:
    def req(path: str, body: dict[str, Any]) -> bytes:
        data = json.dumps(body).encode()
        return (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(data)}\r\n\r\n").encode() + data

    def b64(b: bytes) -> str:
        return base64.b64encode(b).decode()

    if workload == "put":
        value = b64(b"v" * value_size)
        return [req("/v3/kv/put", {"key": b64(b"bench/%d/%06d" % (worker, i)), "value": value})
                for i in range(1000)]
    return [req("/v3/kv/range", {"key": b64(b"bench/0/%06d" % (i % 100))}) for i in range(100)]


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    i = lower.find(b"content-length:")
    if i >= 0:
        n = int(lower[i + 15:lower.index(b"\r\n", i)])
        await reader.readexactly(n)
    else:  # chunked (etcd's error answers)
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip() or b"0", 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return status


async def _worker_main(address: str, workload: str, worker: int, concurrency: int,
                       seconds: float, value_size: int, ready: mp.Queue[int], go: Any,
                       out: mp.Queue[tuple[int, int]]) -> None:
    host, port = address.rsplit(":", 1)
    reqs = _requests(address, workload, worker, value_size)
    conns = [await asyncio.open_connection(host, int(port)) for _ in range(concurrency)]
    ready.put(worker)
    await asyncio.get_running_loop().run_in_executor(None, go.wait)
    count = errors = 0
    stop_at = time.monotonic() + seconds
    n = len(reqs)

    async def loop(i: int) -> None:
        nonlocal count, errors
        reader, writer = conns[i]
        j = i
        while time.monotonic() < stop_at:
            writer.write(reqs[j % n])
            if await _read_response(reader) == 200:
                count += 1
            else:
                errors += 1
            j += concurrency

    await asyncio.gather(*(loop(i) for i in range(concurrency)))
    out.put((count, errors))
    for _, w in conns:
        w.close()


def _worker(*args: Any) -> None:
    run_worker(_worker_main, *args)


def run_cell(member: MemberProcess, workload: str, clients: int, procs: int, seconds: float,
             value_size: int) -> Cell:
    args = [(member.address, workload, i, n, seconds, value_size)
            for i, n in enumerate(split_clients(clients, procs))]
    assert member.proc is not None
    return run_processes(_worker, args, [member.proc.pid], seconds + 60).cell(workload, clients)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(ap, ",".join(WORKLOADS))
    ap.add_argument("--value-size", type=int, default=256)
    args = ap.parse_args()
    targets, clients, workloads = parse_common_args(args)
    unit = {"put": "puts/s", "range": "ranges/s"}
    with tempfile.TemporaryDirectory(prefix="gateway-bench-") as tmp:
        members: dict[str, MemberProcess] = {}
        try:
            for target in targets:
                members[target] = member_for(target, Path(tmp) / target).start()
                preload(members[target].address, args.value_size)
            results = take_turns(
                targets, workloads, clients, args.repeat, unit,
                lambda t, wl, c: run_cell(members[t], wl, c, args.procs if c > 1 else 1,
                                          args.seconds, args.value_size))
        finally:
            for m in members.values():
                m.stop()
    print_table("gateway rate/s", results, targets,
                [(wl, c, unit[wl]) for wl in workloads for c in clients])


if __name__ == "__main__":
    main()
