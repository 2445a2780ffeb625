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
own thread (`commit_soon()`, mvcc/committer.py), not on the applying one. While such a
commit is in flight nothing applied is readable except through the file it is writing,
so every read, write and commit of the applying thread first waits for it (`settle()`):
no read ever sees less than what was applied.

The file itself (the LMDB environment, its named databases, hashes, copies, defragment)
is mvcc/datafile.py's; this module is the one owner of the applied state and says when
the whole-file operations may run. Layers above (KV store, lease, auth, membership) open
their own named databases with `open_db` and write through `WriteBatch.txn`.
"""

from __future__ import annotations

import contextlib
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import BinaryIO, Protocol

import lmdb

from petcd.mvcc.committer import Committer
from petcd.mvcc.datafile import DataFile
from petcd.mvcc.gate import ReadGate
from petcd.mvcc.types import KVEvent

_CONSISTENT_INDEX = b"consistent_index"
_INDEX_TERM = struct.Struct(">QQ")


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
        # (positional flags, py-lmdb's defaults (dupdata, overwrite, append): keyword
        # arguments cost a dict per call, and this runs per applied batch)
        self.txn.put(_CONSISTENT_INDEX, _INDEX_TERM.pack(index, term), True, True, False,
                     self._backend.file.meta_db)
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
            backend._committer.end(txn, commit=False)
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
    """The applied state of one LMDB environment at `path` (mvcc/datafile.py: `sync`
    and `metasync` are its). `batch_limit`: operations applied before the open
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
        # Begins and ends every top-level write transaction: on the backend's thread
        # with background_commit, else on the applying one (and commits block it).
        self._committer = Committer(background_commit)
        self._in_flight_index = (0, 0)  # what the commit in flight holds
        # The applied state: committed file + this open write transaction (None when
        # everything applied is committed); `_owner` is the thread that began it.
        self._txn: lmdb.Transaction[bytes] | None = None
        self._owner = 0
        self._uncommitted = 0  # operations of ended batches not committed yet
        self.failed = ""  # why applied state was lost (BackendFailed), or ""
        # Called after each commit with its duration in seconds (metrics, the quota).
        self.commit_hooks: list[Callable[[float], None]] = []
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
        self.file = DataFile(path, map_size=map_size, max_readers=max_readers, sync=sync,
                             metasync=metasync)
        self._consistent_index = self._read_consistent_index()
        self._committed_index = self._consistent_index

    @property
    def env(self) -> lmdb.Environment:
        """The LMDB environment (a new one after defragment or restore_from)."""
        return self.file.env

    @property
    def meta_db(self) -> lmdb._Database:
        """The backend's own bookkeeping database (the consistent index...)."""
        return self.file.meta_db

    def _read_consistent_index(self) -> tuple[int, int]:
        file = self.file
        with file.env.begin() as txn:
            raw = txn.get(_CONSISTENT_INDEX, db=file.meta_db)
        if raw is None:
            return (0, 0)
        index, term = _INDEX_TERM.unpack(raw)
        return (index, term)

    def _write_txn(self) -> lmdb.Transaction[bytes]:
        """The open write transaction (begun now if everything is committed)."""
        if self._committer.in_flight is not None:
            self.settle()
        if self.failed:
            raise BackendFailed(self.failed)
        txn = self._txn
        if txn is None:
            txn = self._committer.begin(self.file.env)
            self._txn = txn
            self._owner = threading.get_ident()
        elif self._owner != threading.get_ident():
            raise RuntimeError("the backend's write transaction belongs to another thread")
        return txn

    def commit(self) -> bool:
        """Commit (synced) what the ended batches applied; returns whether there was
        anything. On the thread that applies, with no batch open."""
        if self._committer.in_flight is not None:
            self.settle()
        txn = self._hand_over()
        if txn is None:
            return False
        started = time.perf_counter()
        try:
            self._committer.end(txn, commit=True)
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
        committer = self._committer
        if not committer.background or committer.in_flight is not None:
            return self.commit()
        txn = self._hand_over()
        if txn is None:
            return False
        self._in_flight_index = self._consistent_index
        committer.start(txn, done)
        return True

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
        return self._committer.in_flight is not None

    def settle(self) -> None:
        """On the applying thread: wait for the commit_soon() in flight, if any, and take
        its outcome (BackendFailed if it failed: what it held exists only in the WAL)."""
        if self._committer.in_flight is None:
            return
        try:
            took = self._committer.settle()
        except BaseException as e:
            if not self.failed:
                self.failed = f"backend commit failed: {e}"
            raise BackendFailed(self.failed) from e
        assert took is not None
        self._committed_index = self._in_flight_index
        for hook in self.commit_hooks:
            hook(took)

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
        if not self.file.is_open(name):
            self.settle()
            if self.batch is not None or self._txn is not None:
                raise RuntimeError("open databases before applying batches")
        return self.file.open_db(name, dupsort=dupsort, dupfixed=dupfixed)

    def existing_db(self, name: bytes, txn: lmdb.Transaction[bytes]) -> lmdb._Database | None:
        """A handle on a named database for a reader, or None if the file has none (safe
        while a batch is open: nothing is created)."""
        return self.file.existing_db(name, txn)

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
        if self._uncommitted or self._committer.in_flight is not None:
            if self._owner != threading.get_ident() or self.batch is not None:
                raise RuntimeError("applied changes are not committed yet: read them on the "
                                   "applying thread between batches, or take read_snapshot()")
            self.settle()  # (a commit in flight: the file has it all once it ended)
            if self._uncommitted:
                return self._txn, False  # type: ignore[return-value]
        return self.file.env.begin(), True

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
        return self.file.env.begin()

    def consistent_index(self) -> tuple[int, int]:
        """(Raft index, term) of the last entry applied by an ended batch (committed
        or not); (0, 0) on a fresh backend."""
        return self._consistent_index

    # The whole file (mvcc/datafile.py), at moments the applied state allows.

    def size(self) -> int:
        """Bytes the data file takes (StatusResponse.dbSize)."""
        return self.file.size()

    def size_in_use(self) -> int:
        """Bytes of pages holding data (StatusResponse.dbSizeInUse)."""
        return self.file.size_in_use()

    def hash(self, txn: lmdb.Transaction[bytes] | None = None) -> int:
        """CRC-32 of every database's name, keys and values, in order, without
        the consistent index (which differs between members applying the same
        log at different speeds). Maintenance.Hash. `txn`: a `read_snapshot()`
        (any thread), else the applied state via `read()`."""
        with contextlib.nullcontext(txn) if txn is not None else self.read() as t:
            return self.file.hash(t, skip_meta=_CONSISTENT_INDEX)

    def snapshot_to(self, fileobj: BinaryIO) -> int:
        """Write a consistent copy of the whole backend (a valid LMDB data
        file, openable with `Backend`) to `fileobj`; returns bytes written.
        Safe while batches are applied (it copies one read snapshot of the
        committed file: commit() first on the applying thread)."""
        return self.file.copy_to(fileobj)

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
        self._all_committed("defragment")
        self.file.defragment_copy()

    def defragment_swap(self) -> None:
        """Second half of defragment(): put the copy in place of the file and
        reopen. Needs no batch open and no read transaction in any thread."""
        self._all_committed("defragment")
        self.file.defragment_swap()
        for hook in self.reopen_hooks:
            hook()

    def _all_committed(self, what: str) -> None:
        self.settle()
        if self.batch is not None or self._txn is not None:
            raise RuntimeError(f"cannot {what} with a write batch open or uncommitted")

    def restore_from(self, path: str) -> None:
        """Replace the whole backend by the LMDB file at `path` (a snapshot a follower
        received from its leader), moving it into place; then `reopen_hooks` and
        `restore_hooks` run. Needs the backend to itself, as defragment() does."""
        if self.batch is not None:
            raise RuntimeError("cannot restore while a write batch is open")
        self.commit()
        self.file.replace(path)
        self._consistent_index = self._committed_index = self._read_consistent_index()
        for hook in self.reopen_hooks:
            hook()
        for hook in self.restore_hooks:
            hook()

    def sync(self) -> None:
        """Flush everything committed to disk (commits may not sync the meta page).
        Any thread; commit() first on the applying one for the applied state."""
        self.file.env.sync(True)

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
                # (another thread's: the WAL replays it)
                self._committer.end(txn, commit=False)
        self._committer.shutdown()
        self.file.env.close()
