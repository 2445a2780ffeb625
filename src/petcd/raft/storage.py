"""The log storage the Raft core reads from, and an in-memory implementation.

The core only reads Storage. The caller writes it while handling a Ready
(see petcd.raft.rawnode): apply_snapshot(ready.snapshot), append(ready.entries),
set_hard_state(ready.hard_state), after writing the same to its WAL. On restart
the caller seeds a fresh MemoryStorage from its WAL the same way before
building the RawNode.
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import attrgetter
from typing import Protocol

from petcd.raft.errors import (
    CompactedError,
    InvariantViolation,
    SnapshotOutOfDateError,
    UnavailableError,
)
from petcd.raft.types import ConfState, Entry, HardState, Snapshot, SnapshotMetadata

# Bytes counted per entry on top of its data when limiting batch sizes: about
# what the codec spends on an entry's term, index, type and length.
ENTRY_OVERHEAD = 16

_data = attrgetter("data")


def entries_size(entries: Sequence[Entry]) -> int:
    return sum(map(len, map(_data, entries))) + ENTRY_OVERHEAD * len(entries)


def limit_size(entries: list[Entry], max_size: int | None) -> list[Entry]:
    """The longest prefix of `entries` whose size is at most max_size, but
    never fewer than one entry (so a single oversized entry still moves)."""
    if max_size is None or len(entries) <= 1:
        return entries
    if entries_size(entries) <= max_size:
        return entries
    size = 0
    for n, entry in enumerate(entries):
        size += len(entry.data) + ENTRY_OVERHEAD
        if size > max_size:
            return entries[: max(n, 1)]
    return entries


class Storage(Protocol):
    """What the core needs from the stable (persisted) part of the log.

    Indexes: entries first_index()..last_index() are available; the entry just
    before first_index() is only known by its term (it is the last entry
    covered by the snapshot, or index 0 / term 0 for an empty log).
    """

    def initial_state(self) -> tuple[HardState, ConfState]:
        """The persisted HardState and the ConfState of the latest snapshot."""
        ...

    def entries(self, lo: int, hi: int, max_size: int | None = None) -> list[Entry]:
        """Entries [lo, hi), at least one, at most max_size bytes (see limit_size).
        Raises CompactedError if lo < first_index(), UnavailableError if
        hi > last_index() + 1."""
        ...

    def term(self, index: int) -> int:
        """Term of the entry at index, for first_index() - 1 <= index <= last_index().
        Raises CompactedError below that range, UnavailableError above it."""
        ...

    def first_index(self) -> int: ...

    def last_index(self) -> int: ...

    def snapshot(self) -> Snapshot:
        """The latest snapshot (may raise SnapshotTemporarilyUnavailable)."""
        ...


class MemoryStorage:
    """Storage kept in memory: the caller's mirror of what its WAL holds."""

    __slots__ = ("_ents", "_hard_state", "_offset", "_offset_term", "_snapshot")

    def __init__(self) -> None:
        self._hard_state = HardState()
        self._snapshot = Snapshot()
        # _ents[k] is the entry at index _offset + 1 + k; _offset/_offset_term
        # describe the last entry covered by the snapshot (0/0 when none).
        self._ents: list[Entry] = []
        self._offset = 0
        self._offset_term = 0

    # -- read side (the Storage protocol) --

    def initial_state(self) -> tuple[HardState, ConfState]:
        return self._hard_state, self._snapshot.metadata.conf_state

    @property
    def hard_state(self) -> HardState:
        return self._hard_state

    def entries(self, lo: int, hi: int, max_size: int | None = None) -> list[Entry]:
        offset = self._offset
        if lo <= offset:
            raise CompactedError(f"index {lo} is compacted (first index {offset + 1})")
        if hi > offset + len(self._ents) + 1:
            raise UnavailableError(f"entries [{lo}, {hi}) beyond last index {self.last_index()}")
        return limit_size(self._ents[lo - offset - 1 : hi - offset - 1], max_size)

    def term(self, index: int) -> int:
        offset = self._offset
        if index <= offset:
            if index == offset:
                return self._offset_term
            raise CompactedError(f"index {index} is compacted (first index {offset + 1})")
        try:
            return self._ents[index - offset - 1].term
        except IndexError:
            raise UnavailableError(f"index {index} beyond last index") from None

    def first_index(self) -> int:
        return self._offset + 1

    def last_index(self) -> int:
        return self._offset + len(self._ents)

    def snapshot(self) -> Snapshot:
        return self._snapshot

    # -- write side (called by the caller while handling a Ready) --

    def set_hard_state(self, hard_state: HardState) -> None:
        self._hard_state = hard_state

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        """Replace the whole log with `snapshot` (a Ready's snapshot)."""
        meta = snapshot.metadata
        if meta.index <= self._snapshot.metadata.index:
            raise SnapshotOutOfDateError(
                f"snapshot {meta.index} is not newer than {self._snapshot.metadata.index}"
            )
        self._snapshot = snapshot
        self._ents = []
        self._offset = meta.index
        self._offset_term = meta.term

    def create_snapshot(self, index: int, conf_state: ConfState | None, data: bytes) -> Snapshot:
        """Record a snapshot of the applied state at `index` (<= last index).
        Follow it with compact() to drop the entries it covers."""
        if index <= self._snapshot.metadata.index:
            raise SnapshotOutOfDateError(
                f"snapshot {index} is not newer than {self._snapshot.metadata.index}"
            )
        if index > self.last_index():
            raise UnavailableError(f"snapshot index {index} beyond last index {self.last_index()}")
        if conf_state is None:
            conf_state = self._snapshot.metadata.conf_state
        self._snapshot = Snapshot(
            SnapshotMetadata(index=index, term=self.term(index), conf_state=conf_state), data
        )
        return self._snapshot

    def compact(self, index: int) -> None:
        """Discard entries up to and including `index` (keeping its term)."""
        offset = self._offset
        if index <= offset:
            raise CompactedError(f"index {index} already compacted (first index {offset + 1})")
        if index > self.last_index():
            raise UnavailableError(f"compact {index} beyond last index {self.last_index()}")
        self._offset_term = self._ents[index - offset - 1].term
        del self._ents[: index - offset]
        self._offset = index

    def append(self, entries: Sequence[Entry]) -> None:
        """Append entries (a Ready's entries), replacing any stored suffix they
        overlap: entries[0] may start anywhere in (first_index, last_index + 1]."""
        if not entries:
            return
        first = self._offset + 1
        start = entries[0].index
        if start + len(entries) - 1 < first:
            return  # everything is already covered by the snapshot
        if start < first:
            entries = entries[first - start :]
            start = first
        keep = start - first
        if keep > len(self._ents):
            raise InvariantViolation(
                f"gap in log: appending at {start} after last index {self.last_index()}"
            )
        if keep < len(self._ents):
            del self._ents[keep:]
        self._ents.extend(entries)
