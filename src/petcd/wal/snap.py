"""Snapshot files under <data-dir>/member/snap.

`<term:016x>-<index:016x>.snap` holds one Raft Snapshot (metadata and the
state machine's snapshot data) in our own format:

    8 bytes b"PETCDSNP" | u32 version | u32 crc | u64 payload length | payload
    payload: u64 index | u64 term | u32 voters | u32 learners | u64 ids... | data

`crc` is CRC-32 of the payload. Files are written to a temporary name,
fsync'ed and renamed, so a crash never leaves a half-written `.snap`. A file
that does not read back intact is renamed to `<name>.broken`, logged, and
skipped for the next older one.

`<index:016x>.snap.db` is a backend (LMDB) file received from the leader,
stored the same crash-safe way before the server swaps it in.
"""

from __future__ import annotations

import logging
import os
import re
import struct
import tempfile
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from typing import BinaryIO

from petcd.raft.types import ConfState, Snapshot, SnapshotMetadata
from petcd.wal.errors import CorruptSnapshotError
from petcd.wal.fileutil import fsync_dir, write_all, write_file_atomic
from petcd.wal.frame import WalSnapshot

log = logging.getLogger("petcd.wal.snap")

MAGIC = b"PETCDSNP"
VERSION = 1
_HEAD = struct.Struct("<8sIIQ")  # magic, version, crc, payload length
_META = struct.Struct("<QQII")  # index, term, voters, learners
_SNAP_NAME = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.snap$")
_DB_NAME = re.compile(r"^([0-9a-f]{16})\.snap\.db$")
COPY_CHUNK = 1 << 20


def snap_name(term: int, index: int) -> str:
    return f"{term:016x}-{index:016x}.snap"


def db_name(index: int) -> str:
    return f"{index:016x}.snap.db"


def encode_snapshot(snapshot: Snapshot) -> list[bytes]:
    """The file's bytes, in parts (the data is not copied)."""
    md = snapshot.metadata
    cs = md.conf_state
    ids = struct.pack(f"<{len(cs.voters) + len(cs.learners)}Q", *cs.voters, *cs.learners)
    meta = _META.pack(md.index, md.term, len(cs.voters), len(cs.learners)) + ids
    crc = zlib.crc32(snapshot.data, zlib.crc32(meta))
    head = _HEAD.pack(MAGIC, VERSION, crc, len(meta) + len(snapshot.data))
    return [head, meta, snapshot.data]


def read_snap(path: str) -> Snapshot:
    """Read one snapshot file; CorruptSnapshotError if it is not intact."""
    with open(path, "rb") as f:
        buf = f.read()
    if len(buf) < _HEAD.size:
        raise CorruptSnapshotError(path, f"only {len(buf)} bytes")
    magic, version, crc, length = _HEAD.unpack_from(buf)
    if magic != MAGIC:
        raise CorruptSnapshotError(path, "not a petcd snapshot file")
    if version != VERSION:
        raise CorruptSnapshotError(path, f"unknown format version {version}")
    if _HEAD.size + length != len(buf):
        raise CorruptSnapshotError(path, f"{len(buf)} bytes, header says {_HEAD.size + length}")
    payload = memoryview(buf)[_HEAD.size :]
    if zlib.crc32(payload) != crc:
        raise CorruptSnapshotError(path, "crc mismatch")
    try:
        index, term, nv, nl = _META.unpack_from(payload)
        ids = struct.unpack_from(f"<{nv + nl}Q", payload, _META.size)
    except struct.error as err:
        raise CorruptSnapshotError(path, f"bad metadata: {err}") from err
    data = bytes(payload[_META.size + 8 * (nv + nl) :])
    conf = ConfState(tuple(ids[:nv]), tuple(ids[nv:]))
    return Snapshot(SnapshotMetadata(index, term, conf), data)


