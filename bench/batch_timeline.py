"""The batch timeline of `bench/write_path.py --clients N`: what one member's loop did
with each batch of concurrent writes, from the events bench/batchtrace records.

Each WAL save on the loop thread starts a batch: its entries, when its frame was written
(save), when its fdatasync was seen done (reap), when its entries were handed out,
applied and answered. The summary says how much of the wall time an fdatasync was in
flight, how long the disk sat idle between one batch's fdatasync and the next one's
start, and where the loop thread was idle (wall minus thread CPU between two of its
events), split by what was under way then: an fdatasync, a backend commit, or nothing
(waiting for the clients)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

# (name, wall ns, loop-thread CPU ns and run-queue wait ns or -1, count, the last log
# index of what it holds)
Event = tuple[str, int, int, int, int, int]


@dataclass
class Batch:
    entries: int
    last: int  # its last log index
    save: int
    save_end: int
    reap: int = 0
    hand_out: int = 0
    apply: int = 0
    apply_end: int = 0
    answered: int = 0
    recv_during_sync: int = 0  # data_received calls while its fdatasync was in flight
    applied_during_sync: int = 0  # entries of earlier batches applied meanwhile


@dataclass
class Timeline:
    batches: list[Batch] = field(default_factory=list)
    sync_busy: int = 0  # ns with an fdatasync in flight
    idle_sync: int = 0  # loop idle ns with an fdatasync in flight
    idle_commit: int = 0  # loop idle ns with a backend commit in flight (and no fdatasync)
    idle_none: int = 0  # loop idle ns with neither (waiting for clients)
    cpu: int = 0  # loop CPU ns
    runq: int = 0  # loop ns waiting in the run queue (for a CPU)
    wall: int = 0
    commits: list[int] = field(default_factory=list)  # backend commit ns (its thread)
    txn_begins: list[int] = field(default_factory=list)  # loop ns in _write_txn's hop
    gaps: list[int] = field(default_factory=list)  # reap of N -> save of N+1, ns
    overlapped: int = 0  # saves made while another batch's fdatasync was in flight
    inline: int = 0  # Readies handled inline (propose_inline)


def build(events: list[Event], skip_s: float = 0.5) -> Timeline:
    """The timeline of the steady part: events from skip_s after the first save to
    skip_s before the last one."""
    saves = [e[1] for e in events if e[0] == "save"]
    if not saves:
        return Timeline()
    lo, hi = saves[0] + int(skip_s * 1e9), saves[-1] - int(skip_s * 1e9)
    tl = Timeline()
    open_syncs: list[Batch] = []  # saved, fdatasync not seen done yet (oldest first)
    pending_apply: list[Batch] = []  # synced, not applied yet
    commit_on = False
    last_wall = last_cpu = last_wait = -1
    last_reap = 0
    applying: list[Batch] = []  # in the apply under way
    answering: list[Batch] = []  # applied, not answered yet
    start = begin = 0
    for name, t, cpu, wait, n, last in events:
        if t < lo or t > hi:
            if name == "commit_thread":
                commit_on = True
            elif name == "commit_thread_end":
                commit_on = False
            continue
        if cpu >= 0:
            if last_cpu >= 0:
                dw, dc, dq = t - last_wall, cpu - last_cpu, wait - last_wait
                idle = max(0, dw - dc - dq)
                tl.cpu += dc
                tl.runq += dq
                tl.wall += dw
                if open_syncs:
                    tl.idle_sync += idle
                    tl.sync_busy += dw
                elif commit_on:
                    tl.idle_commit += idle
                else:
                    tl.idle_none += idle
            last_wall, last_cpu, last_wait = t, cpu, wait
        if name == "save":
            b = Batch(n, last, t, t)
            if last_reap and not open_syncs:
                tl.gaps.append(t - last_reap)
            if open_syncs:
                tl.overlapped += 1
            tl.batches.append(b)
            open_syncs.append(b)
        elif name == "save_end" and open_syncs:
            open_syncs[-1].save_end = t
        elif name in ("reap", "synced") and open_syncs:
            for _ in range(n if name == "reap" else 1):
                if open_syncs:
                    b = open_syncs.pop(0)
                    b.reap = t
                    last_reap = t
                    pending_apply.append(b)
        elif name == "recv":
            for b in open_syncs:
                b.recv_during_sync += 1
        elif name == "apply":
            for b in open_syncs:
                b.applied_during_sync += n
            applying = []
            while pending_apply and pending_apply[0].last <= last:
                b = pending_apply.pop(0)
                b.apply = t
                applying.append(b)
        elif name == "apply_end":
            for b in applying:
                b.apply_end = t
            answering, applying = applying, []
        elif name == "answered":
            for b in answering:
                b.answered = t
            answering = []
        elif name == "hand_out":
            for b in pending_apply:
                if not b.hand_out and b.last <= last:
                    b.hand_out = t
        elif name == "commit_thread":
            commit_on = True
            start = t
        elif name == "commit_thread_end":
            commit_on = False
            tl.commits.append(t - start)
        elif name == "txn_begin":
            begin = t
        elif name == "txn_begun":
            tl.txn_begins.append(t - begin)
        elif name == "inline":
            tl.inline += 1
    return tl


def _q(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else 0.0


def report(tl: Timeline, rows: int = 12) -> str:
    out: list[str] = []
    bs = [b for b in tl.batches if b.reap]
    if not bs or not tl.wall:
        return "no batches traced"
    span = (bs[-1].save - bs[0].save) / 1e9
    puts = sum(b.entries for b in bs)
    us = 1e3
    sizes = [b.entries for b in bs]
    syncs = [(b.reap - b.save_end) / us for b in bs]
    out.append(f"{len(bs)} batches, {puts} entries in {span:.2f} s ({puts / span:.0f}/s); "
               f"{tl.inline} Readies inline, {tl.overlapped} batches written while the one "
               f"before was syncing")
    out.append(f"entries per batch: median {statistics.median(sizes):.0f}, p10 "
               f"{_q(sizes, .1):.0f}, p90 {_q(sizes, .9):.0f}, max {max(sizes)}")
    out.append(f"frame written -> fdatasync seen done: median {statistics.median(syncs):.0f} us,"
               f" p90 {_q(syncs, .9):.0f} us")
    gaps = [g / us for g in tl.gaps]
    if gaps:
        out.append(f"no fdatasync in flight between two batches (reap N -> save N+1): median "
                   f"{statistics.median(gaps):.0f} us, p90 {_q(gaps, .9):.0f} us, "
                   f"total {sum(gaps) / 1e3 / span / 10:.1f}% of the time")
    w = tl.wall
    out.append(f"loop thread: CPU {tl.cpu / w:.0%} of wall, waiting for a CPU "
               f"{tl.runq / w:.0%}; idle while an fdatasync was in "
               f"flight {tl.idle_sync / w:.0%}, while only a backend commit was "
               f"{tl.idle_commit / w:.0%}, with neither {tl.idle_none / w:.0%}; an fdatasync "
               f"in flight {tl.sync_busy / w:.0%} of the time")
    if tl.commits:
        out.append(f"backend commits (its thread): {len(tl.commits)}, median "
                   f"{statistics.median(tl.commits) / us:.0f} us, max {max(tl.commits) / us:.0f}"
                   f" us; loop waiting for a write txn to begin: {len(tl.txn_begins)} times, "
                   f"median {statistics.median(tl.txn_begins or [0]) / us:.0f} us, "
                   f"max {max(tl.txn_begins or [0]) / us:.0f} us")
    stages = [
        ("save -> reap (fdatasync)", [(b.reap - b.save) / us for b in bs]),
        ("reap -> handed out", [(b.hand_out - b.reap) / us for b in bs if b.hand_out]),
        ("handed out -> apply starts", [(b.apply - b.hand_out) / us for b in bs
                                        if b.apply and b.hand_out]),
        ("apply", [(b.apply_end - b.apply) / us for b in bs if b.apply_end and b.apply]),
        ("applied -> answered", [(b.answered - b.apply_end) / us for b in bs if b.answered]),
        ("save -> answered", [(b.answered - b.save) / us for b in bs if b.answered]),
        ("requests read during its fdatasync", [float(b.recv_during_sync) for b in bs]),
        ("entries applied during its fdatasync", [float(b.applied_during_sync) for b in bs]),
    ]
    out.append(f"{'per batch':42} {'median':>8} {'mean':>8} {'p90':>8}")
    for label, xs in stages:
        if xs:
            out.append(f"{label:42} {statistics.median(xs):8.0f} {statistics.mean(xs):8.0f} "
                       f"{_q(xs, .9):8.0f}")
    out.append("timeline (us from the first row's save): entries, save, reap, apply, "
               "applied, answered")
    mid = len(bs) // 2
    t0 = bs[mid].save
    for b in bs[mid:mid + rows]:
        cells = [(x - t0) / us if x else float("nan") for x in
                 (b.save, b.reap, b.apply, b.apply_end, b.answered)]
        out.append(f"  {b.entries:4d} " + " ".join(f"{c:8.0f}" for c in cells))
    return "\n".join(out)
