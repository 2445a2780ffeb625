"""Damaged WAL files: torn tails are repaired, everything else is reported
with the file and offset, never skipped."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from wal_testutil import entries, reopen, write_log

from petcd.raft.types import HardState
from petcd.wal import WAL, CorruptWALError, MissingSegmentError
from petcd.wal.frame import SECTOR
from petcd.wal.segments import FrameInfo, list_segments, scan_segment

SRC = str(Path(__file__).resolve().parents[2] / "src")


def make_wal(tmp_path: Path, *, preallocate: bool = True, segment_size: int = 1 << 20) -> str:
    """A WAL of 20 batches of 10 entries (1..200), the last batch a big one."""
    d = str(tmp_path / "wal")
    wal = WAL.create(d, b"m", segment_size=segment_size, preallocate=preallocate)
    write_log(wal, 19, 10, size=100)
    wal.save(HardState(1, 0, 190), entries(191, 10, size=2000))  # spans several sectors
    wal.close()
    return d


def frames_of(path: str) -> list[FrameInfo]:
    frames, _, damage = scan_segment(path)
    assert damage is None
    return frames


def patch(path: str, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def flip(path: str, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x40]))


def tail_path(d: str) -> str:
    return list_segments(d)[-1].path


@pytest.mark.parametrize("preallocate", [True, False])
def test_truncated_tail_is_repaired(
    tmp_path: Path, preallocate: bool, caplog: pytest.LogCaptureFixture
) -> None:
    d = make_wal(tmp_path, preallocate=preallocate)
    path = tail_path(d)
    last = frames_of(path)[-1]
    with open(path, "r+b") as f:
        f.truncate(last.offset + 3000)  # the process died inside the write
    with caplog.at_level(logging.WARNING, logger="petcd.wal"):
        wal, _, got = reopen(d)
    assert got == entries(1, 190, size=100)
    assert wal.torn_tail is not None and wal.torn_tail.offset == last.offset
    assert wal.torn_tail.path == path
    assert f"offset {last.offset}" in caplog.text and "torn" in caplog.text
    wal.save(None, entries(191, 5, size=100))  # appends where the torn write began
    wal.close()
    wal, _, got = reopen(d)
    wal.close()
    assert wal.torn_tail is None
    assert got == entries(1, 195, size=100)


@pytest.mark.parametrize("keep", [1, 8, 15, 16, 17])
def test_tail_cut_inside_a_header_is_repaired(tmp_path: Path, keep: int) -> None:
    d = make_wal(tmp_path, preallocate=False)
    path = tail_path(d)
    last = frames_of(path)[-1]
    with open(path, "r+b") as f:
        f.truncate(last.offset + keep)
    wal, _, got = reopen(d)
    wal.close()
    assert got == entries(1, 190, size=100)
    assert wal.torn_tail is not None and wal.torn_tail.offset == last.offset


@pytest.mark.parametrize("keep", [1, 8, 15])
def test_preallocated_tail_cut_inside_a_header_is_repaired(tmp_path: Path, keep: int) -> None:
    """SIGKILL can stop a write() at a page boundary; a header that straddles one
    keeps its first bytes and the zeros of the preallocated file after them."""
    d = make_wal(tmp_path, preallocate=True)
    path = tail_path(d)
    last = frames_of(path)[-1]
    patch(path, last.offset + keep, b"\0" * (last.size - keep))
    wal, _, got = reopen(d)
    wal.close()
    assert got == entries(1, 190, size=100)
    assert wal.torn_tail is not None and wal.torn_tail.offset == last.offset


def test_unwritten_sectors_in_last_record_are_a_torn_tail(tmp_path: Path) -> None:
    d = make_wal(tmp_path)
    path = tail_path(d)
    last = frames_of(path)[-1]
    # power loss: the header's sector reached the disk, a later one did not
    hole = (last.offset // SECTOR + 3) * SECTOR
    patch(path, hole, b"\0" * SECTOR)
    wal, _, got = reopen(d)
    wal.close()
    assert got == entries(1, 190, size=100)
    assert wal.torn_tail is not None


def test_repair_clears_the_torn_bytes(tmp_path: Path) -> None:
    """Only a prefix of the last write landed. After the repair a shorter
    record is written there: what is left of the torn one must not be taken
    for damage by the next recovery."""
    d = make_wal(tmp_path)
    path = tail_path(d)
    last = frames_of(path)[-1]
    landed = (last.offset // 4096 + 2) * 4096
    patch(path, landed, b"\0" * (last.offset + last.size - landed))
    wal, _, _ = reopen(d)
    assert wal.torn_tail is not None
    wal.save(None, entries(191, 1, size=100))
    wal.close()
    wal, _, got = reopen(d)
    wal.close()
    assert wal.torn_tail is None
    assert got == entries(1, 191, size=100)


def test_lost_header_sector_with_later_sectors_present_is_a_torn_tail(tmp_path: Path) -> None:
    d = make_wal(tmp_path)
    path = tail_path(d)
    last = frames_of(path)[-1]
    page_end = (last.offset // 4096 + 1) * 4096
    patch(path, last.offset, b"\0" * (page_end - last.offset))
    wal, _, got = reopen(d)
    wal.close()
    assert got == entries(1, 190, size=100)
    assert wal.torn_tail is not None and "header" in wal.torn_tail.reason


def test_read_only_open_leaves_a_torn_tail_alone(tmp_path: Path) -> None:
    d = make_wal(tmp_path, preallocate=False)
    path = tail_path(d)
    last = frames_of(path)[-1]
    with open(path, "r+b") as f:
        f.truncate(last.offset + 100)
    ro, _, got = reopen(d, read_only=True)
    ro.close()
    assert got == entries(1, 190, size=100)
    assert os.path.getsize(path) == last.offset + 100


def test_flipped_byte_before_the_tail_is_fatal(tmp_path: Path) -> None:
    d = make_wal(tmp_path)
    path = tail_path(d)
    victim = frames_of(path)[5]
    flip(path, victim.offset + 40)
    with pytest.raises(CorruptWALError) as err:
        reopen(d)
    assert err.value.path == path and err.value.offset == victim.offset
    assert path in str(err.value) and f"offset {victim.offset}" in str(err.value)
    assert "crc mismatch" in str(err.value)


def test_flipped_byte_in_a_header_before_the_tail_is_fatal(tmp_path: Path) -> None:
    d = make_wal(tmp_path)
    path = tail_path(d)
    victim = frames_of(path)[7]
    flip(path, victim.offset + 5)  # the length field
    with pytest.raises(CorruptWALError, match=f"offset {victim.offset}: damaged record header"):
        reopen(d)


def test_flipped_byte_in_the_last_record_is_fatal(tmp_path: Path) -> None:
    """All of the last write reached the disk, so it is not torn: damaged."""
    d = make_wal(tmp_path)
    path = tail_path(d)
    last = frames_of(path)[-1]
    flip(path, last.offset + last.size - 100)
    with pytest.raises(CorruptWALError, match=f"offset {last.offset}: crc mismatch"):
        reopen(d)
    _, end, damage = scan_segment(path)  # nothing was cut off
    assert end == last.offset and damage == "crc mismatch"


def test_zeroed_header_with_intact_records_after_it_is_fatal(tmp_path: Path) -> None:
    d = make_wal(tmp_path)
    path = tail_path(d)
    victim = frames_of(path)[3]
    patch(path, victim.offset, b"\0" * victim.size)
    with pytest.raises(CorruptWALError, match="intact record follows"):
        reopen(d)


def test_damage_in_an_older_segment_is_fatal(tmp_path: Path) -> None:
    d = str(tmp_path / "wal")
    wal = WAL.create(d, b"m", segment_size=4096)
    write_log(wal, 40, 5, size=100)
    wal.close()
    first = list_segments(d)[0].path
    last = frames_of(first)[-1]
    with open(first, "r+b") as f:  # even a "torn-looking" end is damage here
        f.truncate(last.offset + 20)
    with pytest.raises(CorruptWALError, match=f"{first} at offset {last.offset}"):
        reopen(d)


def test_records_lost_at_the_end_of_an_older_segment_are_fatal(tmp_path: Path) -> None:
    d = str(tmp_path / "wal")
    wal = WAL.create(d, b"m", segment_size=4096)
    write_log(wal, 40, 5, size=100)
    wal.close()
    segs = list_segments(d)
    last = frames_of(segs[1].path)[-1]
    with open(segs[1].path, "r+b") as f:  # cut exactly at a record boundary
        f.truncate(last.offset)
    with pytest.raises(CorruptWALError, match=f"{segs[2].path} at offset 0: crc chain broken"):
        reopen(d)


def test_missing_segment_is_reported(tmp_path: Path) -> None:
    d = str(tmp_path / "wal")
    wal = WAL.create(d, b"m", segment_size=4096)
    write_log(wal, 40, 5, size=100)
    wal.close()
    segs = list_segments(d)
    os.unlink(segs[2].path)
    with pytest.raises(MissingSegmentError, match="0000000000000002 missing"):
        WAL.open(d)
    with pytest.raises(MissingSegmentError):
        WAL.valid_snapshots(d)
    os.unlink(segs[0].path)
    with pytest.raises(MissingSegmentError, match="snapshot index 0"):
        WAL.open(d)


def test_inspect_tool_reports_damage(tmp_path: Path) -> None:
    d = make_wal(tmp_path)
    env = {**os.environ, "PYTHONPATH": SRC}
    cmd = [sys.executable, "-m", "petcd.wal.inspect", str(tmp_path)]
    ok = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert "SEGMENT seq=0" in ok.stdout and "entries=191..200" in ok.stdout
    path = tail_path(d)
    flip(path, frames_of(path)[4].offset + 30)
    bad = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1
    assert "DAMAGE at offset" in bad.stdout
