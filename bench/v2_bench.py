"""v2 keys API throughput of one member (--enable-v2): sets/s (PUT /v2/keys/...),
gets/s (local reads) and quorum gets/s (reads through the log) over HTTP/1.1
keep-alive connections, one request in flight each, with 1 and 64 clients, petcd and
real etcd 3.4 side by side.

    python bench/v2_bench.py                          # petcd and etcd, 5 s per cell
    python bench/v2_bench.py --clients 64 --seconds 10 --repeat 3

The load workers are bench/gateway_bench.py's (request bytes built up front, answers
read but not parsed); CPU of server and clients from /proc.
"""

from __future__ import annotations

import argparse
import sys
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import (
    Cell,
    add_common_args,
    http_cell,
    one_member_each,
)

from petcd.testing import MemberProcess

WORKLOADS = ("set", "get", "qget")
_OK = (200, 201)


def _requests(host: str, workload: str, worker: int, value_size: int) -> list[bytes]:
    if workload == "set":
        body = b"value=" + b"v" * value_size
        return [(f"PUT /v2/keys/bench/{worker}/{i:06d} HTTP/1.1\r\nHost: {host}\r\n"
                 "Content-Type: application/x-www-form-urlencoded\r\n"
                 f"Content-Length: {len(body)}\r\n\r\n").encode() + body for i in range(1000)]
    quorum = "?quorum=true" if workload == "qget" else ""
    return [f"GET /v2/keys/bench/0/{i:06d}{quorum} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
            for i in range(100)]


def run_cell(member: MemberProcess, workload: str, clients: int, procs: int, seconds: float,
             value_size: int) -> Cell:
    return http_cell(_requests, _OK, member, workload, clients, procs, seconds, value_size)


def _preload(member: MemberProcess, value_size: int) -> None:
    for i in range(100):
        req = urllib.request.Request(f"{member.endpoint}/v2/keys/bench/0/{i:06d}",
                                     data=b"value=" + b"v" * value_size, method="PUT")
        urllib.request.urlopen(req, timeout=30).read()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(ap, ",".join(WORKLOADS))
    ap.add_argument("--value-size", type=int, default=256)
    args = ap.parse_args()
    one_member_each(
        args, "v2-bench-", {"set": "sets/s", "get": "gets/s", "qget": "quorum gets/s"},
        "v2 rate/s",
        lambda m, wl, c, procs: run_cell(m, wl, c, procs, args.seconds, args.value_size),
        member_args=["--enable-v2=true"], prepare=lambda m: _preload(m, args.value_size))


if __name__ == "__main__":
    main()
