"""Snapshot files, received backend files, and MemberStorage (snapshot + WAL)."""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import pytest
from wal_testutil import entries

from petcd.raft.types import ConfState, HardState, Snapshot, SnapshotMetadata
from petcd.wal import WAL, WalSnapshot
from petcd.wal.errors import CorruptSnapshotError, CorruptWALError
from petcd.wal.segments import list_segments
from petcd.wal.snap import Snapshotter, iter_file, read_snap, snap_name
from petcd.wal.storage import MemberStorage, snap_dir, wal_dir

CONF = ConfState(voters=(1, 2, 3), learners=(9,))


def snapshot(index: int, term: int = 1, data: bytes | None = None) -> Snapshot:
    body = data if data is not None else f"state at {index}".encode()
    return Snapshot(SnapshotMetadata(index, term, CONF), body)


def test_save_and_load_newest(tmp_path: Path) -> None:
    s = Snapshotter(str(tmp_path / "snap"))
    assert s.load() is None
    assert s.save_snap(Snapshot()) is None  # an empty snapshot is not written
    for index in (10, 20, 30):
        s.save_snap(snapshot(index, term=index // 10))
    assert s.snap_names()[0] == snap_name(3, 30)
    assert s.load() == snapshot(30, term=3)
    assert read_snap(os.path.join(s.dir, snap_name(1, 10))) == snapshot(10, term=1)
    big = snapshot(40, term=3, data=os.urandom(3 << 20))
    s.save_snap(big)
    assert s.load() == big
    assert not [n for n in os.listdir(s.dir) if n.endswith(".tmp")]


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty", "garbage"])
def test_broken_newest_snapshot_is_skipped_and_reported(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    s = Snapshotter(str(tmp_path / "snap"))
    s.save_snap(snapshot(10))
    path = s.save_snap(snapshot(20))
    assert path is not None
    raw = Path(path).read_bytes()
    broken = {
        "flip": raw[:-3] + bytes([raw[-3] ^ 1]) + raw[-2:],
        "truncate": raw[:-5],
        "empty": b"",
        "garbage": b"not a snapshot at all, but long enough",
    }[damage]
    Path(path).write_bytes(broken)
    with pytest.raises(CorruptSnapshotError, match=path):
        read_snap(path)
    with caplog.at_level(logging.WARNING, logger="petcd.wal.snap"):
        assert s.load() == snapshot(10)
    assert path in caplog.text
    assert os.path.exists(path + ".broken") and not os.path.exists(path)


def test_load_newest_available_follows_the_wal(tmp_path: Path) -> None:
    s = Snapshotter(str(tmp_path / "snap"))
    for index in (10, 20, 30):
        s.save_snap(snapshot(index))
    # 30's marker never reached the WAL (crash between file and marker)
    got = s.load_newest_available([WalSnapshot(0, 0), WalSnapshot(10, 1), WalSnapshot(20, 1)])
    assert got == snapshot(20)
    assert s.load_newest_available([WalSnapshot(20, 2)]) is None  # other term


def test_purge_keeps_the_newest(tmp_path: Path) -> None:
    s = Snapshotter(str(tmp_path / "snap"))
    for index in range(1, 9):
        s.save_snap(snapshot(index * 10))
    assert s.purge(0) == []
    removed = s.purge(5)
    assert len(removed) == 3
    assert s.snap_names() == [snap_name(1, i * 10) for i in range(8, 3, -1)]


def test_receive_backend_file(tmp_path: Path) -> None:
    s = Snapshotter(str(tmp_path / "snap"))
    blob = os.urandom(5 << 20)
    path, size = s.save_db_from(io.BytesIO(blob), 0x42)
    assert size == len(blob) and Path(path).read_bytes() == blob
    assert os.path.basename(path) == "0000000000000042.snap.db"
    assert s.db_file_path(0x42) == path and s.db_file_path(0x43) is None
    # streamed in chunks, as from the network; the source file streams out the same way
    path2, _ = s.save_db_from(iter_file(path, 1000), 0x50)
    assert Path(path2).read_bytes() == blob
    assert s.release_snap_dbs(0x50) == [path]
    assert s.db_file_path(0x50) == path2


def test_interrupted_receive_leaves_no_db_file(tmp_path: Path) -> None:
    s = Snapshotter(str(tmp_path / "snap"))

    def chunks() -> object:
        yield b"x" * 1000
        raise ConnectionError("leader went away")

    with pytest.raises(ConnectionError):
        s.save_db_from(chunks(), 7)  # type: ignore[arg-type]
    assert os.listdir(s.dir) == []
    receiver = s.receive_db(8)
    receiver.write(b"partial")  # a crash here leaves only a .tmp file ...
    assert s.db_file_path(8) is None
    assert s.load() is None  # ... which the next start removes
    assert os.listdir(s.dir) == []


def test_member_storage_restart_from_snapshot(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    assert not MemberStorage.exists(data)
    st = MemberStorage.create(data, b"ids", segment_size=8192)
    index = 0
    for _ in range(40):
        st.save(HardState(1, 1, index), entries(index + 1, 10, size=100))
        index += 10
        if index % 100 == 0:
            st.save(HardState(1, 1, index), [])  # commit catches up
            st.save_snapshot(snapshot(index - 5))
            st.purge(max_wals=2, max_snapshots=2)
    st.close()
    assert len(os.listdir(snap_dir(data))) == 2
    assert list_segments(wal_dir(data))[0].first_index > 0  # old segments went

    st, rec = MemberStorage.restore(data, segment_size=8192)
    assert rec.metadata == b"ids"
    assert rec.snapshot == snapshot(395)
    assert rec.entries == entries(396, 5, size=100)
    assert rec.hard_state == HardState(1, 1, 400)
    assert rec.torn_tail is None
    st.save(None, entries(401, 1, size=100))
    st.close()


def test_member_storage_received_snapshot(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    st = MemberStorage.create(data, b"ids")
    st.save(HardState(1, 0, 3), entries(1, 5, term=1))
    # a leader's snapshot arrives in a Ready, with entries after it
    assert st.save(HardState(4, 0, 1000), entries(1001, 3, term=4), snapshot(1000, term=4))
    st.close()
    st, rec = MemberStorage.restore(data)
    st.close()
    assert rec.snapshot == snapshot(1000, term=4)
    assert rec.entries == entries(1001, 3, term=4)
    assert WAL.valid_snapshots(wal_dir(data))[-1] == WalSnapshot(1000, 4, CONF)


def test_restart_reads_the_wal_from_the_oldest_snapshot_file_on(tmp_path: Path) -> None:
    """The segments before the one holding the oldest snapshot file's index cannot hold
    a marker a restart may pick, so it does not read them (issue 16: with --max-wals 5
    of 64 MB a restart read 320 MB before replaying the WAL). Shown by damaging one:
    the restart does not notice, a full read does."""
    data = str(tmp_path / "data")
    st = MemberStorage.create(data, b"ids", segment_size=8192)
    index = 0
    for _ in range(30):
        st.save(HardState(1, 1, index), entries(index + 1, 10, size=100))
        index += 10
        if index % 100 == 0:
            st.save(HardState(1, 1, index), [])
            st.save_snapshot(snapshot(index - 5))
            st.purge(max_wals=100, max_snapshots=2)  # keeps every segment, two snapshots
    st.close()
    snapshotter = Snapshotter(snap_dir(data))
    assert snapshotter.oldest_index() == 195
    segments = list_segments(wal_dir(data))
    assert segments[0].first_index == 0 and len(segments) > 4
    assert WAL.valid_snapshots(wal_dir(data), since=195) == [
        WalSnapshot(195, 1, CONF), WalSnapshot(295, 1, CONF)]
    # The first segment (entries long before the oldest snapshot) damaged mid-way.
    first = segments[0].path
    raw = bytearray(Path(first).read_bytes())
    raw[4000] ^= 0xFF
    Path(first).write_bytes(bytes(raw))
    with pytest.raises(CorruptWALError):
        WAL.valid_snapshots(wal_dir(data))
    st, rec = MemberStorage.restore(data, segment_size=8192)
    st.close()
    assert rec.snapshot == snapshot(295)
    assert rec.entries == entries(296, 5, size=100)
    assert Snapshotter(str(tmp_path / "none")).oldest_index() == 0
