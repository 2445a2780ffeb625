"""The write-ahead log: Raft entries, hard state and snapshot markers in
segment files under <data-dir>/member/wal.

Life cycle: `WAL.create(dir, metadata)` for a new member, or
`WAL.open(dir, snap)` then `read_all()` on restart; after that `save()`
appends. Every `save()` is one frame, one write and one fdatasync, so all
records of a Raft Ready become durable together before anything that
depends on them is sent. The object is safe to call from a worker thread
(asyncio's run_in_executor): a lock serialises the calls, and fdatasync
releases the GIL.

Recovery reads to the last intact frame. Damage in the last frame(s) of the
last segment that looks like an interrupted write (the file ends inside the
frame, or a whole sector of it is still zero, and no intact frame follows)
is a torn tail: it is logged and cut off. Any other damage raises
CorruptWALError with the file and offset.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from petcd.raft.types import Entry, HardState
from petcd.wal import frame as fr
from petcd.wal.errors import (
    CorruptWALError,
    MetadataConflictError,
    MissingSegmentError,
    SnapshotMismatchError,
    SnapshotNotFoundError,
    WALError,
    WALExistsError,
    WALNotFoundError,
)
from petcd.wal.fileutil import fsync_dir, lock_dir, write_all
from petcd.wal.frame import WalSnapshot

log = logging.getLogger("petcd.wal")

# etcd's segment size. PETCD_WAL_SEGMENT_SIZE shrinks it for the test suite only, where
# hundreds of members would otherwise preallocate 64 MiB each (etcd's tests do the same).
SEGMENT_SIZE = int(os.environ.get("PETCD_WAL_SEGMENT_SIZE", 64 * 1024 * 1024))
SLOW_FSYNC = 1.0  # seconds; longer fdatasyncs are logged, as etcd does
_NAME = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.wal$")
_NO_ENTRIES = 1 << 64  # "after index" that makes decode_batch build no entries


def segment_name(seq: int, first_index: int) -> str:
    return f"{seq:016x}-{first_index:016x}.wal"


@dataclass(slots=True, frozen=True)
class SegmentInfo:
    seq: int
    first_index: int  # no entry below this index was appended to the segment first
    path: str


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


@dataclass(slots=True, frozen=True)
class TornTail:
    """A torn write found (and in write mode cut off) at the end of the log."""

    path: str
    offset: int
    reason: str
    discarded_bytes: int


@dataclass(slots=True)
class _Replay:
    metadata: bytes = b""
    state: HardState = field(default_factory=HardState)
    entries: list[Entry] = field(default_factory=list)
    markers: list[WalSnapshot] = field(default_factory=list)
    matched: bool = False
    last_index: int = 0
    last_crc: int = 0
    end: int = 0  # offset after the last intact frame of the last segment
    torn: TornTail | None = None


class WAL:
    """A write-ahead log directory. Build it with create() or open()."""

    def __init__(
        self,
        dirpath: str,
        dir_fd: int,
        segments: list[SegmentInfo],
        start_pos: int,
        start: WalSnapshot,
        *,
        read_only: bool,
        segment_size: int,
        preallocate: bool,
        fsync: bool,
    ) -> None:
        self._dir = dirpath
        self._dir_fd = dir_fd  # holds the flock; -1 when read-only
        self._segments = segments
        self._start_pos = start_pos
        self._start = start
        self._read_only = read_only
        self._segment_size = segment_size
        self._preallocate = preallocate
        self._fsync = fsync
        self._lock = threading.Lock()
        self._reading = True  # until read_all() ran
        self._closed = False
        self._failed: BaseException | None = None
        self._fd = -1
        self._offset = 0
        self._crc = 0
        self._last_index = 0
        self._state = HardState()
        self._state_dirty = False  # _state is newer than what is on disk
        self._metadata = b""
        self._keep_from_seq = 0  # segments below this sequence number may be purged
        self.torn_tail: TornTail | None = None
        # called with the seconds each fdatasync took (the server feeds its
        # etcd_disk_wal_fsync_duration_seconds histogram from it)
        self.fsync_observer: Callable[[float], None] | None = None
        self.bytes_written = 0  # by appends (etcd's etcd_disk_wal_write_bytes_total)

    # --- construction ---------------------------------------------------------------

    @staticmethod
    def exists(dirpath: str) -> bool:
        return os.path.isdir(dirpath) and bool(list_segments(dirpath))

    @classmethod
    def create(
        cls,
        dirpath: str,
        metadata: bytes,
        *,
        segment_size: int = SEGMENT_SIZE,
        preallocate: bool = True,
        fsync: bool = True,
    ) -> WAL:
        """A new WAL, ready to append. Appears atomically: built in
        `<dir>.tmp`, fsync'ed, then renamed into place."""
        dirpath = os.path.abspath(dirpath)
        if cls.exists(dirpath):
            raise WALExistsError(f"wal: {dirpath} already holds a WAL")
        tmpdir = dirpath + ".tmp"
        shutil.rmtree(tmpdir, ignore_errors=True)
        os.makedirs(tmpdir)
        dir_fd = lock_dir(tmpdir)  # the lock follows the directory through the rename
        try:
            path = os.path.join(tmpdir, segment_name(0, 0))
            state = HardState()
            head, crc = cls._segment_head_frame(0, 0, state, metadata, 0)
            marker = fr.encode_batch(None, WalSnapshot(), [])
            header, pad, crc = fr.frame_parts(fr.BATCH, marker, crc)
            data = head + header + marker + pad
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                write_all(fd, data, 0)
                if preallocate:
                    os.posix_fallocate(fd, 0, max(segment_size, len(data)))
                os.fsync(fd)
            except BaseException:
                os.close(fd)
                raise
            os.fsync(dir_fd)
            if os.path.isdir(dirpath):
                shutil.rmtree(dirpath)  # holds no segment (checked above): leftovers only
            os.rename(tmpdir, dirpath)
            fsync_dir(os.path.dirname(dirpath))
        except BaseException:
            os.close(dir_fd)
            raise
        segments = [SegmentInfo(0, 0, os.path.join(dirpath, segment_name(0, 0)))]
        wal = cls(
            dirpath,
            dir_fd,
            segments,
            0,
            WalSnapshot(),
            read_only=False,
            segment_size=segment_size,
            preallocate=preallocate,
            fsync=fsync,
        )
        wal._reading = False
        wal._fd = fd
        wal._offset = len(data)
        wal._crc = crc
        wal._metadata = metadata
        log.info("wal: created %s", dirpath)
        return wal

    @classmethod
    def open(
        cls,
        dirpath: str,
        snap: WalSnapshot | None = None,
        *,
        read_only: bool = False,
        segment_size: int = SEGMENT_SIZE,
        preallocate: bool = True,
        fsync: bool = True,
    ) -> WAL:
        """Open the WAL to be read from snapshot `snap` on (read_all() next).

        Takes the directory lock unless read_only; a read-only WAL never
        modifies files and cannot append."""
        snap = snap or WalSnapshot()
        dirpath = os.path.abspath(dirpath)
        if not os.path.isdir(dirpath):
            raise WALNotFoundError(f"wal: no WAL directory {dirpath}")
        dir_fd = -1 if read_only else lock_dir(dirpath)
        try:
            if not read_only:
                for name in os.listdir(dirpath):
                    if name.endswith(".wal.tmp"):  # a cut that crashed before its rename
                        os.unlink(os.path.join(dirpath, name))
            segments = list_segments(dirpath)
            if not segments:
                raise WALNotFoundError(f"wal: no WAL segment in {dirpath}")
            start_pos = _segment_for_index(segments, snap.index)
            if start_pos < 0:
                raise MissingSegmentError(
                    f"wal: no segment in {dirpath} holds the log after snapshot index "
                    f"{snap.index}: the oldest one, {os.path.basename(segments[0].path)}, "
                    f"starts at index {segments[0].first_index}"
                )
            _check_sequence(dirpath, segments[start_pos:])
        except BaseException:
            if dir_fd >= 0:
                os.close(dir_fd)
            raise
        return cls(
            dirpath,
            dir_fd,
            segments,
            start_pos,
            snap,
            read_only=read_only,
            segment_size=segment_size,
            preallocate=preallocate,
            fsync=fsync,
        )

    @classmethod
    def valid_snapshots(cls, dirpath: str) -> list[WalSnapshot]:
        """Snapshot markers in the WAL whose index is committed, oldest first.

        Restart picks the newest snapshot file that matches one of these
        (Snapshotter.load_newest_available). Never modifies files."""
        segments = list_segments(os.path.abspath(dirpath))
        if not segments:
            raise WALNotFoundError(f"wal: no WAL segment in {dirpath}")
        _check_sequence(dirpath, segments)
        wal = cls(
            dirpath,
            -1,
            segments,
            0,
            WalSnapshot(),
            read_only=True,
            segment_size=SEGMENT_SIZE,
            preallocate=False,
            fsync=False,
        )
        replay = wal._replay(want_entries=False)
        return [m for m in replay.markers if m.index <= replay.state.commit]

    # --- reading --------------------------------------------------------------------

    def read_all(self) -> tuple[bytes, HardState, list[Entry]]:
        """(metadata, last hard state, entries after the snapshot) of the log.

        An entry overwrites every earlier one at its index and above, as Raft
        log truncation requires. Repairs a torn tail (unless read-only) and
        leaves the WAL ready to append."""
        with self._lock:
            self._check_open()
            if not self._reading:
                raise WALError("wal: read_all() runs once, right after open()")
            replay = self._replay(want_entries=True)
            if not replay.matched:
                raise SnapshotNotFoundError(
                    f"wal: {self._dir} has no marker for snapshot index {self._start.index} "
                    f"term {self._start.term}"
                )
            self._reading = False
            self.torn_tail = replay.torn
            self._metadata = replay.metadata
            self._state = replay.state
            self._last_index = replay.last_index
            self._crc = replay.last_crc
            if not self._read_only:
                self._open_tail(replay.end)
            return replay.metadata, replay.state, replay.entries

    def _replay(self, *, want_entries: bool) -> _Replay:
        out = _Replay()
        start = self._start
        after = start.index if want_entries else _NO_ENTRIES
        metadata: bytes | None = None
        prev_crc: int | None = None  # unknown before the first segment read
        segments = self._segments[self._start_pos :]
        for k, seg in enumerate(segments):
            is_last = k == len(segments) - 1
            with open(seg.path, "rb") as f:
                buf = f.read()
            off = 0
            while True:
                damage = _frame_damage(buf, off)
                if damage is not None:
                    if damage == "end":
                        break
                    self._handle_damage(seg, buf, off, damage, is_last, out)
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
                        self._apply_batch(batch, out, seg, off, want_entries)
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
        self, batch: fr.Batch, out: _Replay, seg: SegmentInfo, off: int, want_entries: bool
    ) -> None:
        start = self._start
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
        self, seg: SegmentInfo, buf: bytes, off: int, reason: str, is_last: bool, out: _Replay
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
        scan_from = max(off + fr.ALIGN, claimed_end or 0)
        later = _find_intact_frame(buf, scan_from, data_end)
        if later is not None:
            raise CorruptWALError(
                seg.path,
                off,
                f"{reason}; an intact record follows at offset {later}, "
                "so this is not a torn write",
            )
        torn_region_end = min(claimed_end, len(buf)) if claimed_end is not None else data_end
        if not incomplete and not _has_zero_sector(buf, off, torn_region_end):
            raise CorruptWALError(seg.path, off, reason)
        discarded = max(data_end - off, 0)  # bytes that were not zero
        torn = TornTail(seg.path, off, reason, discarded)
        out.torn = torn
        if self._read_only:
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

    def _open_tail(self, end: int) -> None:
        tail = self._segments[-1]
        fd = os.open(tail.path, os.O_RDWR)
        try:
            if self._preallocate and os.fstat(fd).st_size < self._segment_size:
                os.posix_fallocate(fd, 0, self._segment_size)
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._offset = end

    # --- writing --------------------------------------------------------------------

    def save(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: WalSnapshot | None = None,
    ) -> bool:
        """Make a Ready's hard state, entries (consecutive) and optional snapshot
        marker durable: one frame, one write, one fdatasync.

        A hard state that changes only `commit` is not worth an fdatasync (a lost
        commit index is learnt again from the leader): with no entries and no
        marker it is written at once without one (as etcd does), so a kill -9
        keeps it (the backend may lag the WAL, and --force-new-cluster keeps only
        committed entries); the next frame's fdatasync makes it durable. Returns
        whether anything was written and synced."""
        with self._lock:
            self._check_append()
            n = len(entries)
            if n and entries[-1].index - entries[0].index != n - 1:
                raise ValueError("wal: entries of one save() must have consecutive indexes")
            must_sync = n > 0 or snapshot is not None
            if hard_state is not None and hard_state != self._state:
                if hard_state.term != self._state.term or hard_state.vote != self._state.vote:
                    must_sync = True
                self._state = hard_state
                self._state_dirty = True
            if not must_sync:
                if self._state_dirty:
                    self._append(fr.encode_batch(self._state, None, ()), sync=False)
                    self._state_dirty = False
                return False
            state = self._state if self._state_dirty else None
            self._append(fr.encode_batch(state, snapshot, entries))
            self._state_dirty = False
            if n:
                self._last_index = entries[-1].index
            elif snapshot is not None:
                self._last_index = max(self._last_index, snapshot.index)
            if self._offset >= self._segment_size:
                self._cut()
            return True

    def save_snapshot(self, snap: WalSnapshot) -> None:
        """Record (durably) that the log up to snap.index is in a snapshot file.
        Save the snapshot file first, so a marker never lacks its file."""
        self.save(None, (), snap)

    def sync(self) -> None:
        """Write a pending commit-only hard state, if any, and fdatasync."""
        with self._lock:
            self._check_append()
            if self._state_dirty:
                self._append(fr.encode_batch(self._state, None, ()))
                self._state_dirty = False

    def cut(self) -> None:
        """Close the current segment and continue in a new one."""
        with self._lock:
            self._check_append()
            self._cut()

    def _append(self, payload: bytes, sync: bool = True) -> None:
        header, pad, crc = fr.frame_parts(fr.BATCH, payload, self._crc)
        size = len(header) + len(payload) + len(pad)
        try:
            written = os.pwritev(self._fd, [header, payload, pad], self._offset)
            if written < size:
                write_all(self._fd, (header + payload + pad)[written:], self._offset + written)
            if self._fsync and sync:
                started = time.monotonic()
                os.fdatasync(self._fd)
                took = time.monotonic() - started
                if took > SLOW_FSYNC:
                    log.warning("wal: slow fdatasync took %.3fs (expected under 1s)", took)
                if self.fsync_observer is not None:
                    self.fsync_observer(took)
        except BaseException as err:
            # After a failed write or fdatasync the page cache can't be trusted
            # (it may hold data the disk lost): refuse to go on.
            self._failed = err
            raise
        self._offset += size
        self.bytes_written += size
        self._crc = crc

    def _cut(self) -> None:
        try:
            # Every frame is already synced; drop the preallocated rest and make
            # the new size durable before the next segment exists.
            os.ftruncate(self._fd, self._offset)
            if self._fsync:
                os.fsync(self._fd)
            seq = self._segments[-1].seq + 1
            first = self._last_index + 1
            path = os.path.join(self._dir, segment_name(seq, first))
            tmp = path + ".tmp"
            data, crc = self._segment_head_frame(seq, first, self._state, self._metadata, self._crc)
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                write_all(fd, data, 0)
                if self._preallocate:
                    os.posix_fallocate(fd, 0, max(self._segment_size, len(data)))
                if self._fsync:
                    os.fsync(fd)
                os.rename(tmp, path)
                if self._fsync:
                    os.fsync(self._dir_fd)
            except BaseException:
                os.close(fd)
                raise
        except BaseException as err:
            self._failed = err
            raise
        os.close(self._fd)
        self._fd = fd
        self._offset = len(data)
        self._crc = crc
        self._state_dirty = False  # the segment header carries it
        self._segments.append(SegmentInfo(seq, first, path))
        log.info("wal: started segment %s", path)

    @staticmethod
    def _segment_head_frame(
        seq: int, first: int, state: HardState, metadata: bytes, prev_crc: int
    ) -> tuple[bytes, int]:
        payload = fr.encode_segment_head(seq, first, state, metadata)
        header, pad, crc = fr.frame_parts(fr.SEGMENT, payload, prev_crc)
        return header + payload + pad, crc

    # --- retention ------------------------------------------------------------------

    def release_lock_to(self, index: int) -> None:
        """Allow purge() to delete segments that hold only entries up to `index`
        (call with the index of a snapshot that is safely on disk)."""
        with self._lock:
            pos = _segment_for_index(self._segments, index)
            if pos > 0:
                self._keep_from_seq = max(self._keep_from_seq, self._segments[pos].seq)

    def purge(self, max_wals: int) -> list[str]:
        """Delete the oldest released segments while more than `max_wals`
        segments exist (0: keep all). Returns the deleted paths."""
        with self._lock:
            self._check_append()
            removed: list[str] = []
            if max_wals <= 0:
                return removed
            while (
                len(self._segments) > max(max_wals, 1)
                and self._segments[0].seq < self._keep_from_seq
            ):
                path = self._segments.pop(0).path
                os.unlink(path)
                removed.append(path)
            if removed:
                os.fsync(self._dir_fd)
                log.info("wal: purged %d segment(s): %s", len(removed), ", ".join(removed))
            return removed

    # --- state ----------------------------------------------------------------------

    @property
    def dir(self) -> str:
        return self._dir

    @property
    def metadata(self) -> bytes:
        return self._metadata

    @property
    def hard_state(self) -> HardState:
        return self._state

    @property
    def last_index(self) -> int:
        """Index of the last entry appended (0 if none)."""
        return self._last_index

    @property
    def segments(self) -> list[SegmentInfo]:
        return list(self._segments)

    def close(self) -> None:
        """Write a pending hard state, release the files and the lock."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                if self._fd >= 0 and self._failed is None and self._state_dirty:
                    self._append(fr.encode_batch(self._state, None, ()))
            finally:
                if self._fd >= 0:
                    os.close(self._fd)
                    self._fd = -1
                if self._dir_fd >= 0:
                    os.close(self._dir_fd)
                    self._dir_fd = -1

    def __enter__(self) -> WAL:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise WALError("wal: closed")

    def _check_append(self) -> None:
        self._check_open()
        if self._failed is not None:
            raise WALError(f"wal: an earlier write failed ({self._failed}); restart to recover")
        if self._read_only:
            raise WALError("wal: opened read-only")
        if self._reading:
            raise WALError("wal: call read_all() before appending")


def _segment_for_index(segments: list[SegmentInfo], index: int) -> int:
    """Position of the last segment whose first index is <= index, or -1."""
    for pos in range(len(segments) - 1, -1, -1):
        if segments[pos].first_index <= index:
            return pos
    return -1


def _check_sequence(dirpath: str, segments: list[SegmentInfo]) -> None:
    for before, after in itertools.pairwise(segments):
        if after.seq != before.seq + 1:
            missing = ", ".join(f"{s:016x}" for s in range(before.seq + 1, after.seq))
            raise MissingSegmentError(
                f"wal: segment(s) with sequence number {missing} missing from {dirpath} "
                f"(between {os.path.basename(before.path)} and {os.path.basename(after.path)})"
            )


def _frame_damage(buf: bytes, off: int) -> str | None:
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


def _find_intact_frame(buf: bytes, start: int, stop: int) -> int | None:
    """Offset of the first intact frame at an aligned offset in [start, stop)."""
    off = start + (-start & (fr.ALIGN - 1))
    while off < stop:
        if not buf.startswith(fr.ZERO_HEADER, off) and fr.is_intact_frame(buf, off):
            return off
        off += fr.ALIGN
    return None


def _has_zero_sector(buf: bytes, start: int, end: int) -> bool:
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
    while (damage := _frame_damage(buf, off)) is None:
        ftype, length, _, _ = fr.parse_header(buf, off)
        start = off + fr.HEADER_SIZE
        size = fr.frame_size(length)
        frames.append(FrameInfo(off, ftype, length, size, buf[start : start + length]))
        off += size
    return frames, off, None if damage == "end" else damage
