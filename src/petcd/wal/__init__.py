"""Durable Raft storage: the write-ahead log and the snapshot files.

<data-dir>/member/wal   WAL segments  <seq:016x>-<first index:016x>.wal
<data-dir>/member/snap  snapshots     <term:016x>-<index:016x>.snap,
                        received backend files <index:016x>.snap.db
"""

from petcd.wal.errors import (
    CorruptSnapshotError,
    CorruptWALError,
    MetadataConflictError,
    MissingSegmentError,
    SnapshotMismatchError,
    SnapshotNotFoundError,
    WALError,
    WALExistsError,
    WALLockedError,
    WALNotFoundError,
)
from petcd.wal.frame import WalSnapshot
from petcd.wal.replay import TornTail
from petcd.wal.segments import SegmentInfo
from petcd.wal.wal import SEGMENT_SIZE, WAL

__all__ = [
    "SEGMENT_SIZE",
    "WAL",
    "CorruptSnapshotError",
    "CorruptWALError",
    "MetadataConflictError",
    "MissingSegmentError",
    "SegmentInfo",
    "SnapshotMismatchError",
    "SnapshotNotFoundError",
    "TornTail",
    "WALError",
    "WALExistsError",
    "WALLockedError",
    "WALNotFoundError",
    "WalSnapshot",
]
