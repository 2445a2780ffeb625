"""petcd-benchmark: etcd's `benchmark` tool (tools/benchmark) for petcd and etcd: the same
subcommands, flags and report, so etcd's performance docs run as written.

    petcd-benchmark --endpoints=127.0.0.1:2379 --conns=100 --clients=1000 \\
        range foo --consistency=l --total=100000

Subcommands: put, range, txn-put, txn-mixed, watch, watch-latency, lease-keepalive.
Global flags: --endpoints --conns --clients --precise --cacert --cert --key --user
--dial-timeout --target-leader --output json, and petcd's own --procs (load generator
processes; default: one per core, at most --clients).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import re
from collections.abc import Sequence

from petcd.cli.benchmark import client as C
from petcd.cli.benchmark.report import Stats, format_json, format_text, to_json
from petcd.cli.benchmark.runner import Job, ProgressBar, run
from petcd.cli.benchmark.watching import watch, watch_latency
from petcd.cli.workers import split

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration(text: str) -> float:
    """A Go duration (1s, 500ms, 1m30s) in seconds."""
    if text in ("0", ""):
        return 0.0
    parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}")
    return sum(float(n) * _UNITS[u] for n, u in parts)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="petcd-benchmark",
                                 description="A low-level benchmark tool for etcd3 and petcd.")
    ap.add_argument("--endpoints", default="127.0.0.1:2379", help="gRPC endpoints")
    ap.add_argument("--conns", type=int, default=1, help="Total number of gRPC connections")
    ap.add_argument("--clients", type=int, default=1, help="Total number of gRPC clients")
    ap.add_argument("--precise", action="store_true", help="use full floating point precision")
    ap.add_argument("--cert", default="",
                    help="identify HTTPS client using this SSL certificate file")
    ap.add_argument("--key", dest="key_file", default="",
                    help="identify HTTPS client using this SSL key file")
    ap.add_argument("--cacert", default="",
                    help="verify certificates of HTTPS-enabled servers using this CA bundle")
    ap.add_argument("--user", default="",
                    help="provide username[:password] and prompt if password is not supplied.")
    ap.add_argument("--dial-timeout", type=duration, default=0.0,
                    help="dial timeout for client connections")
    ap.add_argument("--target-leader", action="store_true", help="connect only to the leader node")
    ap.add_argument("--output", default="", choices=("", "json"),
                    help="Output format for benchmark results (only json is supported)")
    ap.add_argument("--procs", type=int, default=0,
                    help="load generator processes (petcd's; default: one per core)")
    sub = ap.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser, total: int = 10000) -> None:
        p.add_argument("--total", type=int, default=total, help="Total number of requests")
        p.add_argument("--rate", type=int, default=0,
                       help="Maximum requests per second (0 is no limit)")

    def keys(p: argparse.ArgumentParser, key_size: int = 8, val_size: int = 8) -> None:
        p.add_argument("--key-size", type=int, default=key_size, help="Key size of the requests")
        p.add_argument("--val-size", type=int, default=val_size, help="Value size of put requests")
        p.add_argument("--key-space-size", type=int, default=1, help="Maximum possible keys")
        p.add_argument("--sequential-keys", action="store_true", help="Use sequential keys")

    p = sub.add_parser("put", help="Benchmark put")
    common(p)
    keys(p)
    p = sub.add_parser("range", help="Benchmark range")
    p.add_argument("range_key", metavar="key")
    p.add_argument("range_end", metavar="end", nargs="?", default="")
    common(p)
    p.add_argument("--consistency", default="l", choices=("l", "s"),
                   help="Linearizable(l) or Serializable(s)")
    p.add_argument("--limit", type=int, default=0, help="Maximum number of results per range")
    p = sub.add_parser("txn-put", help="Benchmark txn-put")
    common(p)
    keys(p)
    p.add_argument("--txn-ops", type=int, default=1, help="Number of puts per txn")
    p = sub.add_parser("txn-mixed", help="Benchmark a mix of read and write txns")
    p.add_argument("range_key", metavar="key")
    p.add_argument("range_end", metavar="end", nargs="?", default="")
    common(p)
    keys(p)
    p.add_argument("--consistency", default="l", choices=("l", "s"),
                   help="Linearizable(l) or Serializable(s)")
    p.add_argument("--rw-ratio", type=float, default=1.0, help="Read/write ops ratio")
    p.add_argument("--limit", type=int, default=0, help="Maximum number of results per range")
    p = sub.add_parser("watch", help="Benchmark watch")
    p.add_argument("--streams", type=int, default=10, help="Total watch streams")
    p.add_argument("--watch-per-stream", type=int, default=100, help="Total watchers per stream")
    p.add_argument("--watched-key-total", type=int, default=1, help="Total number of keys watched")
    p.add_argument("--put-total", type=int, default=1000, help="Number of put requests")
    p.add_argument("--put-rate", type=int, default=0, help="Number of keys to put per second")
    p.add_argument("--key-size", type=int, default=32, help="Key size of watch request")
    p = sub.add_parser("watch-latency", help="Benchmark watch latency")
    p.add_argument("--total", type=int, default=10000, help="Total number of put requests")
    p.add_argument("--put-rate", type=int, default=100, help="Number of keys to put per second")
    p.add_argument("--key-size", type=int, default=32, help="Key size of watch response")
    p.add_argument("--val-size", type=int, default=32, help="Value size of watch response")
    p = sub.add_parser("lease-keepalive", help="Benchmark lease keepalive")
    common(p)
    return ap


def _spec(args: argparse.Namespace) -> C.ConnSpec:
    user = args.user
    if user and ":" not in user:
        user = f"{user}:{getpass.getpass('Password: ')}"
    endpoints = tuple(e.strip() for e in args.endpoints.split(",") if e.strip())
    spec = C.ConnSpec(endpoints, args.cacert, args.cert, args.key_file, user, args.dial_timeout)
    if args.target_leader:
        leader = asyncio.run(C.leader_endpoint(spec))
        spec = C.ConnSpec((leader,), args.cacert, args.cert, args.key_file, user, args.dial_timeout)
    return spec


def _jobs(args: argparse.Namespace, spec: C.ConnSpec) -> list[Job]:
    clients = max(1, args.clients)
    procs = args.procs or min(clients, os.cpu_count() or 1)
    procs = max(1, min(procs, clients, max(1, args.total)))
    params = {k: getattr(args, k) for k in ("key_size", "val_size", "key_space_size",
                                             "sequential_keys", "consistency", "rw_ratio",
                                             "txn_ops", "limit") if hasattr(args, k)}
    if hasattr(args, "range_key"):
        params["key"] = args.range_key.encode()
        params["end"] = args.range_end.encode()
    totals = split(args.total, procs)
    per_clients = split(clients, procs)
    conns = split(max(1, min(args.conns, clients)), procs)
    jobs = []
    first = 0
    for i in range(procs):
        jobs.append(Job(args.command, spec, totals[i], first, per_clients[i],
                        max(1, conns[i]), args.rate / procs if args.rate > 0 else 0.0,
                        seed=os.getpid() * 1000 + i, params=params))
        first += totals[i]
    return jobs


def _print(stats: Stats, args: argparse.Namespace, title: str = "") -> None:
    if args.output == "json":
        print(format_json(stats))
    else:
        if title:
            print(title)
        print(format_text(stats, args.precise))


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    spec = _spec(args)
    if args.command == "watch":
        creation, puts = asyncio.run(watch(spec, args))
        if args.output == "json":
            print(json.dumps({"watch_creation": to_json(creation), "put": to_json(puts)}))
        else:
            print("Watch creation summary:")
            print(format_text(creation, args.precise))
            print("Put summary:")
            print(format_text(puts, args.precise))
        return 0
    if args.command == "watch-latency":
        _print(asyncio.run(watch_latency(spec, args)), args)
        return 0
    jobs = _jobs(args, spec)
    lats, errors, wall = run(jobs, ProgressBar(args.total))
    _print(Stats.build(lats, wall, errors), args)
    return 0
