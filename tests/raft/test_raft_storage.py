"""MemoryStorage, the size limiter, and the core's view of the log (RaftLog)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from petcd.raft import (
    CompactedError,
    ConfState,
    Entry,
    InvariantViolation,
    MemoryStorage,
    SnapshotOutOfDateError,
    UnavailableError,
)
from petcd.raft.log import RaftLog
from petcd.raft.storage import ENTRY_OVERHEAD, limit_size
from petcd.raft.types import Snapshot, SnapshotMetadata


def ents(*pairs: tuple[int, int]) -> list[Entry]:
    """Entries from (term, index) pairs."""
    return [Entry(t, i) for t, i in pairs]


def storage(*pairs: tuple[int, int]) -> MemoryStorage:
    st_ = MemoryStorage()
    st_.append(ents(*pairs))
    return st_


# ------------------------------------------------------------ MemoryStorage


def test_empty_storage() -> None:
    s = MemoryStorage()
    assert (s.first_index(), s.last_index(), s.term(0)) == (1, 0, 0)
    assert s.snapshot().is_empty


def test_term_entries_and_bounds() -> None:
    s = storage((1, 1), (2, 2), (2, 3))
    assert [s.term(i) for i in (0, 1, 2, 3)] == [0, 1, 2, 2]
    assert s.entries(2, 4) == ents((2, 2), (2, 3))
    with pytest.raises(UnavailableError):
        s.term(4)
    with pytest.raises(UnavailableError):
        s.entries(2, 5)


def test_compact_keeps_the_term_of_the_compacted_index() -> None:
    s = storage((1, 1), (2, 2), (3, 3), (3, 4))
    s.compact(2)
    assert (s.first_index(), s.last_index(), s.term(2)) == (3, 4, 2)
    with pytest.raises(CompactedError):
        s.term(1)
    with pytest.raises(CompactedError):
        s.entries(2, 4)
    with pytest.raises(CompactedError):
        s.compact(2)
    with pytest.raises(UnavailableError):
        s.compact(5)


def test_append_truncates_overlaps_and_refuses_gaps() -> None:
    s = storage((1, 1), (1, 2), (1, 3))
    s.append(ents((2, 2), (2, 3), (2, 4)))
    assert s.entries(1, 5) == ents((1, 1), (2, 2), (2, 3), (2, 4))
    s.compact(2)
    s.append(ents((1, 1), (2, 2), (3, 3)))  # the part below the first index is skipped
    assert s.entries(3, 4) == ents((3, 3)) and s.last_index() == 3
    with pytest.raises(InvariantViolation):
        s.append(ents((3, 9)))


def test_snapshots() -> None:
    s = storage((1, 1), (2, 2), (2, 3))
    snap = s.create_snapshot(2, ConfState((1, 2, 3)), b"data")
    assert snap.metadata == SnapshotMetadata(2, 2, ConfState((1, 2, 3)))
    assert s.initial_state()[1] == ConfState((1, 2, 3))
    with pytest.raises(SnapshotOutOfDateError):
        s.create_snapshot(2, None, b"")
    with pytest.raises(UnavailableError):
        s.create_snapshot(9, None, b"")
    newer = Snapshot(SnapshotMetadata(10, 4, ConfState((1,))), b"x")
    s.apply_snapshot(newer)
    assert (s.first_index(), s.last_index(), s.term(10), s.snapshot()) == (11, 10, 4, newer)
    with pytest.raises(SnapshotOutOfDateError):
        s.apply_snapshot(snap)


@given(st.lists(st.tuples(st.integers(1, 30), st.integers(1, 5), st.integers(1, 4)), max_size=30))
def test_append_matches_a_simple_model(ops: list[tuple[int, int, int]]) -> None:
    s = MemoryStorage()
    model: list[Entry] = []  # model[k] is the entry at index k + 1
    for start, count, term in ops:
        start = min(start, len(model) + 1)  # no gaps
        new = [Entry(term, i) for i in range(start, start + count)]
        s.append(new)
        model = model[: start - 1] + new
    assert s.last_index() == len(model)
    if model:
        assert s.entries(1, len(model) + 1) == model


def test_limit_size() -> None:
    e = [Entry(1, i, data=b"x" * 10) for i in range(1, 6)]
    per = 10 + ENTRY_OVERHEAD
    assert limit_size(e, None) == e
    assert limit_size(e, 0) == e[:1]  # always at least one
    assert limit_size(e, per) == e[:1]
    assert limit_size(e, 2 * per) == e[:2]
    assert limit_size(e, 2 * per + 1) == e[:2]
    assert limit_size(e, 5 * per) == e


# ------------------------------------------------------------------ RaftLog


def test_log_spans_storage_and_unstable() -> None:
    log = RaftLog(storage((1, 1), (1, 2)))
    log.append(ents((2, 3), (2, 4)))
    assert (log.first_index(), log.last_index(), log.last_term()) == (1, 4, 2)
    assert log.slice(2, 5) == ents((1, 2), (2, 3), (2, 4))
    assert [log.term(i) for i in range(6)] == [0, 1, 1, 2, 2, 0]
    log.stable_to(4, 2)
    assert log.unstable == [] and log.offset == 5


def test_stable_to_ignores_a_stale_acknowledgement() -> None:
    log = RaftLog(MemoryStorage())
    log.append(ents((1, 1), (1, 2)))
    log.append(ents((2, 2)))  # replaced before the caller acknowledged
    log.stable_to(2, 1)
    assert log.unstable == ents((1, 1), (2, 2))


def test_maybe_append_cases() -> None:
    log = RaftLog(storage((1, 1), (2, 2), (3, 3)))
    assert log.maybe_append(3, 2, 3, ents((4, 4))) is None  # previous term mismatch
    assert log.maybe_append(3, 3, 3, ents((4, 4))) == 4
    assert log.committed == 3
    assert log.maybe_append(2, 2, 9, ents((3, 3))) == 3  # already present: nothing lost
    assert log.last_index() == 4 and log.committed == 3
    assert log.maybe_append(3, 3, 9, ents((5, 4), (5, 5))) == 5  # conflict at 4: replaced
    assert log.slice(1, 6) == ents((1, 1), (2, 2), (3, 3), (5, 4), (5, 5)) and log.committed == 5


def test_find_conflict_by_term() -> None:
    log = RaftLog(storage((1, 1), (1, 2), (3, 3), (3, 4), (5, 5)))
    assert log.find_conflict_by_term(5, 4) == (4, 3)
    assert log.find_conflict_by_term(5, 2) == (2, 1)
    assert log.find_conflict_by_term(5, 0) == (0, 0)
    assert log.find_conflict_by_term(9, 5) == (9, 0)  # past the end: term unknown


def test_next_committed_and_applied() -> None:
    log = RaftLog(storage((1, 1), (1, 2), (1, 3)), max_apply_size=2 * ENTRY_OVERHEAD)
    log.commit_to(3)
    assert log.next_committed() == ents((1, 1), (1, 2))
    log.applied_to(2)
    assert log.next_committed() == ents((1, 3))
    with pytest.raises(InvariantViolation):
        log.applied_to(1)
    with pytest.raises(InvariantViolation):
        log.commit_to(9)


def test_restore_replaces_the_log() -> None:
    log = RaftLog(storage((1, 1), (1, 2)))
    snap = Snapshot(SnapshotMetadata(10, 3, ConfState((1,))), b"")
    log.restore(snap)
    assert (log.first_index(), log.last_index(), log.committed, log.term(10)) == (11, 10, 10, 3)
    assert not log.has_next_committed()
    log.stable_snap_to(10)
    assert log.pending_snapshot is None
