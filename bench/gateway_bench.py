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
import base64
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import (
    Cell,
    add_common_args,
    http_cell,
    one_member_each,
    preload,
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


def run_cell(member: MemberProcess, workload: str, clients: int, procs: int, seconds: float,
             value_size: int) -> Cell:
    return http_cell(_requests, (200,), member, workload, clients, procs, seconds, value_size)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(ap, ",".join(WORKLOADS))
    ap.add_argument("--value-size", type=int, default=256)
    args = ap.parse_args()
    one_member_each(
        args, "gateway-bench-", {"put": "puts/s", "range": "ranges/s"}, "gateway rate/s",
        lambda m, wl, c, procs: run_cell(m, wl, c, procs, args.seconds, args.value_size),
        prepare=lambda m: preload(m.address, args.value_size))


if __name__ == "__main__":
    main()
