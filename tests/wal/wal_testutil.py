"""Shared helpers of the WAL tests (deterministic entry contents)."""

from __future__ import annotations

import hashlib

from petcd.raft.types import Entry, EntryType, HardState
from petcd.wal import WAL


def payload(index: int, term: int, size: int = 64) -> bytes:
    """Data that depends on (index, term): a wrong or stale entry shows."""
    seed = hashlib.blake2b(f"{index}/{term}".encode(), digest_size=16).digest()
    return (seed * (size // 16 + 1))[:size]


def entries(first: int, count: int, term: int = 1, size: int = 64) -> list[Entry]:
    return [
        Entry(term, i, EntryType.NORMAL, payload(i, term, size))
        for i in range(first, first + count)
    ]


def write_log(wal: WAL, batches: int, per_batch: int, term: int = 1, size: int = 64) -> int:
    """Append `batches` batches after the WAL's last index; returns the last index."""
    index = wal.last_index
    for _ in range(batches):
        wal.save(HardState(term, 0, index), entries(index + 1, per_batch, term, size))
        index += per_batch
    return index


def reopen(dirpath: str, **kwargs: object) -> tuple[WAL, HardState, list[Entry]]:
    wal = WAL.open(dirpath, **kwargs)  # type: ignore[arg-type]
    _, state, ents = wal.read_all()
    return wal, state, ents
