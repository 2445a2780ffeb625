"""Reading a WAL back at start: every frame from the snapshot's segment on, checked and
decoded, a torn tail told apart from corruption (and cut off unless read-only).

Recovery reads to the last intact frame. Damage in the last frame(s) of the
last segment that looks like an interrupted write (the file ends inside the
frame, or a whole sector of it is still zero, and no intact frame follows)
is a torn tail: it is logged and cut off. Any other damage raises
CorruptWALError with the file and offset.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from petcd.raft.types import Entry, HardState
from petcd.wal import frame as fr
from petcd.wal.errors import (
    CorruptWALError,
    MetadataConflictError,
    SnapshotMismatchError,
)
from petcd.wal.frame import WalSnapshot
from petcd.wal.segments import SegmentInfo, find_intact_frame, frame_damage, has_zero_sector

log = logging.getLogger("petcd.wal")


_NO_ENTRIES = 1 << 64  # "after index" that makes decode_batch build no entries


@dataclass(slots=True, frozen=True)
class TornTail:
    """A torn write found (and in write mode cut off) at the end of the log."""

    path: str
    offset: int
    reason: str
    discarded_bytes: int


@dataclass(slots=True)
class Replay:
    metadata: bytes = b""
    state: HardState = field(default_factory=HardState)
    entries: list[Entry] = field(default_factory=list)
    markers: list[WalSnapshot] = field(default_factory=list)
    matched: bool = False
    last_index: int = 0
    last_crc: int = 0
    end: int = 0  # offset after the last intact frame of the last segment
    torn: TornTail | None = None


def replay(
    segments: Sequence[SegmentInfo], start: WalSnapshot, *, want_entries: bool, repair: bool
) -> Replay:
    """Every frame of `segments` (those from the snapshot's on), checked in order; entries
    after `start` only if `want_entries`. A torn tail is cut off if `repair`."""
    out = Replay()
    after = start.index if want_entries else _NO_ENTRIES
    metadata: bytes | None = None
    prev_crc: int | None = None  # unknown before the first segment read
    for k, seg in enumerate(segments):
        is_last = k == len(segments) - 1
        with open(seg.path, "rb") as f:
            buf = f.read()
        off = 0
        while True:
            damage = frame_damage(buf, off)
            if damage is not None:
                if damage == "end":
                    break
                _handle_damage(seg, buf, off, damage, is_last, out, repair)
                break
            ftype, length, frame_prev, crc = fr.parse_header(buf, off)
            if prev_crc is not None and frame_prev != prev_crc:
                what = (
                    "segment does not continue the segment before it (records lost at its end?)"
                    if off == 0
                    else "record does not follow the record before it"
                )
                raise CorruptWALError(seg.path, off, f"crc chain broken: {what}")
            payload = buf[off + fr.HEADER_SIZE : off + fr.HEADER_SIZE + length]
            try:
                if off == 0:
                    if ftype != fr.SEGMENT:
                        raise ValueError("segment does not start with a segment header")
                    head = fr.decode_segment_head(payload)
                    if (head.seq, head.first_index) != (seg.seq, seg.first_index):
                        raise ValueError(
                            f"header says seq {head.seq} first index {head.first_index}, "
                            "unlike the file name"
                        )
                    if metadata is not None and head.metadata != metadata:
                        raise MetadataConflictError(
                            f"wal: {seg.path} has other metadata than the segment before it"
                        )
                    metadata = head.metadata
                    out.state = head.state
                elif ftype != fr.BATCH:
                    raise ValueError("segment header in the middle of a segment")
                else:
                    batch = fr.decode_batch(payload, after)
                    _apply_batch(batch, out, seg, off, want_entries, start)
            except (ValueError, IndexError, OverflowError) as err:
                raise CorruptWALError(seg.path, off, f"undecodable record: {err}") from err
            prev_crc = crc
            off += fr.frame_size(length)
        out.end = off
    out.metadata = metadata or b""
    out.last_crc = prev_crc or 0
    if want_entries and start.index and out.entries:
        # Entries after a snapshot have at least its term; lower terms are leftovers
        # of a log the snapshot replaced (a follower that installed a leader's snapshot).
        for i, e in enumerate(out.entries):
            if e.term < start.term:
                del out.entries[i:]
                break
    return out


def _apply_batch(
    batch: fr.Batch,
    out: Replay,
    seg: SegmentInfo,
    off: int,
    want_entries: bool,
    start: WalSnapshot,
) -> None:
    if batch.snapshot is not None:
        out.markers.append(batch.snapshot)
        if batch.snapshot.index == start.index:
            if batch.snapshot.term != start.term:
                raise SnapshotMismatchError(
                    f"wal: snapshot marker at index {start.index} in {seg.path} has term "
                    f"{batch.snapshot.term}, not {start.term}"
                )
            out.matched = True
        out.last_index = max(out.last_index, batch.snapshot.index)
    if batch.state is not None:
        out.state = batch.state
    if batch.count:
        last = batch.first_index + batch.count - 1
        if want_entries and last > start.index:
            lo = max(batch.first_index, start.index + 1)
            pos = lo - start.index - 1
            if pos > len(out.entries):
                raise CorruptWALError(
                    seg.path,
                    off,
                    f"entry {lo} leaves a gap after entry {start.index + len(out.entries)}",
                )
            del out.entries[pos:]
            out.entries += batch.entries
        out.last_index = last


def _handle_damage(
    seg: SegmentInfo, buf: bytes, off: int, reason: str, is_last: bool, out: Replay, repair: bool
) -> None:
    """Damage at `off`: a torn tail to cut off, or corruption to report."""
    if not is_last or off == 0:
        # Earlier segments and segment headers were fsync'ed before anything followed.
        raise CorruptWALError(seg.path, off, reason)
    claimed_end = None
    incomplete = off + fr.HEADER_SIZE > len(buf)
    if fr.header_ok(buf, off):
        length = fr.parse_header(buf, off)[1]
        claimed_end = off + fr.frame_size(length)
        incomplete = off + fr.HEADER_SIZE + length > len(buf)
    data_end = len(buf.rstrip(b"\0"))
    if claimed_end is None and data_end <= off + fr.HEADER_SIZE:
        # The data stops inside a damaged header (SIGKILL can end a write() at a page
        # boundary, and a preallocated file is zeros after it): a header cut short.
        incomplete = True
    scan_from = max(off + fr.ALIGN, claimed_end or 0)
    later = find_intact_frame(buf, scan_from, data_end)
    if later is not None:
        raise CorruptWALError(
            seg.path,
            off,
            f"{reason}; an intact record follows at offset {later}, so this is not a torn write",
        )
    torn_region_end = min(claimed_end, len(buf)) if claimed_end is not None else data_end
    if not incomplete and not has_zero_sector(buf, off, torn_region_end):
        raise CorruptWALError(seg.path, off, reason)
    discarded = max(data_end - off, 0)  # bytes that were not zero
    torn = TornTail(seg.path, off, reason, discarded)
    out.torn = torn
    if not repair:
        log.info("wal: torn write at the end of %s, offset %d: %s", seg.path, off, reason)
        return
    log.warning(
        "wal: repairing torn write at the end of %s, offset %d (%s): discarding %d bytes",
        seg.path,
        off,
        reason,
        discarded,
    )
    fd = os.open(seg.path, os.O_RDWR)
    try:
        os.ftruncate(fd, off)
        os.fsync(fd)
    finally:
        os.close(fd)
