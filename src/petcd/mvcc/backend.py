"""The LMDB backend: one environment per member, one write transaction per
applied batch, with the applied Raft index stored in that same transaction.

Layers above (KV store, lease, auth, membership) open their own named
databases with `open_db` and write through `WriteBatch.txn`.
"""

from __future__ import annotations

import contextlib
import os
import struct
import tempfile
import threading
import zlib
from collections.abc import Callable, Iterator
from typing import BinaryIO, Protocol

import lmdb

from petcd.mvcc.types import KVEvent

META_DB = b"meta"
_CONSISTENT_INDEX = b"consistent_index"
_INDEX_TERM = struct.Struct(">QQ")
_COPY_CHUNK = 1 << 20


class BatchListener(Protocol):
    """Something that keeps in-memory state derived from a write batch (the
    KV store's revision, for instance) and must hear how the batch ended."""

    def before_commit(self, batch: WriteBatch) -> None: ...
    def after_commit(self, batch: WriteBatch) -> None: ...
    def after_abort(self, batch: WriteBatch) -> None: ...


class WriteBatch:
    """The single LMDB write transaction of one applied batch.

    `with backend.begin_write() as batch:` commits on a normal exit (the
    commit is synced: durable once the block ends) and aborts if an exception
    escapes. Only one batch may be open at a time.
    """

    __slots__ = ("_backend", "_index", "_open", "events", "txn")

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self.txn: lmdb.Transaction[bytes] = backend.env.begin(write=True)
        # What the KV store changed in this batch, in revision order: the
        # watch layer fans these out once the batch has committed.
        self.events: list[KVEvent] = []
        self._index: tuple[int, int] | None = None
        self._open = True

    def set_consistent_index(self, index: int, term: int) -> None:
        """Record the Raft index and term of the last entry this batch applied."""
        self.txn.put(_CONSISTENT_INDEX, _INDEX_TERM.pack(index, term), db=self._backend.meta_db)
        self._index = (index, term)

    def commit(self) -> None:
        if not self._open:
            raise RuntimeError("write batch already finished")
        backend = self._backend
        try:
            for listener in backend.listeners:
                listener.before_commit(self)
            self.txn.commit()
        except BaseException:
            self._finish_abort()
            raise
        self._open = False
        backend.batch = None
        if self._index is not None:
            backend._consistent_index = self._index
        for listener in backend.listeners:
            listener.after_commit(self)

    def abort(self) -> None:
        if self._open:
            self.txn.abort()
            self._finish_abort()

    def _finish_abort(self) -> None:
        self._open = False
        self._backend.batch = None
        for listener in self._backend.listeners:
            listener.after_abort(self)

    def __enter__(self) -> WriteBatch:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


