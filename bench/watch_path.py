"""Where a watch event's time goes inside one petcd member, stage by stage, for a lone
put and one watcher (the latency case of bench/watch_bench.py).

    python bench/watch_path.py [--puts 1000] [--before-src DIR/src] [--repeat 2]
                               [--watcher-conn same|separate]

Starts a member whose write and watch paths record timestamps (bench/watchtrace, loaded
via PYTHONPATH), sends sequential puts from one client that also watches the key, and
prints the median time of each stage after the put's apply started: the hub told of the
batch, the event handed to the watcher's HTTP/2 stream, the event written to the socket,
the put answered and its response written; then the client's side (same clock): its put
reaching the server, and the event and the answer reaching it once written. With
--before-src the other checkout runs the same way, the two taking turns, for a
before/after table from one run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from watch_bench import Stamps, latency_stamps

from petcd.testing import PetcdProcess

# (label, the event it is, the stage it is looked for after)
STAGES = [
    ("recv -> apply starts", "apply_start", None),
    ("apply start -> hub notified", "notify", "apply_start"),
    ("apply start -> event on the watcher's h2 stream", "ev_h2", "notify"),
    ("apply start -> event written to the socket", "sent", "ev_h2"),
    ("apply start -> that write returned", "flushed", "sent"),
    ("apply start -> apply ended", "apply_end", "apply_start"),
    ("apply start -> put answered (future resolved)", "answered", "apply_end"),
    ("apply start -> put response written", "sent", "answered"),
]


def cycles(events: list[tuple[str, int]]) -> list[dict[str, int]]:
    """Per put (from each 'propose' to the next): the last 'recv' before it, and for each
    stage the first matching event after its anchor."""
    starts = [i for i, (n, _) in enumerate(events) if n == "propose"]
    out = []
    for k, i in enumerate(starts):
        end = starts[k + 1] if k + 1 < len(starts) else len(events)
        recv = max((t for n, t in events[:i] if n == "recv"), default=None)
        if recv is None:
            continue
        found: dict[str, int] = {"recv": recv}
        pos: dict[str, int] = {}
        ok = True
        for label, name, after in STAGES:
            j0 = pos[after] if after else i
            j = next((j for j in range(j0 + 1, end) if events[j][0] == name), None)
            if j is None:
                ok = False
                break
            found[label] = events[j][1]
            pos[name] = j
        if ok:
            out.append(found)
    return out


# The client's side (bench/watch_bench.py's stamps, the same clock), per put
CLIENT = [
    ("client: put sent -> server recv", "c_sent", "recv"),
    ("client: event write starts -> event seen", STAGES[3][0], "c_seen"),
    ("client: response write starts -> answer", STAGES[-1][0], "c_answer"),
    ("client: put sent -> event seen", "c_sent", "c_seen"),
]


def with_client(cycles: list[dict[str, int]], stamps: Stamps) -> None:
    """Adds to each traced put the client's stamps of the put it answers (the last one
    sent before the server read it)."""
    sent = [int(t0 * 1e9) for t0, _, _ in stamps]
    j = 0
    for c in cycles:
        while j + 1 < len(sent) and sent[j + 1] <= c["recv"]:
            j += 1
        _, t1, seen = stamps[j]
        c["c_sent"], c["c_answer"], c["c_seen"] = sent[j], int(t1 * 1e9), int(seen * 1e9)


def trace(src: str, n: int, separate: bool, tmp: Path, tag: str) -> tuple[list[dict[str, int]],
                                                                         float]:
    out = tmp / f"stages-{tag}.json"
    env = {"PETCD_STAGES_OUT": str(out),
           "PYTHONPATH": str(Path(__file__).resolve().parent / "watchtrace")}
    if src:
        env["PETCD_SRC"] = src
    m = PetcdProcess(tmp / tag, env=env)
    m.start()
    try:
        stamps = latency_stamps(m.address, n, 100, separate)
    finally:
        m.stop()
    events = [(name, t) for name, t in json.loads(out.read_text())]
    traced = cycles(events)
    with_client(traced, stamps)
    return traced[n // 10:], statistics.median((seen - t0) * 1000 for t0, _, seen in stamps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--puts", type=int, default=1000)
    ap.add_argument("--before-src", default="", help="another checkout's src directory")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--watcher-conn", choices=["same", "separate"], default="same")
    args = ap.parse_args()
    sides = {"after": ""} if not args.before_src else {"before": args.before_src, "after": ""}
    results: dict[str, list[tuple[list[dict[str, int]], float]]] = {s: [] for s in sides}
    with tempfile.TemporaryDirectory(prefix="watch-path-") as tmp:
        for r in range(args.repeat):
            for side, src in sides.items():
                results[side].append(trace(src, args.puts, args.watcher_conn == "separate",
                                           Path(tmp), f"{side}{r}"))
    print(f"{args.puts} puts x {args.repeat} run(s), watcher on the {args.watcher_conn} "
          f"connection; load average {os.getloadavg()[0]:.2f}")
    print(f"{'stage (median us)':50}" + "".join(f"{s:>10}" for s in sides))
    for label, _, _ in STAGES:
        row = f"{label:50}"
        for side in sides:
            cyc = [c for run, _ in results[side] for c in run]
            base = "recv" if label.startswith("recv") else STAGES[0][0]
            row += f"{statistics.median([(c[label] - c[base]) / 1e3 for c in cyc]):10.0f}"
        print(row)
    for label, a, b in CLIENT:
        row = f"{label:50}"
        for side in sides:
            cyc = [c for run, _ in results[side] for c in run]
            row += f"{statistics.median([(c[b] - c[a]) / 1e3 for c in cyc]):10.0f}"
        print(row)
    row = f"{'client: event after put sent, p50 per run (ms)':50}"
    for side in sides:
        row += f"{' '.join(f'{x:.2f}' for _, x in results[side]):>10}"
    print(row)


if __name__ == "__main__":
    main()