class DbReceiver:
    """Streams a backend file into the snap directory; visible under its
    final name only after commit() (written, fsync'ed, renamed)."""

    def __init__(self, snap_dir: str, index: int,
                 observe: Callable[[str, float], None] | None = None) -> None:
        self._observe = observe
        self._started = time.monotonic()
        self.index = index
        self.path = os.path.join(snap_dir, db_name(index))
        self._dir = snap_dir
        fd, self._tmp = tempfile.mkstemp(prefix=db_name(index) + ".", suffix=".tmp", dir=snap_dir)
        self._fd = fd
        self.size = 0

    def write(self, chunk: bytes | memoryview) -> None:
        write_all(self._fd, chunk, self.size)
        self.size += len(chunk)

    def write_many(self, chunks: Iterable[bytes | memoryview]) -> None:
        for chunk in chunks:
            self.write(chunk)

    def commit(self) -> str:
        try:
            started = time.monotonic()
            os.fsync(self._fd)
        except BaseException:
            self.abort()
            raise
        if self._observe is not None:
            self._observe("db_fsync", time.monotonic() - started)
        os.close(self._fd)
        self._fd = -1
        os.rename(self._tmp, self.path)
        fsync_dir(self._dir)
        if self._observe is not None:
            self._observe("db_save_total", time.monotonic() - self._started)
        log.info("snap: saved backend snapshot %s (%d bytes)", self.path, self.size)
        return self.path

    def abort(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
            os.unlink(self._tmp)


class Snapshotter:
    """The snapshot directory of a member."""

    def __init__(self, dirpath: str) -> None:
        self._dir = os.path.abspath(dirpath)
        os.makedirs(self._dir, exist_ok=True)
        # Timings by name (marshal, fsync, total; db_fsync, db_save_total) for metrics.
        self.observe: Callable[[str, float], None] | None = None

    @property
    def dir(self) -> str:
        return self._dir

    def save_snap(self, snapshot: Snapshot) -> str | None:
        """Write `snapshot` durably; returns its path (None for an empty one)."""
        if snapshot.is_empty:
            return None
        md = snapshot.metadata
        path = os.path.join(self._dir, snap_name(md.term, md.index))
        started = time.monotonic()
        parts = encode_snapshot(snapshot)
        observe = self.observe
        if observe is not None:
            observe("marshal", time.monotonic() - started)
        write_file_atomic(path, parts, on_fsync=None if observe is None else (
            lambda took: observe("fsync", took)))
        if observe is not None:
            observe("total", time.monotonic() - started)
        log.info("snap: saved %s", path)
        return path

    def snap_names(self) -> list[str]:
        """Snapshot file names, newest first."""
        names = [n for n in os.listdir(self._dir) if _SNAP_NAME.match(n)]
        names.sort(reverse=True)
        return names

    def oldest_index(self) -> int:
        """The index of the oldest snapshot file (0 if there is none)."""
        names = self.snap_names()
        match = _SNAP_NAME.match(names[-1]) if names else None
        return int(match.group(2), 16) if match else 0

    def load(self) -> Snapshot | None:
        """The newest intact snapshot, or None."""
        return self._load_matching(lambda _: True)

    def load_newest_available(self, wal_snaps: Sequence[WalSnapshot]) -> Snapshot | None:
        """The newest intact snapshot that the WAL has a marker for, or None."""
        wanted = {(s.index, s.term) for s in wal_snaps}
        return self._load_matching(lambda s: (s.metadata.index, s.metadata.term) in wanted)

    def _load_matching(self, match: Callable[[Snapshot], bool]) -> Snapshot | None:
        self._remove_temporaries()
        for name in self.snap_names():
            path = os.path.join(self._dir, name)
            try:
                snap = read_snap(path)
            except (CorruptSnapshotError, OSError) as err:
                log.warning("snap: skipping unreadable snapshot: %s", err)
                try:
                    os.rename(path, path + ".broken")
                except OSError as rename_err:
                    log.warning("snap: cannot rename %s aside: %s", path, rename_err)
                continue
            if match(snap):
                return snap
        return None

    def _remove_temporaries(self) -> None:
        # left by a crash while writing a snapshot or receiving a backend file
        for name in os.listdir(self._dir):
            if name.endswith(".tmp"):
                os.unlink(os.path.join(self._dir, name))

    def purge(self, max_snapshots: int) -> list[str]:
        """Delete all but the newest `max_snapshots` .snap files (0: keep all)."""
        if max_snapshots <= 0:
            return []
        removed = [os.path.join(self._dir, n) for n in self.snap_names()[max_snapshots:]]
        for path in removed:
            os.unlink(path)
        if removed:
            fsync_dir(self._dir)
            log.info("snap: purged %s", ", ".join(removed))
        return removed

    # --- backend files received from the leader ---------------------------------------

    def receive_db(self, index: int) -> DbReceiver:
        """Start receiving the backend file of the snapshot at `index`."""
        return DbReceiver(self._dir, index, self.observe)

    def save_db_from(self, source: BinaryIO | Iterable[bytes], index: int) -> tuple[str, int]:
        """Copy a backend file from a binary stream or an iterable of chunks
        into `<index>.snap.db`; returns (path, bytes)."""
        receiver = self.receive_db(index)
        try:
            if hasattr(source, "read"):
                stream: BinaryIO = source  # type: ignore[assignment]
                while chunk := stream.read(COPY_CHUNK):
                    receiver.write(chunk)
            else:
                for chunk in source:
                    receiver.write(chunk)
        except BaseException:
            receiver.abort()
            raise
        return receiver.commit(), receiver.size

    def db_file_path(self, index: int) -> str | None:
        path = os.path.join(self._dir, db_name(index))
        return path if os.path.exists(path) else None

    def release_snap_dbs(self, index: int) -> list[str]:
        """Delete received backend files of snapshots older than `index`."""
        removed = []
        for name in os.listdir(self._dir):
            m = _DB_NAME.match(name)
            if m and int(m.group(1), 16) < index:
                path = os.path.join(self._dir, name)
                os.unlink(path)
                removed.append(path)
        if removed:
            fsync_dir(self._dir)
        return removed


def iter_file(path: str, chunk_size: int = COPY_CHUNK) -> Iterable[bytes]:
    """The chunks of a file, for streaming a backend file to a follower."""
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            yield chunk
