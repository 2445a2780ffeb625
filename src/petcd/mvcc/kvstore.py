"""The multi-version key-value store (etcd's mvcc) on the LMDB backend.

Every change gets a revision (main, sub): all changes of one request share
the main revision and are numbered by sub. Layout (see docs/architecture/mvcc.md):

- `kv`:    revision key -> serialized mvccpb.KeyValue, the whole history in
           revision order. Revision key = 8-byte big-endian main + b"_" +
           8-byte big-endian sub, plus b"t" for a tombstone (a delete, whose
           record holds only the key), as etcd's key bucket.
- `index`: dupsort, key -> one 42-byte entry per change of that key, sorted
           by revision: revision key (17) + flag (b"t" tombstone, else 0) +
           create_revision, version, lease (3 x int64 big-endian). The newest
           entry gives the current state without reading the record; the
           newest entry <= R gives the state at revision R. A key keeps at most
           INLINE_MAX entries here: a put past that moves all but the newest
           INLINE_KEEP to `index_history`.
- `index_history`: dupsort, the same entries, older than the key's entries in
           `index` (read when R is older than all of those).
- `longkeys`: keys longer than LMDB's key limit are indexed under a
           surrogate (first 500 bytes + 11-byte hash); this maps it back.
- `meta`:  current revision and compact revision, written in the batch that
           changed them.

All methods are synchronous. Writes happen only inside the backend's
WriteBatch (the apply loop); reads see the backend's applied state
(`Backend.read_txn`): its open write transaction on the applying thread.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Iterable, Iterator

import lmdb

from petcd import errors
from petcd.mvcc.backend import Backend, WriteBatch
from petcd.mvcc.compaction import compact_physical
from petcd.mvcc.keys import (
    DIRECT_KEY_MAX,
    ENTRY_TAIL,
    HISTORY_DB,
    I64,
    INDEX_DB,
    INLINE_MAX,
    KV_DB,
    LIVE_FLAG,
    LONGKEYS_DB,
    META_PHYSICAL,
    META_REVS,
    REV,
    REV_LEN,
    REVS,
    SURROGATE_LEN,
    TOMB,
    entry_main,
    surrogate,
)
from petcd.mvcc.keys import parse_rev_key as parse_rev_key
from petcd.mvcc.keys import rev_key as rev_key
from petcd.mvcc.types import LeaseHook, RangeResult
from petcd.mvcc.view import KVView, RangeCounts, ReadTxn
from petcd.mvcc.write import TxnWrite, move_history
from petcd.pb.mvccpb.kv_pb2 import KeyValue

__all__ = ["KVStore", "KVView", "ReadTxn", "TxnWrite", "parse_rev_key", "rev_key"]


class KVStore:
    """etcd's MVCC key-value store over a `Backend`.

    A fresh store is at revision 1 with nothing compacted (compact_revision
    -1), as etcd. It registers with the backend to learn when a batch
    commits (its revision becomes visible to readers) or aborts (it forgets
    the batch's revisions).
    """

    def __init__(self, backend: Backend, *, lessor: LeaseHook | None = None) -> None:
        self.backend = backend
        self.put_bytes = 0  # keys and values written (etcd's total put size gauge)
        # Physical compaction figures for metrics: ("pause", seconds of one step),
        # ("total", seconds from compact() to the end), ("keys", records removed).
        self.on_compaction: Callable[[str, float], None] | None = None
        self._compaction_started = 0.0
        self.lessor = lessor
        self._open_dbs()
        # (revision, resume key) of the physical compaction under way, or None
        self._committed_pending: tuple[int, bytes] | None = None
        self._writer: TxnWrite | None = None
        self._cursor_txn: lmdb.Transaction[bytes] | None = None
        self._cursor: lmdb.Cursor[bytes] | None = None
        self.range_counts = RangeCounts()  # (for paginated ranges: see view.py)
        self.reload()
        backend.listeners.append(self)
        backend.reopen_hooks.append(self._open_dbs)

    def reload(self) -> None:
        """Read the state from the backend (at start, and after the backend was replaced
        by a snapshot from the leader: the member calls it then, before anything that
        derives state from the store)."""
        with self.backend.read() as txn:
            self._committed_rev, self._committed_compact = self._revisions(txn)
            raw = txn.get(META_PHYSICAL, db=self._meta)
        self._committed_pending = None if raw is None else (I64.unpack_from(raw)[0], raw[8:])
        self._pending = self._committed_pending
        self._rev = self._committed_rev
        self._compact = self._committed_compact
        self._writer = None
        self._cursor = self._cursor_txn = None
        self._live_keys: int | None = None  # counted when first asked
        self.range_counts.clear()  # (a snapshot's state may come with the same revision)

    def _open_dbs(self) -> None:
        backend = self.backend
        self._cursor = self._cursor_txn = None  # (on the old handles)
        self._kv = backend.open_db(KV_DB)
        self._index = backend.open_db(INDEX_DB, dupsort=True, dupfixed=True)
        self._history = backend.open_db(HISTORY_DB, dupsort=True, dupfixed=True)
        self._longkeys = backend.open_db(LONGKEYS_DB)
        self._meta = backend.meta_db

    def _batch_cursor(self, txn: lmdb.Transaction[bytes]) -> lmdb.Cursor[bytes]:
        """An index cursor on the backend's write transaction, made once per transaction
        (batches go on in the same one until the backend commits it). Only writers use
        it, and each positions it first."""
        if self._cursor_txn is not txn or self._cursor is None:
            self._cursor = txn.cursor(db=self._index)
            self._cursor_txn = txn
        return self._cursor

    # -- state -------------------------------------------------------------------

    # `_committed_*`: as of the last ended batch (the applied state reads see, whether
    # the backend has committed it to disk yet or not); `_rev`, `_compact`, `_pending`:
    # inside the batch being applied.

    @property
    def live_keys(self) -> int:
        """Keys that exist now (etcd's keys gauge): counted once from the index, then
        kept by the write requests that end."""
        if self._live_keys is None:
            with self.read() as r:
                # Walked by py-lmdb's C iterator when no long key is stored (1M keys:
                # a fraction of a second), else key by key.
                n = r._count_head(b"", b"")
                if n is None:
                    n = 0
                    cur = r._txn.cursor(db=self._index)
                    more = cur.first()
                    while more:
                        cur.last_dup()
                        if cur.value()[17] != TOMB:
                            n += 1
                        more = cur.next_nodup()
            self._live_keys = n
        return self._live_keys

    @property
    def current_revision(self) -> int:
        """The revision of the last applied change (1 on a fresh store)."""
        return self._committed_rev

    @property
    def compact_revision(self) -> int:
        """The last applied compaction revision (-1: never compacted)."""
        return self._committed_compact

    @property
    def working_revision(self) -> int:
        """The revision including the open batch's uncommitted changes."""
        return self._rev

    # -- BatchListener -------------------------------------------------------------

    def before_end(self, batch: WriteBatch) -> None:
        if self._writer is not None:
            raise RuntimeError("mvcc: a write request is still open at commit")
        if self._rev != self._committed_rev or self._compact != self._committed_compact:
            # (positional: py-lmdb's default flags, without a keyword dict per batch)
            batch.txn.put(META_REVS, REVS.pack(self._rev, self._compact), True, True, False,
                          self._meta)
        pending = self._pending
        if pending != self._committed_pending:
            if pending is None:
                batch.txn.delete(META_PHYSICAL, db=self._meta)
            else:
                batch.txn.put(META_PHYSICAL, I64.pack(pending[0]) + pending[1], db=self._meta)

    def after_end(self, batch: WriteBatch) -> None:
        # (the index cursor stays: the next batch, in the same write transaction until
        # the backend commits it, uses it again; a new transaction gets a new one)
        self._committed_rev = self._rev
        self._committed_compact = self._compact
        self._committed_pending = self._pending

    def after_abort(self, batch: WriteBatch) -> None:
        self._cursor = self._cursor_txn = None
        self._writer = None
        self._rev = self._committed_rev
        self._compact = self._committed_compact
        self._pending = self._committed_pending

    # -- reads -------------------------------------------------------------------

    def read(self) -> ReadTxn:
        """A read of the applied state (use as context manager; see ReadTxn)."""
        txn, owned = self.backend.read_txn()
        # The revisions come from the transaction itself, not from memory: whatever
        # it is (the open write transaction, or a snapshot another thread took), they
        # match its contents.
        rev, compact = self._revisions(txn)
        return ReadTxn(self, txn, rev, compact, owned)

    def read_snapshot(self) -> ReadTxn:
        """On the applying thread: commit, then a read of the applied state that any
        thread may use (hashes run on worker threads)."""
        txn = self.backend.read_snapshot()
        rev, compact = self._revisions(txn)
        return ReadTxn(self, txn, rev, compact)

    def _revisions(self, txn: lmdb.Transaction[bytes]) -> tuple[int, int]:
        raw = txn.get(META_REVS, db=self._meta)
        if raw is None:
            return 1, -1
        rev, compact = REVS.unpack(raw)
        return rev, compact

    def view(self, batch: WriteBatch) -> KVView:
        """Reads inside the open batch: sees its changes so far (between
        write requests, not while one is open)."""
        if self._writer is not None:
            raise RuntimeError("mvcc: a write request is open; read through it")
        return KVView(self, batch.txn, self._rev, self._compact)

    def range(
        self,
        key: bytes,
        end: bytes | None = None,
        *,
        rev: int = 0,
        limit: int = 0,
        count_only: bool = False,
    ) -> RangeResult:
        """One range read in its own snapshot (see `KVView.range`)."""
        with self.read() as r:
            return r.range(key, end, rev=rev, limit=limit, count_only=count_only)

    def revisions_in(self, txn: lmdb.Transaction[bytes]) -> tuple[int, int]:
        """(current, compacted) revision as of a read transaction of the backend."""
        return self._revisions(txn)

    def history_in(self, txn: lmdb.Transaction[bytes]) -> Iterator[tuple[bytes, bytes]]:
        """Every stored (revision key, serialized KeyValue) in revision order, as of a read
        transaction: the same records, keyed the same way, as etcd's `key` bucket."""
        yield from txn.cursor(db=self._kv)

    def load_history(self, batch: WriteBatch, records: Iterable[tuple[bytes, bytes]],
                     compact_rev: int) -> int:
        """Fill a store from etcd-format history (its `key` bucket: revision key ->
        KeyValue, deletions marked `t` and holding only the key), in revision order, with
        etcd's compacted revision (-1: none). Called once per batch of a long history;
        each call's records come after the last one's. Returns the current revision."""
        if self._writer is not None:
            raise RuntimeError("mvcc: a write request is open")
        txn = batch.txn
        icur = txn.cursor(db=self._index)
        last = self._rev if self._rev > 1 else 0
        for revkey, data in records:
            if len(revkey) not in (REV_LEN, REV_LEN + 1) or revkey[8:9] != b"_":
                raise ValueError(f"mvcc: malformed revision key {revkey.hex()}")
            kv = KeyValue.FromString(data)
            key = bytes(kv.key)
            if not key:
                raise ValueError(f"mvcc: record {revkey.hex()} has no key")
            if len(key) > DIRECT_KEY_MAX:
                ikey = surrogate(key)
                txn.put(ikey, key, db=self._longkeys)
            else:
                ikey = key
            if not txn.put(revkey, data, db=self._kv, append=True):
                raise ValueError("mvcc: history out of revision order")
            if len(revkey) > REV_LEN:
                entry = revkey + ENTRY_TAIL.pack(0, 0, 0)
            else:
                entry = revkey + LIVE_FLAG + ENTRY_TAIL.pack(
                    kv.create_revision, kv.version, kv.lease)
            icur.put(ikey, entry)  # (the cursor is left on it)
            if icur.count() > INLINE_MAX:
                move_history(self, txn, icur, ikey)
            last = entry_main(revkey)
        self._rev = max(1, last, compact_rev)
        self._compact = compact_rev
        return self._rev

    def lease_attachments(self) -> list[tuple[int, bytes]]:
        """(lease, key) of every existing key that has a lease: what the
        lessor rebuilds its key lists from at startup (issue 7)."""
        out: list[tuple[int, bytes]] = []
        with self.read() as r:
            cur = r._txn.cursor(db=self._index)
            more = cur.first()
            while more:
                cur.last_dup()
                entry = cur.value()
                if entry[17] != TOMB:
                    lease = I64.unpack_from(entry, 34)[0]
                    if lease:
                        ikey = cur.key()
                        if len(ikey) == SURROGATE_LEN:
                            full = r._txn.get(ikey, db=self._longkeys)
                            assert full is not None
                            ikey = full
                        out.append((lease, ikey))
                more = cur.next_nodup()
        return out

    # -- writes ------------------------------------------------------------------

    def write(self, batch: WriteBatch, *, atomic: bool = False) -> TxnWrite:
        """Begin the changes of one request inside `batch`. With atomic=True
        the request writes through a nested transaction so that abort()
        (or an exception leaving the `with` block) undoes all of it."""
        if self._writer is not None:
            raise RuntimeError("mvcc: another write request is open")
        if batch is not self.backend.batch:
            raise RuntimeError("mvcc: not the backend's open write batch")
        self._writer = TxnWrite(self, batch, atomic)
        return self._writer

    def compact(self, batch: WriteBatch, rev: int, *, budget: int | None = None,
                deadline: float | None = None) -> int:
        """Compact history up to `rev` inside `batch`: afterwards reads below
        `rev` fail with COMPACTED, and every record no read at >= rev can see
        is deleted from the backend: for each key the newest record at or
        below `rev` survives unless it is a deletion. Raises COMPACTED if
        rev <= compact_revision, FUTURE_REV if rev > current revision.
        Returns the current revision (the response header's).

        budget=None removes everything within this batch. Otherwise only
        that many index keys are visited now (and none once time.perf_counter()
        passes `deadline`); `compact_step` in later batches does the rest
        (`compaction_left_in_batch`). Reads, HashKV and history are the same either
        way: only the file holds more meanwhile."""
        if self._writer is not None:
            raise RuntimeError("mvcc: a write request is open")
        if rev <= self._compact:
            raise errors.COMPACTED()
        if rev > self._rev:
            raise errors.FUTURE_REV()
        self._compact = rev
        self._compaction_started = time.monotonic()
        # A later compaction supersedes one under way: start over with it.
        self._pending = (rev, b"")
        self.compact_step(batch, budget, deadline=deadline)
        return self._rev

    @property
    def compaction_left_in_batch(self) -> bool:
        """Physical compaction work is left (in the open batch's view)."""
        return self._pending is not None

    @property
    def physically_compacted(self) -> bool:
        """Committed state: every compacted record is gone from the file
        (what a `physical` CompactionRequest waits for)."""
        return self._committed_pending is None

    def compact_step(self, batch: WriteBatch, budget: int | None = 10_000, *,
                     deadline: float | None = None) -> bool:
        """Continue the physical compaction under way for up to `budget`
        index keys (None: to the end) inside `batch`, stopping early once
        time.perf_counter() passes `deadline` (at least one key is visited).
        Returns True when nothing is left."""
        pending = self._pending
        if pending is None:
            return True
        if self._writer is not None:
            raise RuntimeError("mvcc: a write request is open")
        rev, start = pending
        started = time.monotonic()
        resume = compact_physical(self, batch.txn, rev, start, budget, deadline)
        self._pending = None if resume is None else (rev, resume)
        report = self.on_compaction
        if report is not None:
            ended = time.monotonic()
            report("pause", ended - started)
            if resume is None:
                report("total", ended - self._compaction_started)
        return resume is None

    # -- hashing -------------------------------------------------------------------

    def hash_kv(self, rev: int = 0, view: ReadTxn | None = None) -> tuple[int, int, int]:
        """(hash, current revision, compact revision) for HashKV: a CRC-32 of
        the `kv` records (key and value) with main revision <= rev (0: the
        current revision) that compaction keeps, so members that applied the
        same log agree, however far their physical compaction has got.
        Raises COMPACTED if 0 < rev <= compact revision, FUTURE_REV if
        rev > current. `view`: a read_snapshot() (ended here), else read()."""
        with view if view is not None else self.read() as r:
            current, compact = r.rev, r.compact_rev
            if rev > 0 and rev <= compact:
                raise errors.COMPACTED()
            if rev > current:
                raise errors.FUTURE_REV()
            upto = current if rev <= 0 else rev
            limit = REV.pack(upto + 1, b"_", 0)
            # While a compaction is under way, records at or below it may
            # still be in the file: count only those it keeps.
            pending = r._txn.get(META_PHYSICAL, db=self._meta) is not None
            settled = REV.pack(compact + 1, b"_", 0) if pending else b""
            crc = zlib.crc32(KV_DB)
            for raw, value in r._txn.cursor(db=self._kv):
                if raw >= limit:
                    break
                if raw < settled and not self._kept(r, raw, value, compact):
                    continue
                crc = zlib.crc32(value, zlib.crc32(raw, crc))
        return crc, current, compact

    @staticmethod
    def _kept(r: KVView, raw: bytes, value: bytes, compact: int) -> bool:
        """Whether compaction at `compact` keeps the record (key `raw`)."""
        if len(raw) > REV_LEN:
            return False  # a deletion at or below the compaction revision
        ikey = r._index_key(KeyValue.FromString(value).key)
        if ikey is None:
            return False
        entry = r._entry_at(ikey, compact)
        return entry is not None and entry[17] != TOMB and entry[:17] == raw
