"""A member's durable Raft storage: its WAL and snapshot directory together.

This is the piece the server's Raft driver calls:

    if MemberStorage.exists(data_dir):
        storage, rec = MemberStorage.restore(data_dir)   # snapshot + WAL replay
    else:
        storage = MemberStorage.create(data_dir, metadata)
    ...
    storage.save(ready.hard_state, ready.entries, ready.snapshot)  # before sending
    ...
    storage.save_snapshot(snapshot)          # every --snapshot-count applied entries
    storage.purge(max_wals, max_snapshots)   # --max-wals, --max-snapshots
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from petcd.raft.types import Entry, HardState, Snapshot
from petcd.wal.frame import WalSnapshot
from petcd.wal.replay import TornTail
from petcd.wal.snap import Snapshotter
from petcd.wal.wal import SEGMENT_SIZE, WAL


def wal_dir(data_dir: str) -> str:
    return os.path.join(data_dir, "member", "wal")


def snap_dir(data_dir: str) -> str:
    return os.path.join(data_dir, "member", "snap")


def marker_of(snapshot: Snapshot) -> WalSnapshot:
    md = snapshot.metadata
    return WalSnapshot(md.index, md.term, md.conf_state)


@dataclass(slots=True)
class Recovered:
    """What a restarting member rebuilds its Raft state from."""

    metadata: bytes
    snapshot: Snapshot | None  # newest intact snapshot the WAL knows of
    hard_state: HardState
    entries: list[Entry]  # the log after the snapshot
    torn_tail: TornTail | None  # a torn write cut off during recovery


class MemberStorage:
    def __init__(self, wal: WAL, snapshotter: Snapshotter) -> None:
        self.wal = wal
        self.snapshotter = snapshotter

    @staticmethod
    def exists(data_dir: str, wal_path: str = "") -> bool:
        """wal_path: the WAL's own directory (--wal-dir); default <data-dir>/member/wal."""
        return WAL.exists(wal_path or wal_dir(data_dir))

    @classmethod
    def create(
        cls,
        data_dir: str,
        metadata: bytes,
        *,
        segment_size: int = SEGMENT_SIZE,
        fsync: bool = True,
        wal_path: str = "",
    ) -> MemberStorage:
        os.makedirs(os.path.join(data_dir, "member"), mode=0o700, exist_ok=True)
        snapshotter = Snapshotter(snap_dir(data_dir))
        wal = WAL.create(wal_path or wal_dir(data_dir), metadata, segment_size=segment_size,
                         fsync=fsync)
        return cls(wal, snapshotter)

    @classmethod
    def restore(
        cls,
        data_dir: str,
        *,
        segment_size: int = SEGMENT_SIZE,
        fsync: bool = True,
        wal_path: str = "",
    ) -> tuple[MemberStorage, Recovered]:
        """Load the newest valid snapshot, then replay the WAL after it."""
        wals = wal_path or wal_dir(data_dir)
        snapshotter = Snapshotter(snap_dir(data_dir))
        snapshot = snapshotter.load_newest_available(
            WAL.valid_snapshots(wals, since=snapshotter.oldest_index()))
        start = marker_of(snapshot) if snapshot is not None else WalSnapshot()
        wal = WAL.open(wals, start, segment_size=segment_size, fsync=fsync)
        try:
            metadata, hard_state, entries = wal.read_all()
        except BaseException:
            wal.close()
            raise
        if snapshot is not None:
            wal.release_lock_to(snapshot.metadata.index)
        return cls(wal, snapshotter), Recovered(
            metadata, snapshot, hard_state, entries, wal.torn_tail
        )

    def save(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None = None,
    ) -> bool:
        """Persist one Ready (call before sending its messages). A snapshot
        received from the leader is written to its file first, then its marker
        goes into the same WAL write as the hard state and entries."""
        if snapshot is None or snapshot.is_empty:
            return self.wal.save(hard_state, entries)
        self.snapshotter.save_snap(snapshot)
        synced = self.wal.save(hard_state, entries, marker_of(snapshot))
        self.wal.release_lock_to(snapshot.metadata.index)
        return synced

    def save_snapshot(self, snapshot: Snapshot) -> None:
        """Persist a snapshot the state machine took: file, then WAL marker;
        afterwards segments holding only older entries may be purged."""
        self.snapshotter.save_snap(snapshot)
        self.wal.save_snapshot(marker_of(snapshot))
        self.wal.release_lock_to(snapshot.metadata.index)

    def purge(self, max_wals: int = 5, max_snapshots: int = 5) -> list[str]:
        """Apply --max-wals and --max-snapshots (0: unlimited); returns deleted paths."""
        removed = self.wal.purge(max_wals)
        removed += self.snapshotter.purge(max_snapshots)
        return removed

    def close(self) -> None:
        self.wal.close()
