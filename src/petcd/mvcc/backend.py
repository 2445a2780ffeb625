"""The LMDB backend: one environment per member and ONE open LMDB write transaction
holding the applied state.

Applied batches (`begin_write()`) end in that transaction, each recording the applied
Raft index and term in it; the transaction is committed (synced) when `batch_limit`
operations have been applied since the last commit, or when the owner calls `commit()`
(the server: every --backend-batch-interval, and before anything reads the file from
elsewhere: hashes, snapshots, defragment). Reads of the applied state (`read()`) go
through that same transaction on the thread that applies, so a read never misses an
applied write; another thread may read only when nothing applied is uncommitted, and
otherwise takes `read_snapshot()` from the applying thread. A crash loses at most what
was not committed: the WAL has it, and replay from the stored index repairs it.

With `background_commit` the synced commit of the batch interval runs on the backend's
own thread (`commit_soon()`), not on the applying one: LMDB ties a write transaction's
lock to the thread that began it, so that thread begins, commits and aborts every
top-level write transaction, and the applying thread only writes and reads through it
in between. While such a commit is in flight nothing applied is readable except through
the file it is writing, so every read, write and commit of the applying thread first
waits for it (`settle()`): no read ever sees less than what was applied.

Layers above (KV store, lease, auth, membership) open their own named
databases with `open_db` and write through `WriteBatch.txn`.
"""

from __future__ import annotations

import contextlib
import os
import struct
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import BinaryIO, Protocol

import lmdb

from petcd.mvcc.gate import ReadGate
from petcd.mvcc.types import KVEvent

META_DB = b"meta"
_CONSISTENT_INDEX = b"consistent_index"
_INDEX_TERM = struct.Struct(">QQ")
_COPY_CHUNK = 1 << 20


class BatchListener(Protocol):
    """Something that keeps in-memory state derived from applied batches (the KV
    store's revision, for instance) and must hear how each batch ended.

    `before_end` may still write into the batch; after `after_end` the batch's changes
    are the applied state (what reads see), committed to disk or not yet."""

    def before_end(self, batch: WriteBatch) -> None: ...
    def after_end(self, batch: WriteBatch) -> None: ...
    def after_abort(self, batch: WriteBatch) -> None: ...


class BackendFailed(RuntimeError):
    """An applied batch was lost from memory (a batch failed while earlier ones were
    not committed yet, or a commit failed): only a restart (WAL replay) repairs it."""


class WriteBatch:
    """The writes of one applied batch, in the backend's open write transaction.

    `with backend.begin_write() as batch:` ends the batch on a normal exit (its
    changes become the applied state; the backend commits to disk per its batching)
    and aborts if an exception escapes. Only one batch may be open at a time.
    """

    __slots__ = ("_backend", "_index", "_open", "events", "ops", "txn")

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self.txn: lmdb.Transaction[bytes] = backend._write_txn()
        # What the KV store changed in this batch, in revision order: the
        # watch layer fans these out once the batch has ended.
        self.events: list[KVEvent] = []
        self._index: tuple[int, int] | None = None
        self._open = True
        self.ops = 1  # operations it counts for --backend-batch-limit

    def set_consistent_index(self, index: int, term: int) -> None:
        """Record the Raft index and term of the last entry this batch applied."""
        self.txn.put(_CONSISTENT_INDEX, _INDEX_TERM.pack(index, term), db=self._backend.meta_db)
        self._index = (index, term)

    def commit(self) -> None:
        """End the batch (the name says what it means with `batch_limit` 1: durable)."""
        if not self._open:
            raise RuntimeError("write batch already finished")
        backend = self._backend
        try:
            for listener in backend.listeners:
                listener.before_end(self)
        except BaseException:
            self.abort()
            raise
        self._open = False
        backend.batch = None
        if self._index is not None:
            backend._consistent_index = self._index
        if backend._uncommitted + self.ops >= backend.batch_limit:
            backend.commit()  # (raises BackendFailed if it fails: nothing to undo)
        else:
            backend._uncommitted += self.ops  # (never > 0 with limit 1: other threads read)
        for listener in backend.listeners:
            listener.after_end(self)

    def abort(self) -> None:
        if not self._open:
            return
        self._open = False
        backend = self._backend
        backend.batch = None
        txn, backend._txn = backend._txn, None
        if txn is not None:
            backend._end(txn, commit=False)
        if backend._uncommitted:
            # Earlier applied batches went with it: memory no longer matches anything.
            backend.failed = "an applied batch failed before earlier ones were committed"
        for listener in backend.listeners:
            listener.after_abort(self)

    def __enter__(self) -> WriteBatch:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


