"""The write-ahead log: Raft entries, hard state and snapshot markers in
segment files under <data-dir>/member/wal.

Life cycle: `WAL.create(dir, metadata)` for a new member, or
`WAL.open(dir, snap)` then `read_all()` on restart; after that `save()`
appends. Every `save()` is one frame, one write and one fdatasync, so all
records of a Raft Ready become durable together before anything that
depends on them is sent. The object is safe to call from a worker thread
(asyncio's run_in_executor): a lock serialises the calls, and fdatasync
releases the GIL.

Recovery (petcd.wal.replay) reads to the last intact frame; segment files and
their frames: petcd.wal.segments.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Sequence

from petcd.raft.types import Entry, HardState
from petcd.wal import frame as fr
from petcd.wal.errors import (
    MissingSegmentError,
    SnapshotNotFoundError,
    WALError,
    WALExistsError,
    WALNotFoundError,
)
from petcd.wal.fileutil import fsync_dir, lock_dir, write_all
from petcd.wal.frame import WalSnapshot
from petcd.wal.replay import Replay, TornTail, replay
from petcd.wal.segments import (
    SegmentInfo,
    check_sequence,
    head_frame,
    list_segments,
    new_segment_file,
    segment_for_index,
    segment_name,
)

log = logging.getLogger("petcd.wal")

# etcd's segment size. PETCD_WAL_SEGMENT_SIZE shrinks it for the test suite only, where
# hundreds of members would otherwise preallocate 64 MiB each (etcd's tests do the same).
SEGMENT_SIZE = int(os.environ.get("PETCD_WAL_SEGMENT_SIZE", 64 * 1024 * 1024))
SLOW_FSYNC = 1.0  # seconds; longer fdatasyncs are logged, as etcd does


class WAL:
    """A write-ahead log directory. Build it with create() or open()."""

    def __init__(self, dirpath: str, dir_fd: int, segments: list[SegmentInfo], start_pos: int,
                 start: WalSnapshot, *, read_only: bool, segment_size: int, preallocate: bool,
                 fsync: bool) -> None:
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
    def create(cls, dirpath: str, metadata: bytes, *, segment_size: int = SEGMENT_SIZE,
               preallocate: bool = True, fsync: bool = True) -> WAL:
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
            head, crc = head_frame(0, 0, state, metadata, 0)
            marker = fr.encode_batch(None, WalSnapshot(), [])
            header, pad, crc = fr.frame_parts(fr.BATCH, marker, crc)
            data = head + header + marker + pad
            fd = new_segment_file(path, data, segment_size, preallocate=preallocate,
                                  fsync=True, flags=os.O_EXCL)
            os.fsync(dir_fd)
            if os.path.isdir(dirpath):
                shutil.rmtree(dirpath)  # holds no segment (checked above): leftovers only
            os.rename(tmpdir, dirpath)
            fsync_dir(os.path.dirname(dirpath))
        except BaseException:
            os.close(dir_fd)
            raise
        segments = [SegmentInfo(0, 0, os.path.join(dirpath, segment_name(0, 0)))]
        wal = cls(dirpath, dir_fd, segments, 0, WalSnapshot(), read_only=False,
                  segment_size=segment_size, preallocate=preallocate, fsync=fsync)
        wal._reading = False
        wal._fd = fd
        wal._offset = len(data)
        wal._crc = crc
        wal._metadata = metadata
        log.info("wal: created %s", dirpath)
        return wal

    @classmethod
    def open(cls, dirpath: str, snap: WalSnapshot | None = None, *, read_only: bool = False,
             segment_size: int = SEGMENT_SIZE, preallocate: bool = True, fsync: bool = True) -> WAL:
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
            start_pos = segment_for_index(segments, snap.index)
            if start_pos < 0:
                raise MissingSegmentError(
                    f"wal: no segment in {dirpath} holds the log after snapshot index "
                    f"{snap.index}: the oldest one, {os.path.basename(segments[0].path)}, "
                    f"starts at index {segments[0].first_index}"
                )
            check_sequence(dirpath, segments[start_pos:])
        except BaseException:
            if dir_fd >= 0:
                os.close(dir_fd)
            raise
        return cls(dirpath, dir_fd, segments, start_pos, snap, read_only=read_only,
                   segment_size=segment_size, preallocate=preallocate, fsync=fsync)

    @classmethod
    def valid_snapshots(cls, dirpath: str, since: int = 0) -> list[WalSnapshot]:
        """Committed snapshot markers at index >= since, oldest first. Restart picks
        the newest snapshot file matching one (Snapshotter.load_newest_available), with
        the oldest file's index as `since`: a marker follows its index's entry, so the
        segments before the one holding `since` are not read. Never modifies files."""
        segments = list_segments(os.path.abspath(dirpath))
        if not segments:
            raise WALNotFoundError(f"wal: no WAL segment in {dirpath}")
        check_sequence(dirpath, segments)
        segments = segments[max(segment_for_index(segments, since), 0):]
        found = replay(segments, WalSnapshot(), want_entries=False, repair=False)
        return [m for m in found.markers if since <= m.index <= found.state.commit]

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
            replay = self._read(want_entries=True)
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

    def _read(self, *, want_entries: bool) -> Replay:
        return replay(self._segments[self._start_pos :], self._start,
                      want_entries=want_entries, repair=not self._read_only)

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

    def save(self, hard_state: HardState | None, entries: Sequence[Entry],
             snapshot: WalSnapshot | None = None) -> bool:
        """Make a Ready's hard state, entries (consecutive) and optional snapshot
        marker durable: one frame, one write, one fdatasync.

        A hard state that changes only `commit` is not worth an fdatasync (a lost
        commit index is learnt again from the leader): with no entries and no
        marker it is written at once without one (as etcd does), so a kill -9
        keeps it (the backend may lag the WAL, and --force-new-cluster keeps only
        committed entries); the next frame's fdatasync makes it durable. Returns
        whether anything was written and synced."""
        with self._lock:
            payload = self._frame_of(hard_state, entries, snapshot)
            if payload is None:
                return False
            self._append(payload)
            if self._offset >= self._segment_size:
                self._cut()
            return True

    def save_begin(self, hard_state: HardState | None, entries: Sequence[Entry],
                   start_sync: Callable[[int], None]) -> bool | None:
        """save() that does not wait for the disk (petcd.wal.fdsync): writes the frame to the
        page cache and calls start_sync(fd) to begin an asynchronous fdatasync of it
        (under the lock, so `fd` is the file written). True: call save_end() when that
        fdatasync completed; the frame is durable only then. False: nothing to wait
        for. None: the WAL is busy on another thread (a snapshot marker, a cut); call
        save() behind it there instead of waiting for the lock."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            payload = self._frame_of(hard_state, entries, None)
            if payload is None:
                return False
            self._append(payload, sync=False)
            if not self._fsync:
                return False
            try:
                start_sync(self._fd)
            except BaseException as err:
                self._failed = err
                raise
            return True
        finally:
            self._lock.release()

    def sync_written(self, fd: int) -> None:
        """The fdatasync for a save_begin() whose start_sync(fd) only started the write
        (fileutil.start_writeback); a segment cut since then synced `fd` already."""
        with self._lock:
            if fd != self._fd:
                return
            try:
                os.fdatasync(fd)
            except BaseException as err:
                self._failed = err  # the page cache can't be trusted any more
                raise

    def save_end(self, error: int, took: float) -> None:
        """The fdatasync save_begin started is done (error: 0, or its errno)."""
        if error:
            err = OSError(error, f"wal: fdatasync: {os.strerror(error)}")
            self._failed = err  # the page cache can't be trusted any more
            raise err
        self._observe_fsync(took)

    @property
    def full(self) -> bool:
        """The segment is full: cut_if_full() (on a thread) starts the next one."""
        return self._offset >= self._segment_size

    def cut_if_full(self) -> None:
        with self._lock:
            self._check_append()
            if self._offset >= self._segment_size:
                self._cut()

    def _frame_of(self, hard_state: HardState | None, entries: Sequence[Entry],
                  snapshot: WalSnapshot | None) -> bytes | None:
        """The frame to write and fdatasync for save(), or None: nothing needs an
        fdatasync (a changed commit index alone is written here, unsynced)."""
        self._check_append()
        n = len(entries)
        if n and entries[-1].index - entries[0].index != n - 1:
            raise ValueError("wal: entries of one save() must have consecutive indexes")
        must_sync = n > 0 or snapshot is not None
        if hard_state is not None:  # (fields, not !=: a frozen dataclass's builds tuples)
            state = self._state
            if hard_state.term != state.term or hard_state.vote != state.vote:
                must_sync = self._state_dirty = True
                self._state = hard_state
            elif hard_state.commit != state.commit:
                self._state, self._state_dirty = hard_state, True
        if not must_sync:
            if self._state_dirty:
                self._append(fr.encode_batch(self._state, None, ()), sync=False)
                self._state_dirty = False
            return None
        payload = fr.encode_batch(self._state if self._state_dirty else None, snapshot, entries)
        self._state_dirty = False
        if n:
            self._last_index = entries[-1].index
        elif snapshot is not None:
            self._last_index = max(self._last_index, snapshot.index)
        return payload

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
        size = len(data := b"".join((header, payload, pad)))  # (cheaper than a pwritev)
        try:
            written = os.pwrite(self._fd, data, self._offset)
            if written < size:
                write_all(self._fd, memoryview(data)[written:], self._offset + written)
            if self._fsync and sync:
                started = time.monotonic()
                os.fdatasync(self._fd)
                self._observe_fsync(time.monotonic() - started)
        except BaseException as err:
            # After a failed write or fdatasync the page cache can't be trusted
            # (it may hold data the disk lost): refuse to go on.
            self._failed = err
            raise
        self._offset += size
        self.bytes_written += size
        self._crc = crc

    def _observe_fsync(self, took: float) -> None:
        if took > SLOW_FSYNC:
            log.warning("wal: slow fdatasync took %.3fs (expected under 1s)", took)
        if self.fsync_observer is not None:
            self.fsync_observer(took)

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
            data, crc = head_frame(seq, first, self._state, self._metadata, self._crc)
            fd = new_segment_file(tmp, data, self._segment_size,
                                  preallocate=self._preallocate, fsync=self._fsync)
            try:
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

    # --- retention ------------------------------------------------------------------

    def release_lock_to(self, index: int) -> None:
        """Allow purge() to delete segments that hold only entries up to `index`
        (call with the index of a snapshot that is safely on disk)."""
        with self._lock:
            pos = segment_for_index(self._segments, index)
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
