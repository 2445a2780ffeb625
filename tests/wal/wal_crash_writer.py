"""The process the crash tests kill: appends a deterministic sequence of
steps to a member's WAL and acknowledges each on stdout once save() returned.

    python wal_crash_writer.py DATA_DIR SEED PREALLOCATE(0/1)

Step n is a pure function of (seed, n) and the steps before it, so the
checker can rebuild exactly what must be on disk after any crash. The hard
state's `vote` field carries the number of the last step (a test-only use).
"""

from __future__ import annotations

import random
import sys
from dataclasses import dataclass, field

from wal_testutil import payload

from petcd.raft.types import ConfState, Entry, EntryType, HardState, Snapshot, SnapshotMetadata
from petcd.wal.storage import MemberStorage

SEGMENT_SIZE = 64 * 1024
MAX_FILES = 3
CONF = ConfState(voters=(1, 2, 3))
METADATA = b"crash-test member"


@dataclass(slots=True)
class Step:
    n: int
    snapshot_index: int = 0  # a snapshot step if > 0
    start: int = 0  # first index of the appended entries
    term: int = 0
    sizes: list[int] = field(default_factory=list)


class Model:
    """What the log looks like after a number of steps."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.step = 0
        self.log: list[tuple[int, int]] = []  # (term, data size) of index i+1
        self.term = 1
        self.commit = 0  # never decreases; nothing at or below it is overwritten
        self.snap_index = 0
        self.snap_term = 0

    def next_step(self) -> Step:
        n = self.step + 1
        rng = random.Random(f"{self.seed}:{n}")
        r = rng.random()
        if r < 0.07 and self.commit > self.snap_index:
            return Step(n, snapshot_index=self.commit)
        if r < 0.15 and len(self.log) > self.commit:
            start, term = rng.randint(self.commit + 1, len(self.log)), self.term + 1
        else:
            start, term = len(self.log) + 1, self.term
        count = rng.randint(200, 700) if rng.random() < 0.05 else rng.randint(1, 32)
        return Step(n, start=start, term=term, sizes=[rng.randint(0, 400) for _ in range(count)])

    def apply(self, step: Step) -> None:
        assert step.n == self.step + 1
        if step.snapshot_index:
            self.snap_index = step.snapshot_index
            self.snap_term = self.log[step.snapshot_index - 1][0]
        else:
            del self.log[step.start - 1 :]
            self.log += [(step.term, size) for size in step.sizes]
            self.term = step.term
            self.commit = max(self.commit, len(self.log) - 8)
        self.step = step.n

    def advance_to(self, n: int) -> None:
        while self.step < n:
            self.apply(self.next_step())

    def hard_state(self) -> HardState:
        return HardState(self.term, self.step, self.commit) if self.step else HardState()

    def entries(self, first: int, last: int) -> list[Entry]:
        return [
            Entry(term, i, EntryType.NORMAL, payload(i, term, size))
            for i, (term, size) in enumerate(self.log[first - 1 : last], start=first)
        ]

    def snapshot(self) -> Snapshot | None:
        if not self.snap_index:
            return None
        md = SnapshotMetadata(self.snap_index, self.snap_term, CONF)
        return Snapshot(md, f"state at {self.snap_index}".encode())


def main() -> None:
    data_dir, seed, preallocate = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
    model = Model(seed)
    if MemberStorage.exists(data_dir):
        storage, rec = MemberStorage.restore(data_dir, segment_size=SEGMENT_SIZE)
        model.advance_to(rec.hard_state.vote)
    else:
        storage = MemberStorage.create(data_dir, METADATA, segment_size=SEGMENT_SIZE)
    storage.wal._preallocate = preallocate  # vary the on-disk shape between runs
    out = sys.stdout
    out.write(f"ready {model.step}\n")
    out.flush()
    while True:
        step = model.next_step()
        model.apply(step)
        if step.snapshot_index:
            snap = model.snapshot()
            storage.save(model.hard_state(), [], snap)
            storage.purge(MAX_FILES, MAX_FILES)
        else:
            last = step.start + len(step.sizes) - 1
            storage.save(model.hard_state(), model.entries(step.start, last))
        out.write(f"ack {step.n}\n")
        out.flush()


if __name__ == "__main__":
    main()
