"""The WAL's normal life: create, append, reopen, overwrite, snapshots,
segments, purge, locking."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from wal_testutil import entries, reopen, write_log

from petcd.raft.types import ConfState, Entry, EntryType, HardState
from petcd.wal import (
    WAL,
    MissingSegmentError,
    SnapshotMismatchError,
    SnapshotNotFoundError,
    WALError,
    WALExistsError,
    WALLockedError,
    WALNotFoundError,
    WalSnapshot,
)
from petcd.wal import frame as fr
from petcd.wal.segments import list_segments, scan_segment

SRC = str(Path(__file__).resolve().parents[2] / "src")


def test_roundtrip_metadata_state_entries(tmp_path: Path) -> None:
    d = str(tmp_path / "wal")
    wal = WAL.create(d, b"member=1 cluster=2")
    ents = [
        Entry(1, 1, EntryType.CONF_CHANGE, b"conf"),
        Entry(1, 2, EntryType.NORMAL, b""),
        Entry(2, 3, EntryType.NORMAL, b"x" * 5000),
    ]
    assert wal.save(HardState(2, 7, 1), ents)
    wal.close()
    wal = WAL.open(d)
    meta, state, got = wal.read_all()
    wal.close()
    assert meta == b"member=1 cluster=2"
    assert state == HardState(2, 7, 1)
    assert got == ents


def test_many_segments_and_reopen_appends(tmp_path: Path) -> None:
    d = str(tmp_path / "wal")
    wal = WAL.create(d, b"m", segment_size=16 * 1024)
    last = write_log(wal, 200, 5, size=100)
    wal.close()
    assert len(list_segments(d)) > 5
    wal, state, got = reopen(d, segment_size=16 * 1024)
    assert [e.index for e in got] == list(range(1, last + 1))
    assert got == entries(1, last, size=100)
    assert state == HardState(1, 0, last - 5)
    last = write_log(wal, 10, 5, size=100)
    wal.close()
    wal, _, got = reopen(d)
    wal.close()
    assert got == entries(1, last, size=100)


@pytest.mark.parametrize("preallocate", [True, False])
def test_segment_files_and_sizes(tmp_path: Path, preallocate: bool) -> None:
    d = str(tmp_path / "wal")
    wal = WAL.create(d, b"m", segment_size=8192, preallocate=preallocate)
    write_log(wal, 30, 4, size=200)
    segs = wal.segments
    tail_size = os.path.getsize(segs[-1].path)
    wal.close()
    names = [os.path.basename(s.path) for s in segs]
    assert names[0] == "0000000000000000-0000000000000000.wal"
    assert [s.seq for s in segs] == list(range(len(segs)))
    # closed segments are cut to their data; the tail keeps its preallocation
    for s in segs[:-1]:
        frames, end, damage = scan_segment(s.path)
        assert damage is None and end == os.path.getsize(s.path)
        assert frames[0].type == fr.SEGMENT
    assert (tail_size == 8192) == preallocate
    # the first index in a segment's name is one past the last entry before it
    for s in segs[1:]:
        frames, _, _ = scan_segment(s.path)
        batch = fr.decode_batch(frames[1].payload) if len(frames) > 1 else None
        if batch is not None and batch.count:
            assert batch.first_index == s.first_index


def test_later_entries_overwrite_from_their_index(tmp_path: Path) -> None:
    d = str(tmp_path / "wal")
    wal = WAL.create(d, b"m", segment_size=4096)
    wal.save(HardState(1, 1, 0), entries(1, 10, term=1))
    wal.save(HardState(2, 2, 3), entries(6, 2, term=2))  # a new leader truncates at 6
    wal.save(None, entries(8, 3, term=2))
    wal.save(HardState(3, 3, 5), entries(4, 1, term=3))  # and again at 4
    wal.close()
    wal, state, got = reopen(d)
    wal.close()
    assert got == entries(1, 3, term=1) + entries(4, 1, term=3)
    assert state == HardState(3, 3, 5)


def test_commit_only_state_is_not_synced_but_kept(tmp_path: Path) -> None:
    d = str(tmp_path / "wal")
    wal = WAL.create(d, b"m")
    assert wal.save(HardState(1, 1, 0), entries(1, 3))
    assert not wal.save(HardState(1, 1, 2), [])  # commit only: no write, no fdatasync
    assert not wal.save(None, [])
    assert not wal.save(HardState(1, 1, 2), [])
    assert wal.save(HardState(2, 0, 2), [])  # term changes must be durable at once
    assert not wal.save(HardState(2, 0, 3), [])
    wal.close()  # writes the pending commit
    wal, state, _ = reopen(d)
    assert state == HardState(2, 0, 3)
    assert not wal.save(HardState(2, 0, 4), [])
    wal.save(None, entries(4, 1, term=2))  # carries the pending state along
    os.close(wal._fd)  # simulate a crash: no close() and no further write
    wal._fd = -1
    os.close(wal._dir_fd)
    wal._dir_fd = -1
    wal, state, got = reopen(d)
    wal.close()
    assert state == HardState(2, 0, 4)
    assert got[-1].index == 4


def test_snapshot_markers(tmp_path: Path) -> None:
    d = str(tmp_path / "wal")
    wal = WAL.create(d, b"m", segment_size=4096)
    write_log(wal, 10, 10, term=1)
    conf = ConfState(voters=(1, 2, 3), learners=(4,))
    wal.save(HardState(1, 0, 100), [])
    wal.save_snapshot(WalSnapshot(50, 1, conf))
    last = write_log(wal, 5, 10, term=1)
    wal.close()

    wal, _, got = reopen(d, snap=WalSnapshot(50, 1))
    wal.close()
    assert got == entries(51, last - 50)
    assert WAL.valid_snapshots(d) == [WalSnapshot(0, 0), WalSnapshot(50, 1, conf)]

    wal = WAL.open(d, WalSnapshot(40, 1))
    with pytest.raises(SnapshotNotFoundError):
        wal.read_all()
    wal.close()
    wal = WAL.open(d, WalSnapshot(50, 2))
    with pytest.raises(SnapshotMismatchError):
        wal.read_all()
    wal.close()


def test_uncommitted_snapshot_markers_are_not_valid(tmp_path: Path) -> None:
    d = str(tmp_path / "wal")
    wal = WAL.create(d, b"m")
    wal.save(HardState(1, 0, 5), entries(1, 10))
    wal.save_snapshot(WalSnapshot(5, 1))
    wal.save_snapshot(WalSnapshot(8, 1))  # commit (5) has not reached it
    wal.close()
    assert WAL.valid_snapshots(d) == [WalSnapshot(0, 0), WalSnapshot(5, 1)]


def test_received_snapshot_drops_stale_entries(tmp_path: Path) -> None:
    """A follower with a divergent tail installs a leader's snapshot: entries it
    had after the snapshot index belong to the replaced log."""
    d = str(tmp_path / "wal")
    wal = WAL.create(d, b"m")
    wal.save(HardState(2, 1, 10), entries(1, 20, term=2))
    wal.save(HardState(3, 0, 15), [], snapshot=WalSnapshot(15, 3))
    wal.close()
    wal, _, got = reopen(d, snap=WalSnapshot(15, 3))
    assert got == []
    wal.save(None, entries(16, 2, term=3))
    wal.close()
    wal, _, got = reopen(d, snap=WalSnapshot(15, 3))
    wal.close()
    assert got == entries(16, 2, term=3)


def test_purge_keeps_segments_after_the_snapshot(tmp_path: Path) -> None:
    d = str(tmp_path / "wal")
    wal = WAL.create(d, b"m", segment_size=4096)
    last = write_log(wal, 60, 5, size=100)
    n = len(wal.segments)
    assert n > 8
    assert wal.purge(2) == []  # nothing released yet
    snap_index = last - 40
    wal.save(HardState(1, 0, last), [])
    wal.save_snapshot(WalSnapshot(snap_index, 1))
    wal.release_lock_to(snap_index)
    removed = wal.purge(2)
    kept = wal.segments
    wal.close()
    assert removed and len(kept) >= 2
    assert len(list_segments(d)) == len(kept)
    holder = [s for s in kept if s.first_index <= snap_index]
    assert holder and holder[-1] == kept[0]  # the segment holding snap_index+1 survives
    wal, _, got = reopen(d, snap=WalSnapshot(snap_index, 1))
    wal.close()
    assert got == entries(snap_index + 1, last - snap_index, size=100)
    with pytest.raises(MissingSegmentError, match="snapshot index 0"):
        WAL.open(d)


def test_purge_respects_max_wals(tmp_path: Path) -> None:
    d = str(tmp_path / "wal")
    wal = WAL.create(d, b"m", segment_size=4096)
    last = write_log(wal, 60, 5, size=100)
    wal.save(HardState(1, 0, last), [])
    wal.save_snapshot(WalSnapshot(last, 1))
    wal.release_lock_to(last)
    assert wal.purge(0) == []  # 0: unlimited
    wal.purge(5)
    assert len(wal.segments) == 5
    wal.purge(1)
    assert len(wal.segments) == 1
    wal.close()


def test_create_refuses_existing_and_open_refuses_missing(tmp_path: Path) -> None:
    d = str(tmp_path / "wal")
    with pytest.raises(WALNotFoundError):
        WAL.open(d)
    WAL.create(d, b"m").close()
    with pytest.raises(WALExistsError):
        WAL.create(d, b"m")
    assert WAL.exists(d)
    assert not os.path.exists(d + ".tmp")


def test_lock_excludes_second_writer(tmp_path: Path) -> None:
    d = str(tmp_path / "wal")
    wal = WAL.create(d, b"m")
    with pytest.raises(WALLockedError):
        WAL.open(d)
    code = (
        "import sys\nfrom petcd.wal import WAL, WALLockedError\n"
        "try:\n    WAL.open(sys.argv[1])\nexcept WALLockedError:\n    sys.exit(3)\n"
    )
    env = {**os.environ, "PYTHONPATH": SRC}
    proc = subprocess.run([sys.executable, "-c", code, d], env=env, timeout=60)
    assert proc.returncode == 3
    ro = WAL.open(d, read_only=True)  # readers need no lock
    ro.read_all()
    ro.close()
    wal.close()
    wal = WAL.open(d)
    wal.read_all()
    wal.close()


def test_api_misuse_is_refused(tmp_path: Path) -> None:
    d = str(tmp_path / "wal")
    WAL.create(d, b"m").close()
    wal = WAL.open(d)
    with pytest.raises(WALError, match="read_all"):
        wal.save(None, entries(1, 1))
    wal.read_all()
    with pytest.raises(WALError, match="once"):
        wal.read_all()
    with pytest.raises(ValueError, match="consecutive"):
        wal.save(None, [Entry(1, 1), Entry(1, 3)])
    wal.close()
    with pytest.raises(WALError, match="closed"):
        wal.save(None, entries(1, 1))
    ro = WAL.open(d, read_only=True)
    ro.read_all()
    with pytest.raises(WALError, match="read-only"):
        ro.save(None, entries(1, 1))
    ro.close()


def test_leftover_cut_temporary_is_removed(tmp_path: Path) -> None:
    d = str(tmp_path / "wal")
    wal = WAL.create(d, b"m")
    write_log(wal, 2, 2)
    wal.close()
    tmp = Path(d) / "0000000000000001-0000000000000005.wal.tmp"
    tmp.write_bytes(b"half a segment")
    wal, _, got = reopen(d)
    wal.close()
    assert not tmp.exists()
    assert len(got) == 4


def test_save_from_executor_threads(tmp_path: Path) -> None:
    """The server persists Readies from a worker thread while the loop runs."""
    d = str(tmp_path / "wal")
    wal = WAL.create(d, b"m", segment_size=64 * 1024)

    async def main() -> int:
        loop = asyncio.get_running_loop()
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        index = 0
        for _ in range(50):
            batch = entries(index + 1, 20, size=256)
            await loop.run_in_executor(None, wal.save, HardState(1, 0, index), batch)
            index += 20
        task.cancel()
        return ticks

    assert asyncio.run(main()) > 0
    wal.close()
    wal, _, got = reopen(d)
    wal.close()
    assert got == entries(1, 1000, size=256)


def test_one_fdatasync_per_save(tmp_path: Path) -> None:
    d = str(tmp_path / "wal")
    wal = WAL.create(d, b"m")
    timings: list[float] = []
    wal.fsync_observer = timings.append
    wal.save(HardState(1, 0, 0), entries(1, 1000))
    wal.save(HardState(1, 0, 500), [])  # commit only: no sync
    wal.save(None, entries(1001, 1))
    wal.save_snapshot(WalSnapshot(500, 1))
    assert len(timings) == 3 and all(t >= 0 for t in timings)
    wal.close()  # the pending commit (none left) needs no write
    assert len(timings) == 3


@pytest.mark.parametrize("state", [None, HardState(3, 2, 1 << 40)])
@pytest.mark.parametrize("entry", [Entry(3, 7, EntryType.NORMAL, b"\x0a" + b"v" * 300),
                                   Entry(1 << 50, 1 << 33, EntryType.CONF_CHANGE, b"")])
def test_one_entry_batch_has_the_general_layout(state: HardState | None, entry: Entry) -> None:
    """A lone write's frame takes a short cut (one struct): the bytes are those of the
    general column-wise layout, and decode back."""
    general = fr.encode_batch(state, None, [entry, Entry(entry.term, entry.index + 1)])
    one = fr.encode_batch(state, None, [entry])
    # (the general layout of one entry: the same head and state with count 1, then its
    # term, length, type and data)
    head = general[:4] + b"\x01\0\0\0" + general[8:16]
    fixed = 16 + (24 if state is not None else 0)
    columns = (general[fixed:fixed + 8] + general[fixed + 16:fixed + 20]
               + general[fixed + 24:fixed + 25] + entry.data)
    assert one == head + general[16:fixed] + columns
    batch = fr.decode_batch(one)
    assert batch.state == state and batch.entries == [entry]