class Backend:
    """One LMDB environment at `path` (a single data file plus `path-lock`).

    Commits are synced (`sync=True`); `metasync=False` saves one fsync per
    commit but a power loss may then undo the last commit, which is only safe
    once a WAL can replay it. `batch_limit`: operations applied before the open
    transaction is committed (1: every batch; more only with a WAL to replay).
    """

    def __init__(
        self,
        path: str,
        *,
        map_size: int = 64 << 30,
        max_readers: int = 1024,
        sync: bool = True,
        metasync: bool = True,
        batch_limit: int = 1,
        background_commit: bool = False,
    ) -> None:
        self.path = path
        self.batch_limit = max(1, batch_limit)
        # The thread that begins and ends every top-level write transaction (None:
        # the applying thread does, and commits block it), and the commit it runs now.
        self._committer: ThreadPoolExecutor | None = (
            ThreadPoolExecutor(1, thread_name_prefix="petcd-backend")
            if background_commit else None)
        self._in_flight: Future[float] | None = None
        self._in_flight_index = (0, 0)
        # The applied state: committed file + this open write transaction (None when
        # everything applied is committed); `_owner` is the thread that began it.
        self._txn: lmdb.Transaction[bytes] | None = None
        self._owner = 0
        self._uncommitted = 0  # operations of ended batches not committed yet
        self.failed = ""  # why applied state was lost (BackendFailed), or ""
        # Called after each commit with its duration in seconds (metrics, the quota).
        self.commit_hooks: list[Callable[[float], None]] = []
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
        self._committed_index = self._consistent_index

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

    def _write_txn(self) -> lmdb.Transaction[bytes]:
        """The open write transaction (begun now if everything is committed)."""
        if self._in_flight is not None:
            self.settle()
        if self.failed:
            raise BackendFailed(self.failed)
        txn = self._txn
        if txn is None:
            if self._committer is None:
                txn = self.env.begin(write=True)
            else:
                txn = self._committer.submit(self.env.begin, write=True).result()
            self._txn = txn
            self._owner = threading.get_ident()
        elif self._owner != threading.get_ident():
            raise RuntimeError("the backend's write transaction belongs to another thread")
        return txn

    def commit(self) -> bool:
        """Commit (synced) what the ended batches applied; returns whether there was
        anything. On the thread that applies, with no batch open."""
        if self._in_flight is not None:
            self.settle()
        txn = self._hand_over()
        if txn is None:
            return False
        started = time.perf_counter()
        try:
            if self._committer is None:
                txn.commit()
            else:
                self._committer.submit(txn.commit).result()
        except BaseException as e:
            self.failed = f"backend commit failed: {e}"
            raise BackendFailed(self.failed) from e
        self._committed_index = self._consistent_index
        took = time.perf_counter() - started
        for hook in self.commit_hooks:
            hook(took)
        return True

    def commit_soon(self, done: Callable[[], object] | None = None) -> bool:
        """commit() on the backend's thread (with `background_commit`; else commit()):
        returns at once, whether there was anything; `done()` is called on the backend's
        thread when the commit ended (then call settle() on the applying thread). Until
        then the applying thread's next read, write or commit waits for it."""
        if self._committer is None or self._in_flight is not None:
            return self.commit()
        txn = self._hand_over()
        if txn is None:
            return False
        self._in_flight_index = self._consistent_index
        self._in_flight = self._committer.submit(self._commit_on_thread, txn, done)
        return True

    @staticmethod
    def _commit_on_thread(txn: lmdb.Transaction[bytes], done: Callable[[], object] | None
                          ) -> float:
        started = time.perf_counter()
        try:
            txn.commit()
            return time.perf_counter() - started
        finally:
            if done is not None:
                with contextlib.suppress(RuntimeError):  # (its event loop has closed)
                    done()

    def _hand_over(self) -> lmdb.Transaction[bytes] | None:
        """The open write transaction, taken for a commit (None: nothing to commit)."""
        txn = self._txn
        if txn is None:
            return None
        if self.batch is not None:
            raise RuntimeError("cannot commit while a write batch is open")
        if self._owner != threading.get_ident():
            raise RuntimeError("commit() from another thread than the one applying")
        self._txn = None
        self._uncommitted = 0
        return txn

    @property
    def committing(self) -> bool:
        """A commit_soon() is in flight (or ended and not settled yet)."""
        return self._in_flight is not None

    def settle(self) -> None:
        """On the applying thread: wait for the commit_soon() in flight, if any, and take
        its outcome (BackendFailed if it failed: what it held exists only in the WAL)."""
        fut = self._in_flight
        if fut is None:
            return
        try:
            took = fut.result()
        except BaseException as e:
            self._in_flight = None
            if not self.failed:
                self.failed = f"backend commit failed: {e}"
            raise BackendFailed(self.failed) from e
        self._in_flight = None
        self._committed_index = self._in_flight_index
        for hook in self.commit_hooks:
            hook(took)

    def _end(self, txn: lmdb.Transaction[bytes], *, commit: bool) -> None:
        """Commit or abort a top-level write transaction on the thread that began it."""
        end = txn.commit if commit else txn.abort
        if self._committer is None:
            end()
        else:
            self._committer.submit(end).result()

    @property
    def uncommitted(self) -> int:
        """Operations applied since the last commit."""
        return self._uncommitted

    def committed_index(self) -> tuple[int, int]:
        """(Raft index, term) in the committed file: where replay starts after a crash."""
        return self._committed_index

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
        self.settle()
        if self.batch is not None or self._txn is not None:
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

    def read_txn(self) -> tuple[lmdb.Transaction[bytes], bool]:
        """(txn, owned): the applied state. While applied changes are uncommitted, that
        is the open write transaction itself (owned=False: do not end it, do not keep it
        past this synchronous step), readable only on the applying thread between
        batches; otherwise a read-only snapshot of the file that the caller ends
        (owned=True). Other threads take `read_snapshot()` on the applying thread."""
        if self.failed:
            raise BackendFailed(self.failed)
        if self._uncommitted or self._in_flight is not None:
            if self._owner != threading.get_ident() or self.batch is not None:
                raise RuntimeError("applied changes are not committed yet: read them on the "
                                   "applying thread between batches, or take read_snapshot()")
            self.settle()  # (a commit in flight: the file has it all once it ended)
            if self._uncommitted:
                return self._txn, False  # type: ignore[return-value]
        return self.env.begin(), True

    @contextlib.contextmanager
    def read(self) -> Iterator[lmdb.Transaction[bytes]]:
        """The applied state, as `read_txn()`, as a context manager."""
        txn, owned = self.read_txn()
        try:
            yield txn
        finally:
            if owned:
                txn.abort()

    def read_snapshot(self) -> lmdb.Transaction[bytes]:
        """From the applying thread: commit, then a read-only snapshot of the applied
        state that any thread may read (and must end: abort())."""
        self.commit()
        return self.env.begin()

    def consistent_index(self) -> tuple[int, int]:
        """(Raft index, term) of the last entry applied by an ended batch (committed
        or not); (0, 0) on a fresh backend."""
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

    def hash(self, txn: lmdb.Transaction[bytes] | None = None) -> int:
        """CRC-32 of every database's name, keys and values, in order, without
        the consistent index (which differs between members applying the same
        log at different speeds). Maintenance.Hash. `txn`: a `read_snapshot()`
        (any thread), else the applied state via `read()`."""
        crc = 0
        with contextlib.nullcontext(txn) if txn is not None else self.read() as t:
            for name, db in sorted(self._all_dbs(t).items()):
                crc = zlib.crc32(name, crc)
                for key, value in t.cursor(db):
                    if db is self.meta_db and key == _CONSISTENT_INDEX:
                        continue
                    crc = zlib.crc32(value, zlib.crc32(key, crc))
        return crc

    def snapshot_to(self, fileobj: BinaryIO) -> int:
        """Write a consistent copy of the whole backend (a valid LMDB data
        file, openable with `Backend`) to `fileobj`; returns bytes written.
        Safe while batches are applied (it copies one read snapshot of the
        committed file: commit() first on the applying thread)."""
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
        self.settle()
        if self.batch is not None or self._txn is not None:
            raise RuntimeError("cannot defragment with a write batch open or uncommitted")
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
        self.settle()
        if self.batch is not None or self._txn is not None:
            raise RuntimeError("cannot defragment with a write batch open or uncommitted")
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
        self.commit()
        self._replace_file(path)
        self._consistent_index = self._committed_index = self._read_consistent_index()
        for hook in self.reopen_hooks:
            hook()
        for hook in self.restore_hooks:
            hook()

    def sync(self) -> None:
        """Flush everything committed to disk (commits may not sync the meta page).
        Any thread; commit() first on the applying one for the applied state."""
        self.env.sync(True)

    def close(self, *, commit: bool = True) -> None:
        """Commit what was applied (saves replaying it) and close. commit=False drops
        what is not committed, as a crash would (tests)."""
        if self.batch is not None:
            self.batch.abort()
        with contextlib.suppress(BackendFailed):
            self.settle()  # (a failed one: the WAL replays it)
        if self._txn is not None:
            if commit and self._owner == threading.get_ident() and not self.failed:
                self.commit()
            else:
                txn, self._txn = self._txn, None
                self._end(txn, commit=False)  # (another thread's: the WAL replays it)
        if self._committer is not None:
            self._committer.shutdown()
        self.env.close()