class ReadGate:
    """Many readers or one closer. Readers are threads other than the one that swaps
    the file (defragment_swap(), restore_from(): the event loop's); close() blocks until
    they are done (call it off that thread) and holds new ones back until open()."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._closed = False

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        with self._cond:
            while self._closed:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            while self._closed:
                self._cond.wait()
            self._closed = True
            while self._readers:
                self._cond.wait()

    def open(self) -> None:
        with self._cond:
            self._closed = False
            self._cond.notify_all()


class Backend:
    """One LMDB environment at `path` (a single data file plus `path-lock`).

    Commits are synced (`sync=True`); `metasync=False` saves one fsync per
    commit but a power loss may then undo the last commit, which is only safe
    once a WAL can replay it.
    """

    def __init__(
        self,
        path: str,
        *,
        map_size: int = 64 << 30,
        max_readers: int = 1024,
        sync: bool = True,
        metasync: bool = True,
    ) -> None:
        self.path = path
        self._options = {
            "map_size": map_size,
            "max_readers": max_readers,
            "sync": sync,
            "metasync": metasync,
        }
        self._db_flags: dict[bytes, tuple[bool, bool]] = {}
        self._defrag_txnid = -1  # LMDB's last txn id when the defragment copy began
        self._dbs: dict[bytes, lmdb._Database] = {}
        self.listeners: list[BatchListener] = []
        self.batch: WriteBatch | None = None
        # Handles become invalid when defragment() reopens the environment;
        # whoever caches them registers here to fetch fresh ones.
        self.reopen_hooks: list[Callable[[], None]] = []
        # Called after restore_from() swapped in another file: whoever keeps state derived
        # from the data (revisions, leases, members...) reloads it here.
        self.restore_hooks: list[Callable[[], None]] = []
        # Reads from threads other than the file-swapping one hold readers.reading();
        # the swapper closes it first (waiting for them).
        self.readers = ReadGate()
        dirname = os.path.dirname(path) or "."
        os.makedirs(dirname, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path + ".defrag")  # leftover of a defragment cut short
        self.env = self._open_env()
        self.env.reader_check()  # free reader slots of processes that died
        self.meta_db = self.open_db(META_DB)
        self._consistent_index = self._read_consistent_index()

    def _open_env(self) -> lmdb.Environment:
        opts = self._options
        return lmdb.open(
            self.path,
            subdir=False,
            map_size=opts["map_size"],
            max_readers=opts["max_readers"],
            max_dbs=64,
            sync=bool(opts["sync"]),
            metasync=bool(opts["metasync"]),
            readahead=False,
        )

    def _read_consistent_index(self) -> tuple[int, int]:
        with self.env.begin() as txn:
            raw = txn.get(_CONSISTENT_INDEX, db=self.meta_db)
        if raw is None:
            return (0, 0)
        index, term = _INDEX_TERM.unpack(raw)
        return (index, term)

    def open_db(
        self, name: bytes, *, dupsort: bool = False, dupfixed: bool = False
    ) -> lmdb._Database:
        """Open (creating if needed) the named database. Opening the same
        name again returns the same handle. Layers open theirs at startup:
        not while a batch is open (LMDB would tie a new handle to that
        batch's fate, or wait for its write lock)."""
        db = self._dbs.get(name)
        if db is not None:
            if self._db_flags[name] != (dupsort, dupfixed):
                raise ValueError(f"database {name!r} already opened with other flags")
            return db
        if self.batch is not None:
            raise RuntimeError("open databases before applying batches")
        db = self.env.open_db(name, dupsort=dupsort, dupfixed=dupfixed)
        self._dbs[name] = db
        self._db_flags[name] = (dupsort, dupfixed)
        return db

    def existing_db(self, name: bytes, txn: lmdb.Transaction[bytes]) -> lmdb._Database | None:
        """A handle on a named database for a reader, or None if the file has none (safe
        while a batch is open: nothing is created)."""
        db = self._dbs.get(name)
        if db is not None:
            return db
        if txn.get(name) is None:  # named databases are listed in the main database
            return None
        return self.env.open_db(name, txn=txn, create=False)

    def begin_write(self) -> WriteBatch:
        """THE write transaction of one applied batch (a context manager)."""
        if self.batch is not None:
            raise RuntimeError("a write batch is already open")
        self.batch = WriteBatch(self)
        return self.batch

    def read(self) -> lmdb.Transaction[bytes]:
        """A read-only snapshot of the last committed state (a context manager)."""
        return self.env.begin()

    def consistent_index(self) -> tuple[int, int]:
        """(Raft index, term) of the last entry applied by a committed batch;
        (0, 0) on a fresh backend."""
        return self._consistent_index

    def size(self) -> int:
        """Bytes the data file takes (StatusResponse.dbSize)."""
        return os.stat(self.path).st_size

    def size_in_use(self) -> int:
        """Bytes of pages holding data (StatusResponse.dbSizeInUse): the
        pages of every database plus LMDB's two meta pages. Free pages that
        LMDB will reuse are not counted."""
        pages = 2
        with self.env.begin() as txn:
            stat = txn.stat()
            pages += stat["branch_pages"] + stat["leaf_pages"] + stat["overflow_pages"]
            for db in self._all_dbs(txn).values():
                st = txn.stat(db)
                pages += st["branch_pages"] + st["leaf_pages"] + st["overflow_pages"]
        return pages * stat["psize"]

    def _all_dbs(self, txn: lmdb.Transaction[bytes]) -> dict[bytes, lmdb._Database]:
        """Every named database in the file, opened ones and the others."""
        names = [key for key, _ in txn.cursor()]
        dbs: dict[bytes, lmdb._Database] = {}
        for name in names:
            db = self._dbs.get(name)
            if db is None:
                db = self.env.open_db(name, txn=txn, create=False)
            dbs[name] = db
        return dbs

    def hash(self) -> int:
        """CRC-32 of every database's name, keys and values, in order, without
        the consistent index (which differs between members applying the same
        log at different speeds). Maintenance.Hash."""
        crc = 0
        with self.env.begin() as txn:
            for name, db in sorted(self._all_dbs(txn).items()):
                crc = zlib.crc32(name, crc)
                for key, value in txn.cursor(db):
                    if db is self.meta_db and key == _CONSISTENT_INDEX:
                        continue
                    crc = zlib.crc32(value, zlib.crc32(key, crc))
        return crc

    def snapshot_to(self, fileobj: BinaryIO) -> int:
        """Write a consistent copy of the whole backend (a valid LMDB data
        file, openable with `Backend`) to `fileobj`; returns bytes written.
        Safe while batches are applied (it copies one read snapshot)."""
        with tempfile.TemporaryFile(dir=os.path.dirname(self.path) or ".") as tmp:
            self.env.copyfd(tmp.fileno())
            tmp.seek(0)
            written = 0
            while chunk := tmp.read(_COPY_CHUNK):
                fileobj.write(chunk)
                written += len(chunk)
        return written

    def defragment(self) -> None:
        """Rewrite the file compactly (free pages dropped) and swap it in
        (Maintenance.Defragment). Database handles are renewed; listeners in
        `reopen_hooks` are told to fetch them again.

        Needs the backend to itself: no batch open and no read transaction
        in use in any thread (those would fail with lmdb.Error); run it on
        the apply thread between batches with reads held off. A server that
        wants reads to go on during the copy calls the two halves itself."""
        self.defragment_copy()
        self.defragment_swap()

    def defragment_copy(self) -> None:
        """First half of defragment(): the compact copy, beside the file. Reads
        may go on meanwhile; no batch may commit until defragment_swap() (it
        would be missing from the copy)."""
        if self.batch is not None:
            raise RuntimeError("cannot defragment while a write batch is open")
        fd = os.open(self.path + ".defrag", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            self._defrag_txnid = self.env.info()["last_txnid"]
            self.env.copyfd(fd, compact=True)
            os.fsync(fd)
        finally:
            os.close(fd)

    def defragment_swap(self) -> None:
        """Second half of defragment(): put the copy in place of the file and
        reopen. Needs no batch open and no read transaction in any thread."""
        if self.batch is not None:
            raise RuntimeError("cannot defragment while a write batch is open")
        tmp_path = self.path + ".defrag"
        if not os.path.exists(tmp_path):
            raise RuntimeError("defragment_swap() without defragment_copy()")
        if self.env.info()["last_txnid"] != self._defrag_txnid:
            os.unlink(tmp_path)  # the copy lacks a commit made after it began
            raise RuntimeError("a write batch committed during defragment; copy discarded")
        self._replace_file(tmp_path)
        for hook in self.reopen_hooks:
            hook()

    def _replace_file(self, path: str) -> None:
        """Close the environment, move the LMDB file at `path` into place (durably), and
        reopen it with the same named databases. Cached DB handles are stale after this."""
        self.env.close()
        os.replace(path, self.path)
        dir_fd = os.open(os.path.dirname(self.path) or ".", os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        self.env = self._open_env()
        flags = self._db_flags
        self._dbs = {}
        self._db_flags = {}
        self.meta_db = self.open_db(META_DB)
        for name, (dupsort, dupfixed) in flags.items():
            self.open_db(name, dupsort=dupsort, dupfixed=dupfixed)

    def restore_from(self, path: str) -> None:
        """Replace the whole backend by the LMDB file at `path` (a snapshot a follower
        received from its leader), moving it into place; then `reopen_hooks` and
        `restore_hooks` run. Needs the backend to itself, as defragment() does."""
        if self.batch is not None:
            raise RuntimeError("cannot restore while a write batch is open")
        self._replace_file(path)
        self._consistent_index = self._read_consistent_index()
        for hook in self.reopen_hooks:
            hook()
        for hook in self.restore_hooks:
            hook()

    def sync(self) -> None:
        """Flush everything committed to disk (commits may not sync the meta page)."""
        self.env.sync(True)

    def close(self) -> None:
        if self.batch is not None:
            self.batch.abort()
        self.env.close()

