"""Raft core throughput: committed entries per second for a 3-member cluster
in one process, without IO (MemoryStorage, messages handed over in memory),
with batched proposals.

    python bench/raft_bench.py [--entries 300000] [--batch 1000] [--size 100] [--codec]

--codec also encodes and decodes every message with petcd.raft.codec, as the
peer transport would. An entry counts once all three members applied it. The figure is per second of
CPU time of this single-threaded process (wall time is printed too).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from petcd.raft import (
    Config,
    EntryType,
    MemoryStorage,
    Message,
    Peer,
    RawNode,
    decode_conf_change,
    decode_message,
    encode_message,
)

COMPACT_EVERY = 50_000  # entries; keep memory flat like a server taking snapshots
KEEP_AFTER_COMPACT = 5_000


class Member:
    def __init__(self, node_id: int, ids: list[int]) -> None:
        self.storage = MemoryStorage()
        self.node = RawNode(Config(id=node_id, seed=node_id, max_inflight_msgs=64), self.storage)
        self.node.bootstrap([Peer(i) for i in ids])
        self.applied = 0
        self.applied_entries = 0
        self.last_compact = 0
        self.conf_state = None

    def handle_ready(self, outbox: list[Message]) -> None:
        node = self.node
        rd = node.ready()
        storage = self.storage
        if rd.snapshot is not None:
            storage.apply_snapshot(rd.snapshot)
        if rd.entries:
            storage.append(rd.entries)
        if rd.hard_state is not None:
            storage.set_hard_state(rd.hard_state)
        outbox.extend(rd.messages)
        committed = rd.committed_entries
        if committed:
            for e in committed:
                if e.type == EntryType.CONF_CHANGE:
                    self.conf_state = node.apply_conf_change(decode_conf_change(e.data))
            self.applied = committed[-1].index
            self.applied_entries += len(committed)
        node.advance(rd)
        if self.applied - self.last_compact >= COMPACT_EVERY:
            index = self.applied - KEEP_AFTER_COMPACT
            storage.create_snapshot(index, self.conf_state, b"")
            storage.compact(index)
            self.last_compact = self.applied


def run(entries: int, batch: int, size: int, codec: bool) -> tuple[float, float, int]:
    ids = [1, 2, 3]
    members = {i: Member(i, ids) for i in ids}
    outbox: list[Message] = []

    def pump() -> None:
        while True:
            busy = False
            for m in members.values():
                if m.node.has_ready():
                    busy = True
                    m.handle_ready(outbox)
            if outbox:
                busy = True
                msgs = outbox[:]
                outbox.clear()
                for msg in msgs:
                    if codec:
                        msg = decode_message(encode_message(msg))
                    members[msg.to].node.step(msg)
            if not busy:
                return

    pump()  # apply the bootstrap entries: campaigning waits for them
    members[1].node.campaign()
    pump()
    leader = members[1].node
    assert leader.is_leader
    base = {i: m.applied for i, m in members.items()}
    payloads = [b"x" * size] * batch
    proposed = 0
    start, start_cpu = time.perf_counter(), time.process_time()
    while proposed < entries:
        leader.propose_batch(payloads)
        proposed += batch
        pump()
    elapsed, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    done = min(m.applied - base[i] for i, m in members.items())
    assert done == proposed, (done, proposed)
    return elapsed, cpu, proposed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--entries", type=int, default=300_000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--size", type=int, default=100, help="payload bytes per entry")
    ap.add_argument("--codec", action="store_true", help="encode+decode every message")
    ap.add_argument("--profile", action="store_true", help="print a cProfile summary")
    args = ap.parse_args()
    if args.profile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        prof.enable()
        elapsed, cpu, n = run(args.entries, args.batch, args.size, args.codec)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(15)
    else:
        elapsed, cpu, n = run(args.entries, args.batch, args.size, args.codec)
    # CPU time is the figure that matters (one core, no IO); wall time also
    # counts whatever else the machine was doing.
    print(
        f"raft_bench: 3 members in-process, batch {args.batch}, {args.size}-byte entries"
        f"{', with codec' if args.codec else ''}: {n / cpu:,.0f} committed entries/s per CPU"
        f" second ({n} entries applied on every member in {cpu:.2f} s CPU, {elapsed:.2f} s wall)"
    )


if __name__ == "__main__":
    main()
