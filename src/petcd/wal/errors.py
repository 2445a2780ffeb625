"""Errors raised by the WAL and the snapshot files.

Every error about damaged data names the file and, where it applies, the
byte offset, so an operator can look at the exact spot."""

from __future__ import annotations


class WALError(Exception):
    """Base class of every WAL and snapshot error."""


class WALExistsError(WALError):
    """create() found a WAL already in the directory."""


class WALNotFoundError(WALError):
    """open() found no WAL segment in the directory."""


class WALLockedError(WALError):
    """Another process (or another open WAL object) holds the directory lock."""


class CorruptWALError(WALError):
    """Damaged data that is not a torn tail: recovery must stop here."""

    def __init__(self, path: str, offset: int, reason: str) -> None:
        super().__init__(f"wal: corrupt record in {path} at offset {offset}: {reason}")
        self.path = path
        self.offset = offset
        self.reason = reason


class MissingSegmentError(WALError):
    """A segment the WAL needs is not on disk."""


class MetadataConflictError(WALError):
    """Two segments carry different metadata (member/cluster IDs)."""


class SnapshotNotFoundError(WALError):
    """The WAL has no snapshot marker for the snapshot it was opened at."""


class SnapshotMismatchError(WALError):
    """The WAL's snapshot marker at that index has another term."""


class CorruptSnapshotError(WALError):
    """A snapshot file cannot be read back intact."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"snap: broken snapshot file {path}: {reason}")
        self.path = path
        self.reason = reason
