"""The Raft log as the core sees it: a stable prefix in Storage followed by an
unstable suffix (entries, or a snapshot, not yet handed out in a Ready and
acknowledged by advance())."""

from __future__ import annotations

from collections.abc import Sequence

from petcd.raft.errors import CompactedError, InvariantViolation, UnavailableError
from petcd.raft.storage import Storage, limit_size
from petcd.raft.types import Entry, Snapshot


class RaftLog:
    __slots__ = (
        "applied",
        "committed",
        "max_apply_size",
        "offset",
        "pending_snapshot",
        "storage",
        "unstable",
    )

    def __init__(self, storage: Storage, max_apply_size: int | None = None) -> None:
        self.storage = storage
        # unstable[k] is the entry at index offset + k; entries below offset
        # come from storage (or from pending_snapshot when one is set).
        self.unstable: list[Entry] = []
        self.offset = storage.last_index() + 1
        self.pending_snapshot: Snapshot | None = None
        first = storage.first_index()
        self.committed = first - 1
        self.applied = first - 1
        self.max_apply_size = max_apply_size

    # -- positions --

    def first_index(self) -> int:
        snap = self.pending_snapshot
        if snap is not None:
            return snap.metadata.index + 1
        return self.storage.first_index()

    def last_index(self) -> int:
        if self.unstable:
            return self.offset + len(self.unstable) - 1
        snap = self.pending_snapshot
        if snap is not None:
            return snap.metadata.index
        return self.storage.last_index()

    def term(self, index: int) -> int:
        """Term of the entry at index; 0 when unknown (compacted or past the end)."""
        offset = self.offset
        if index >= offset:
            k = index - offset
            unstable = self.unstable
            return unstable[k].term if k < len(unstable) else 0
        snap = self.pending_snapshot
        if snap is not None:
            return snap.metadata.term if index == snap.metadata.index else 0
        try:
            return self.storage.term(index)
        except (CompactedError, UnavailableError):
            return 0

    def last_term(self) -> int:
        return self.term(self.last_index())

    def match_term(self, index: int, term: int) -> bool:
        return self.term(index) == term

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Is a log ending at (last_index, last_term) at least as up to date as ours?"""
        our_term = self.last_term()
        return last_term > our_term or (last_term == our_term and last_index >= self.last_index())

    # -- reading entries --

    def slice(self, lo: int, hi: int, max_size: int | None = None) -> list[Entry]:
        """Entries [lo, hi) (at least one if lo < hi), limited to max_size bytes."""
        if lo < self.first_index():
            raise CompactedError(f"index {lo} is compacted")
        if lo >= hi:
            return []
        offset = self.offset
        if lo >= offset:
            return limit_size(self.unstable[lo - offset : hi - offset], max_size)
        stable_hi = min(hi, offset)
        stored = self.storage.entries(lo, stable_hi, max_size)
        if hi <= offset or len(stored) < stable_hi - lo:
            return stored
        combined = stored + self.unstable[: hi - offset]
        return combined if max_size is None else limit_size(combined, max_size)

    def entries_from(self, lo: int, max_size: int | None = None) -> list[Entry]:
        last = self.last_index()
        return self.slice(lo, last + 1, max_size) if lo <= last else []

    def has_next_committed(self) -> bool:
        return self.committed > self.applied and self.committed >= self.first_index()

    def next_committed(self) -> list[Entry]:
        """Committed entries not yet handed out for applying."""
        if self.committed <= self.applied:
            return []
        lo = max(self.applied + 1, self.first_index())
        if self.committed < lo:
            return []
        return self.slice(lo, self.committed + 1, self.max_apply_size)

    def snapshot(self) -> Snapshot:
        snap = self.pending_snapshot
        return snap if snap is not None else self.storage.snapshot()

    # -- changing the log --

    def append(self, entries: Sequence[Entry]) -> None:
        """Append entries, dropping any unstable suffix from entries[0].index on."""
        after = entries[0].index
        if after <= self.committed:
            raise InvariantViolation(
                f"append at {after} would overwrite committed {self.committed}"
            )
        unstable = self.unstable
        offset = self.offset
        if after == offset + len(unstable):
            unstable.extend(entries)
        elif after <= offset:
            # Replaces part of the stable log too; storage is fixed up when the
            # caller appends these entries from the next Ready.
            self.offset = after
            self.unstable = list(entries)
        else:
            del unstable[after - offset :]
            unstable.extend(entries)

    def maybe_append(
        self, prev_index: int, prev_term: int, commit: int, entries: Sequence[Entry]
    ) -> int | None:
        """Follower side of an append: returns the index of the last entry known
        to match the leader, or None when (prev_index, prev_term) does not match."""
        if self.term(prev_index) != prev_term:
            return None
        last_new = prev_index + len(entries)
        if entries:
            conflict = self._find_conflict(entries)
            if conflict:
                if conflict <= self.committed:
                    raise InvariantViolation(
                        f"entry {conflict} conflicts with committed entry (commit {self.committed})"
                    )
                self.append(entries[conflict - entries[0].index :])
        self.commit_to(min(commit, last_new))
        return last_new

    def _find_conflict(self, entries: Sequence[Entry]) -> int:
        """Index of the first entry that is not in our log with the same term
        (0 if all are); entries are consecutive."""
        first = entries[0].index
        last = self.last_index()
        if first > last:
            return first
        overlap_hi = min(last, entries[-1].index)
        ours = self.slice(first, overlap_hi + 1)
        for mine, theirs in zip(ours, entries, strict=False):
            if mine.term != theirs.term:
                return theirs.index
        return overlap_hi + 1 if overlap_hi < entries[-1].index else 0

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """The largest index <= `index` whose term is <= `term`, with its term.
        Used to skip a whole divergent term at once when an append is rejected."""
        while True:
            t = self.term(index)
            if t <= term:
                return index, t
            index -= 1

    def commit_to(self, index: int) -> None:
        if index > self.committed:
            if index > self.last_index():
                raise InvariantViolation(
                    f"commit {index} is past the last index {self.last_index()} (log lost?)"
                )
            self.committed = index

    def maybe_commit(self, index: int, term: int) -> bool:
        """Commit up to index if that entry is of `term` (only entries of the
        leader's own term are committed by counting replicas)."""
        if index > self.committed and self.term(index) == term:
            self.commit_to(index)
            return True
        return False

    def applied_to(self, index: int) -> None:
        if index < self.applied or index > self.committed:
            raise InvariantViolation(
                f"applied {index} out of range [{self.applied}, {self.committed}]"
            )
        self.applied = index

    def stable_to(self, index: int, term: int) -> None:
        """Entries up to (index, term) are now in storage."""
        offset = self.offset
        if index >= offset and self.term(index) == term:
            del self.unstable[: index + 1 - offset]
            self.offset = index + 1

    def stable_snap_to(self, index: int) -> None:
        snap = self.pending_snapshot
        if snap is not None and snap.metadata.index == index:
            self.pending_snapshot = None

    def restore(self, snapshot: Snapshot) -> None:
        """Replace the whole log by a snapshot received from the leader."""
        index = snapshot.metadata.index
        self.committed = index
        self.unstable = []
        self.offset = index + 1
        self.pending_snapshot = snapshot
