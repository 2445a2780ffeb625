"""What grows faster than the data: bench/scale_bench.py's steps at several key counts,
one 3-member cluster per size (petcd by default), then a table per size with each figure
beside its cost per key (or per 1000 keys), so a figure that should be constant or linear
but is not stands out. The snapshot count is the same at every size (--snapshot-count,
default 10000), so the Raft log each member keeps is not part of the growth.

    python bench/scale_growth.py --sizes 50000,100000,200000,400000
    python bench/scale_growth.py --sizes 20000,40000 --targets petcd,etcd --json g.json

Every other flag is scale_bench's (--clients, --procs, --page, --prefix-keys, --steps...).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scale_bench import parser, run_target

from petcd.testing import have_etcd


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f}"


def _leader(r: dict[str, Any], what: str) -> Any:
    return next(v for k, v in r[what].items() if k.endswith("*"))


def _followers(r: dict[str, Any], what: str) -> list[Any]:
    return [v for k, v in sorted(r[what].items()) if not k.endswith("*")]


# (column label, cell): a cell gets one run's result and its key count.
Column = tuple[str, Callable[[dict[str, Any], int], str]]

COLUMNS: list[Column] = [
    ("puts/s", lambda r, n: f"{r['load_rate']:.0f}"),
    ("CPU us/put L/F", lambda r, n: f"{_leader(r, 'load_cpu') / n * 1e6:.0f}/" + "/".join(
        f"{c / n * 1e6:.0f}" for c in _followers(r, "load_cpu"))),
    ("client CPU us/put", lambda r, n: f"{r['load_client_cpu'] / n * 1e6:.0f}"),
    ("anon MB L/F", lambda r, n: f"{_mb(_leader(r, 'rss')['RssAnon'])}/" + "/".join(
        _mb(m["RssAnon"]) for m in _followers(r, "rss"))),
    ("file MB L", lambda r, n: _mb(_leader(r, "rss")["RssFile"])),
    ("db MB (B/key)", lambda r, n: f"{_mb(r['disk_parts']['db'])} "
                                   f"({r['disk_parts']['db'] / n:.0f})"),
    ("WAL MB", lambda r, n: _mb(r["disk_parts"]["wal"])),
    ("snap MB", lambda r, n: _mb(r["disk_parts"]["snap"])),
    ("range s (us/key)", lambda r, n: f"{r['range_s']:.1f} ({r['range_s'] / n * 1e6:.0f})"),
    ("range +MB", lambda r, n: _mb(r["range_anon_growth"])),
    ("prefix s", lambda r, n: f"{r['prefix_s']:.2f}"),
    ("prefix +MB/resp", lambda r, n: f"{_mb(r['prefix_anon_peak_growth'])}/"
                                     f"{_mb(r['prefix_bytes'])}"),
    ("defrag s", lambda r, n: f"{r['defrag_s']:.1f}"),
    ("kill9 ready/up s", lambda r, n: f"{r['restart_kill9_ready_s']:.1f}/"
                                      f"{r['restart_kill9_caught_up_s']:.1f}"),
    ("restarted anon MB (peak RSS)", lambda r, n: f"{_mb(r['restart_kill9_rss']['RssAnon'])} "
                                                  f"({_mb(r['restart_kill9_rss']['VmHWM'])})"),
    ("new member s", lambda r, n: f"{r['new_member_s']:.1f}"),
    ("new anon MB (peak RSS)", lambda r, n: f"{_mb(r['new_member_rss']['RssAnon'])} "
                                            f"({_mb(r['new_member_rss']['VmHWM'])})"),
]


def table(runs: Sequence[tuple[str, int, dict[str, Any]]]) -> str:
    """One row per figure, one column per (target, size); '-' where a step did not run."""
    rows = [["", *(f"{t} {n}" for t, n, _ in runs)]]
    for label, cell in COLUMNS:
        cells = [label]
        for _, n, r in runs:
            try:
                cells.append(cell(r, n))
            except (KeyError, StopIteration):
                cells.append("-")
        rows.append(cells)
    width = max(len(c) for row in rows for c in row[1:])
    label_width = max(len(row[0]) for row in rows)
    return "\n".join(row[0].ljust(label_width) + "".join(c.rjust(width + 2) for c in row[1:])
                     for row in rows)


def main() -> None:
    ap = parser()
    ap.description = __doc__.split("\n\n")[0]
    ap.add_argument("--sizes", default="50000,100000,200000,400000",
                    help="key counts, one cluster each")
    ap.set_defaults(targets="petcd", snapshot_count=10_000)
    args = ap.parse_args()
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)  # (as scale_bench: keep the .pyc)
    targets = [t for t in args.targets.split(",") if t]
    if "etcd" in targets and not have_etcd():
        targets.remove("etcd")
    runs: list[tuple[str, int, dict[str, Any]]] = []
    prefix_keys, profile = args.prefix_keys, args.profile
    for n in (int(s) for s in args.sizes.split(",")):
        args.keys = n
        args.prefix_keys = min(prefix_keys, 10 ** (len(str(n)) - 1))  # (a power of 10)
        if profile:  # a directory per size
            args.profile = os.path.join(profile, str(n))
            os.makedirs(args.profile, exist_ok=True)
        for t in targets:
            print(f"{t}: {n} keys ...", flush=True)
            with tempfile.TemporaryDirectory(prefix="scale-growth-", dir=args.dir) as tmp:
                r = run_target(t, Path(tmp), args)
            print(json.dumps(r), flush=True)
            runs.append((t, n, r))
            if args.json:  # after each run: a long series keeps what it measured
                Path(args.json).write_text(json.dumps(
                    [{"target": t, "keys": k, **r} for t, k, r in runs], indent=1))
    print(f"\n{args.value_size}-byte values, 3 members, {args.clients} clients in "
          f"{args.procs} processes, snapshot-count {args.snapshot_count}, "
          f"page {args.page}; L = leader, F = followers")
    print("load: " + os.popen("uptime").read().strip())
    print(table(runs))


if __name__ == "__main__":
    main()
