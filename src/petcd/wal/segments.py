"""Segment files: their names, listing and order, and which frames in one are intact."""

from __future__ import annotations

import itertools
import os
import re
from dataclasses import dataclass

from petcd.raft.types import HardState
from petcd.wal import frame as fr
from petcd.wal.errors import (
    MissingSegmentError,
)
from petcd.wal.fileutil import write_all

_NAME = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.wal$")


def segment_name(seq: int, first_index: int) -> str:
    return f"{seq:016x}-{first_index:016x}.wal"


@dataclass(slots=True, frozen=True)
class SegmentInfo:
    seq: int
    first_index: int  # no entry below this index was appended to the segment first
    path: str


def head_frame(
    seq: int, first: int, state: HardState, metadata: bytes, prev_crc: int
) -> tuple[bytes, int]:
    """A segment's first frame (its sequence number, first index, hard state and the
    WAL's metadata) and the CRC the next frame chains from."""
    payload = fr.encode_segment_head(seq, first, state, metadata)
    header, pad, crc = fr.frame_parts(fr.SEGMENT, payload, prev_crc)
    return header + payload + pad, crc


def new_segment_file(path: str, data: bytes, size: int, *, preallocate: bool, fsync: bool,
                     flags: int = os.O_TRUNC) -> int:
    """Create the file `path` holding `data`, preallocated to `size` bytes; returns the
    open descriptor (read-write)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | flags, 0o600)
    try:
        write_all(fd, data, 0)
        if preallocate:
            os.posix_fallocate(fd, 0, max(size, len(data)))
        if fsync:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        raise
    return fd


def list_segments(dirpath: str) -> list[SegmentInfo]:
    """The segment files in `dirpath`, oldest first (other files are ignored)."""
    found = []
    for name in os.listdir(dirpath):
        m = _NAME.match(name)
        if m:
            found.append(
                SegmentInfo(int(m.group(1), 16), int(m.group(2), 16), os.path.join(dirpath, name))
            )
    found.sort(key=lambda s: s.seq)
    return found


def segment_for_index(segments: list[SegmentInfo], index: int) -> int:
    """Position of the last segment whose first index is <= index, or -1."""
    for pos in range(len(segments) - 1, -1, -1):
        if segments[pos].first_index <= index:
            return pos
    return -1


def check_sequence(dirpath: str, segments: list[SegmentInfo]) -> None:
    for before, after in itertools.pairwise(segments):
        if after.seq != before.seq + 1:
            missing = ", ".join(f"{s:016x}" for s in range(before.seq + 1, after.seq))
            raise MissingSegmentError(
                f"wal: segment(s) with sequence number {missing} missing from {dirpath} "
                f"(between {os.path.basename(before.path)} and {os.path.basename(after.path)})"
            )


def frame_damage(buf: bytes, off: int) -> str | None:
    """None if an intact frame starts at `off`; "end" at a clean end of data;
    otherwise what is wrong there."""
    if off >= len(buf):
        return "end"
    if buf.count(0, off, off + fr.HEADER_SIZE) == min(fr.HEADER_SIZE, len(buf) - off):
        if buf.count(0, off) == len(buf) - off:
            return "end"
        return "record header missing (zeros) before the end of the data"
    if off + fr.HEADER_SIZE > len(buf):
        return "record header cut short by the end of the file"
    if not fr.header_ok(buf, off):
        return "damaged record header"
    _, length, _, crc = fr.parse_header(buf, off)
    if off + fr.HEADER_SIZE + length > len(buf):
        return "record runs past the end of the file"
    if not fr.payload_crc_ok(buf, off, length, crc):
        return "crc mismatch"
    return None


def find_intact_frame(buf: bytes, start: int, stop: int) -> int | None:
    """Offset of the first intact frame at an aligned offset in [start, stop)."""
    off = start + (-start & (fr.ALIGN - 1))
    while off < stop:
        if not buf.startswith(fr.ZERO_HEADER, off) and fr.is_intact_frame(buf, off):
            return off
        off += fr.ALIGN
    return None


def has_zero_sector(buf: bytes, start: int, end: int) -> bool:
    """Whether a sector-aligned piece of [start, end) is all zero: a part of the
    write that never reached the disk."""
    end = min(end, len(buf))
    lo = start
    while lo < end:
        hi = min((lo // fr.SECTOR + 1) * fr.SECTOR, end)
        if buf.count(0, lo, hi) == hi - lo:
            return True
        lo = hi
    return False


@dataclass(slots=True, frozen=True)
class FrameInfo:
    offset: int
    type: int
    length: int  # payload bytes
    size: int  # bytes on disk, padding included
    payload: bytes


def scan_segment(path: str) -> tuple[list[FrameInfo], int, str | None]:
    """The intact frames at the start of a segment file, the offset where they
    end, and what is wrong there (None at a clean end). For tools and tests:
    it does not judge torn writes or check the CRC chain."""
    with open(path, "rb") as f:
        buf = f.read()
    frames = []
    off = 0
    while (damage := frame_damage(buf, off)) is None:
        ftype, length, _, _ = fr.parse_header(buf, off)
        start = off + fr.HEADER_SIZE
        size = fr.frame_size(length)
        frames.append(FrameInfo(off, ftype, length, size, buf[start : start + length]))
        off += size
    return frames, off, None if damage == "end" else damage
