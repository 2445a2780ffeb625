"""The multi-version key-value store (etcd's mvcc) on the LMDB backend.

Every change gets a revision (main, sub): all changes of one request share
the main revision and are numbered by sub. Layout (see docs/ARCHITECTURE.md):

- `kv`:    revision key -> serialized mvccpb.KeyValue, the whole history in
           revision order. Revision key = 8-byte big-endian main + b"_" +
           8-byte big-endian sub, plus b"t" for a tombstone (a delete, whose
           record holds only the key), as etcd's key bucket.
- `index`: dupsort, key -> one 42-byte entry per change of that key, sorted
           by revision: revision key (17) + flag (b"t" tombstone, else 0) +
           create_revision, version, lease (3 x int64 big-endian). The newest
           entry gives the current state without reading the record; the
           newest entry <= R gives the state at revision R.
- `longkeys`: keys longer than LMDB's key limit are indexed under a
           surrogate (first 500 bytes + 11-byte hash); this maps it back.
- `meta`:  current revision and compact revision, written in the batch that
           changed them.

All methods are synchronous. Writes happen only inside the backend's
WriteBatch (the apply loop); reads see the backend's applied state
(`Backend.read_txn`): its open write transaction on the applying thread.
"""

from __future__ import annotations

import hashlib
import struct
import time
import zlib
from collections.abc import Iterable, Iterator
from types import TracebackType

import lmdb

from petcd import errors
from petcd.mvcc.backend import Backend, WriteBatch
from petcd.mvcc.types import EVENT_DELETE, EVENT_PUT, KVEvent, LeaseHook, RangeResult
from petcd.pb.mvccpb.kv_pb2 import KeyValue

KV_DB = b"kv"
INDEX_DB = b"index"
LONGKEYS_DB = b"longkeys"
_META_REVS = b"kv_revisions"  # current revision, compact revision (2 x int64)
# Physical compaction still to do: revision (int64) + index key to resume from.
_META_PHYSICAL = b"kv_compaction_pending"

# Keys up to this length are their own index key; longer ones get a surrogate
# of the same prefix plus a hash, 511 bytes (LMDB's maximum) in all. Nothing
# else in the index is longer than this, so surrogates are recognised by length.
_DIRECT_KEY_MAX = 500
_SURROGATE_LEN = 511

_REV = struct.Struct(">QcQ")  # main, b"_", sub
_I64 = struct.Struct(">q")
_REVS = struct.Struct(">qq")
_ENTRY_TAIL = struct.Struct(">qqq")  # create_revision, version, lease
_TOMB = 0x74  # b"t"
_LIVE_FLAG = b"\x00"
_TOMB_FLAG = b"t"
_REV_LEN = 17
_NO_UPPER: bytes = b""


def rev_key(main: int, sub: int = 0) -> bytes:
    """The `kv` key of revision (main, sub), without tombstone mark."""
    return _REV.pack(main, b"_", sub)


def parse_rev_key(raw: bytes) -> tuple[int, int, bool]:
    """(main, sub, is_tombstone) of a `kv` key."""
    main, _, sub = _REV.unpack_from(raw)
    return main, sub, len(raw) > _REV_LEN


def _entry_main(entry: bytes) -> int:
    return int.from_bytes(entry[:8], "big")


def _entry_kv_key(entry: bytes) -> bytes:
    return entry[:18] if entry[17] == _TOMB else entry[:17]


def _surrogate(key: bytes) -> bytes:
    digest = hashlib.blake2b(key, digest_size=_SURROGATE_LEN - _DIRECT_KEY_MAX).digest()
    return key[:_DIRECT_KEY_MAX] + digest


class KVView:
    """Reads over one LMDB transaction at one revision."""

    __slots__ = ("_icur", "_index", "_kv", "_longkeys", "_txn", "compact_rev", "rev")

    def __init__(
        self, store: KVStore, txn: lmdb.Transaction[bytes], rev: int, compact_rev: int
    ) -> None:
        self._txn = txn
        self._kv = store._kv
        self._index = store._index
        self._longkeys = store._longkeys
        self._icur = txn.cursor(db=store._index)
        self.rev = rev
        self.compact_rev = compact_rev

    # -- index helpers ---------------------------------------------------------

    def _index_key(self, key: bytes) -> bytes | None:
        """The index key of `key`, or None if a long key was never written."""
        if len(key) <= _DIRECT_KEY_MAX:
            return key
        sur = _surrogate(key)
        stored = self._txn.get(sur, db=self._longkeys)
        if stored is None:
            return None
        if stored != key:
            raise RuntimeError("mvcc: long-key surrogate collision")
        return sur

    def _entry_at(self, ikey: bytes, rev: int) -> bytes | None:
        """The newest index entry of `ikey` with main revision <= rev, with
        the cursor left on the key (None if the key has none)."""
        cur = self._icur
        if not cur.set_key(ikey):
            return None
        cur.last_dup()
        entry = cur.value()
        if _entry_main(entry) <= rev:
            return entry
        cur.set_range_dup(ikey, _REV.pack(rev + 1, b"_", 0))
        if not cur.prev_dup():
            return None
        return cur.value()

    # -- reads -------------------------------------------------------------------

    def _check_rev(self, rev: int) -> int:
        if rev <= 0:
            return self.rev
        if rev > self.rev:
            raise errors.FUTURE_REV
        if rev < self.compact_rev:
            raise errors.COMPACTED
        return rev

    def get(self, key: bytes, rev: int = 0) -> bytes | None:
        """The serialized KeyValue of `key` at `rev` (0: this view's revision),
        or None if the key does not exist then."""
        # The hot path of every read: kept flat on purpose.
        if not key:
            self._check_rev(rev)
            return None  # LMDB has no empty keys; neither does etcd's API
        if len(key) > _DIRECT_KEY_MAX:
            ikey = self._index_key(key)
            if ikey is None:
                self._check_rev(rev)
                return None
        else:
            ikey = key
        cur = self._icur
        if rev <= 0 or rev == self.rev:
            if not cur.set_key(ikey):
                return None
            cur.last_dup()
            entry = cur.value()
        else:
            rev = self._check_rev(rev)
            entry = self._entry_at(ikey, rev)  # type: ignore[assignment]
            if entry is None:
                return None
        if entry[17] == _TOMB:
            return None
        return self._txn.get(entry[:17], db=self._kv)

    def key_state(self, key: bytes) -> tuple[int, int, int, int] | None:
        """(create_revision, mod_revision, version, lease) of `key` at this
        view's revision, or None if it does not exist; from the index alone,
        without reading the record (for txn compares)."""
        if not key:
            return None
        ikey = self._index_key(key)
        if ikey is None:
            return None
        cur = self._icur
        if not cur.set_key(ikey):
            return None
        cur.last_dup()
        entry = cur.value()
        if entry[17] == _TOMB:
            return None
        create, version, lease = _ENTRY_TAIL.unpack_from(entry, 18)
        return create, _entry_main(entry), version, lease

    def range(
        self,
        key: bytes,
        end: bytes | None = None,
        *,
        rev: int = 0,
        limit: int = 0,
        count_only: bool = False,
    ) -> RangeResult:
        """Keys in [key, end) at revision `rev` (0: this view's revision).

        end=None reads the single `key`; end=b"" means no upper bound. `limit`
        caps the records returned (0: all), never `count`; with `count_only`
        no records are returned. Raises FUTURE_REV / COMPACTED for a revision
        above the view's or below the compacted one.
        """
        at = self._check_rev(rev)
        if end is None:
            one = self.get(key, at)
            if one is None:
                return RangeResult([], 0, self.rev)
            return RangeResult([] if count_only else [one], 1, self.rev)
        entries, count = self._scan(key, end, at, 0 if count_only else (limit or -1))
        get = self._txn.get
        kvdb = self._kv
        kvs = [get(entry[:17], db=kvdb) for _, entry in entries]
        return RangeResult(kvs, count, self.rev)  # type: ignore[arg-type]

    def _scan(
        self, key: bytes, end: bytes, rev: int, want: int
    ) -> tuple[list[tuple[bytes, bytes]], int]:
        """Live (key, entry) pairs in [key, end) at `rev`, at most `want` of
        them (-1: all), and how many live keys the range has in total."""
        found: list[tuple[bytes, bytes]] = []
        count = 0
        if end and end <= key:
            return found, 0
        cur = self._icur
        long_start = len(key) > _DIRECT_KEY_MAX
        if not (cur.set_range(key[:_DIRECT_KEY_MAX] if long_start else key) if key
                else cur.first()):
            return found, 0
        at_head = rev >= self.rev  # nothing newer than the view: newest entry wins
        while True:
            ikey = cur.key()
            if len(ikey) == _SURROGATE_LEN:
                prefix = ikey[:_DIRECT_KEY_MAX]
                if end and prefix >= end:
                    break
                group, more = self._long_group(prefix, rev)
                for full, entry in group:
                    if full < key or (end and full >= end):
                        continue
                    count += 1
                    if want < 0 or len(found) < want:
                        found.append((full, entry))
                if not more:
                    break
                continue
            if end and ikey >= end:
                break
            if not (long_start and ikey < key):
                if at_head:
                    cur.last_dup()
                    entry = cur.value()
                else:
                    entry = self._entry_at(ikey, rev)  # type: ignore[assignment]
                if entry is not None and entry[17] != _TOMB:
                    count += 1
                    if want < 0 or len(found) < want:
                        found.append((ikey, entry))
            if not cur.next_nodup():
                break
        return found, count

    def _long_group(self, prefix: bytes, rev: int) -> tuple[list[tuple[bytes, bytes]], bool]:
        """Live long keys sharing a 500-byte prefix, at `rev`, sorted by key,
        starting from the cursor on the group's first surrogate; leaves the
        cursor on the next index key. Returns (pairs, cursor_valid)."""
        cur = self._icur
        surrogates = []
        more = True
        while True:
            ikey = cur.key()
            if len(ikey) != _SURROGATE_LEN or ikey[:_DIRECT_KEY_MAX] != prefix:
                break
            surrogates.append(ikey)
            if not cur.next_nodup():
                more = False
                break
        resume = None if not more else cur.key()
        pairs = []
        for sur in surrogates:
            entry = self._entry_at(sur, rev)
            if entry is not None and entry[17] != _TOMB:
                full = self._txn.get(sur, db=self._longkeys)
                assert full is not None
                pairs.append((full, entry))
        pairs.sort()
        if resume is not None:
            cur.set_key(resume)
        return pairs, more

    def events(
        self, start_rev: int, key: bytes, end: bytes | None = None, end_rev: int = 0
    ) -> list[KVEvent]:
        """Every change to keys in [key, end) (end=None: just `key`; b"": no
        upper bound) with start_rev <= revision <= end_rev (0: this view's
        revision), in revision order; prev_kv is not filled. For watchers
        that start in the past: raises COMPACTED if start_rev is compacted."""
        if start_rev <= self.compact_rev:
            raise errors.COMPACTED
        last = self.rev if end_rev <= 0 else min(end_rev, self.rev)
        out: list[KVEvent] = []
        cur = self._txn.cursor(db=self._kv)
        if not cur.set_range(_REV.pack(max(start_rev, 0), b"_", 0)):
            return out
        parse = KeyValue.FromString
        for raw, value in cur:
            main = int.from_bytes(raw[:8], "big")
            if main > last:
                break
            kv = parse(value)
            k = kv.key
            if end is None:
                if k != key:
                    continue
            elif k < key or (end and k >= end):
                continue
            if len(raw) > _REV_LEN:
                kv.mod_revision = main
                out.append(KVEvent(main, EVENT_DELETE, k, kv.SerializeToString(), None))
            else:
                out.append(KVEvent(main, EVENT_PUT, k, value, None))
        return out

    def changes(self, start_rev: int, end_rev: int = 0) -> Iterator[tuple[bytes, bytes]]:
        """(revision key, stored record) of every change with start_rev <= main
        revision <= end_rev (0: this view's revision), in revision order, read lazily
        (consume it while the view is open). No compaction check: records below the
        compacted revision may be gone. A deletion's revision key ends in b"t" and its
        record holds only the key. One scan serves watchers on any number of keys."""
        last = self.rev if end_rev <= 0 else min(end_rev, self.rev)
        cur = self._txn.cursor(db=self._kv)
        if not cur.set_range(_REV.pack(max(start_rev, 0), b"_", 0)):
            return
        for raw, value in cur:
            if int.from_bytes(raw[:8], "big") > last:
                return
            yield raw, value


class ReadTxn(KVView):
    """A consistent read of the applied state (context manager): `rev` is the
    store's revision at the time it was opened, `compact_rev` the compacted one.
    Over the backend's open write transaction (on the applying thread) it must be
    used within one synchronous step: the next batch or commit changes or ends it."""

    __slots__ = ("_owned",)

    def __init__(self, store: KVStore, txn: lmdb.Transaction[bytes], rev: int,
                 compact_rev: int, owned: bool = True) -> None:
        KVView.__init__(self, store, txn, rev, compact_rev)
        self._owned = owned

    @property
    def txn(self) -> lmdb.Transaction[bytes]:
        """The LMDB transaction read (the whole backend, for Maintenance.Hash)."""
        return self._txn

    def close(self) -> None:
        if self._owned:
            self._txn.abort()

    def __enter__(self) -> ReadTxn:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._owned:
            self._txn.abort()


class TxnWrite(KVView):
    """The changes of ONE mutating request (Put, DeleteRange, or a whole Txn),
    which all get main revision `begin_rev + 1` (sub revisions 0, 1, ...).

    Use as a context manager: on a normal exit the request is finished (the
    store's revision advances if anything changed, lease hooks run); if an
    exception escapes, everything it wrote is undone (it writes through a
    nested LMDB transaction when `atomic`). Reads through it see its own
    earlier writes; `rev` is the revision they see.
    """

    __slots__ = ("_changed", "_done", "_events", "_leases", "_parent", "_store", "_sub",
                 "begin_rev")

    def __init__(self, store: KVStore, batch: WriteBatch, atomic: bool) -> None:
        # Not via KVView.__init__: this runs once per write request.
        parent = batch.txn
        if atomic:
            txn = store.backend.env.begin(write=True, parent=parent)
            self._icur = txn.cursor(db=store._index)
            self._parent: lmdb.Transaction[bytes] | None = parent
        else:
            txn = parent
            self._icur = store._batch_cursor(parent)
            self._parent = None
        self._txn = txn
        self._kv = store._kv
        self._index = store._index
        self._longkeys = store._longkeys
        self.rev = self.begin_rev = store._rev
        self.compact_rev = store._compact
        self._store = store
        self._events = batch.events
        self._sub = 0
        self._changed = False
        self._done = False
        self._leases: list[tuple[bool, int, bytes]] | None = None  # (attach?, lease, key)

    @property
    def changed(self) -> bool:
        return self._changed

    def _mark_changed(self) -> None:
        self._changed = True
        self.rev = self.begin_rev + 1

    def put(
        self,
        key: bytes,
        value: bytes,
        lease: int = 0,
        *,
        ignore_value: bool = False,
        ignore_lease: bool = False,
    ) -> tuple[int, bytes | None]:
        """Write key=value at this request's revision. Returns (revision,
        previous serialized KeyValue or None). ignore_value / ignore_lease
        keep the current value / lease and raise KEY_NOT_FOUND (having
        written nothing) if the key does not exist."""
        if not key:
            raise errors.EMPTY_KEY
        txn = self._txn
        rev = self.begin_rev + 1
        long_key = len(key) > _DIRECT_KEY_MAX
        if long_key:
            found = self._index_key(key)
            ikey = _surrogate(key) if found is None else found
        else:
            ikey = key
        cur = self._icur
        prev = None
        existed = cur.set_key(ikey)
        if existed:
            cur.last_dup()
            entry = cur.value()
            if entry[17] != _TOMB:
                prev = entry
        if prev is None:
            if ignore_value or ignore_lease:
                raise errors.KEY_NOT_FOUND
            create, version, old_lease = rev, 1, 0
            prev_kv = None
        else:
            create, version, old_lease = _ENTRY_TAIL.unpack_from(prev, 18)
            version += 1
            prev_kv = txn.get(prev[:17], db=self._kv)
            if ignore_value:
                value = KeyValue.FromString(prev_kv).value  # type: ignore[arg-type]
            if ignore_lease:
                lease = old_lease
        if long_key and not existed:
            txn.put(ikey, key, db=self._longkeys)
        revision = _REV.pack(rev, b"_", self._sub)
        self._sub += 1
        data = KeyValue(
            key=key,
            create_revision=create,
            mod_revision=rev,
            version=version,
            value=value,
            lease=lease,
        ).SerializeToString()
        if not txn.put(revision, data, db=self._kv, append=True):
            raise RuntimeError("mvcc: revision out of order")
        entry = revision + _LIVE_FLAG + _ENTRY_TAIL.pack(create, version, lease)
        if existed:
            cur.put(ikey, entry, append=True)
        else:
            txn.put(ikey, entry, db=self._index)
        self._events.append(KVEvent(rev, EVENT_PUT, key, data, prev_kv))
        if old_lease or lease:
            if self._leases is None:
                self._leases = []
            if old_lease:
                self._leases.append((False, old_lease, key))
            if lease:
                self._leases.append((True, lease, key))
        if not self._changed:
            self._mark_changed()
        return rev, prev_kv

    def delete_range(self, key: bytes, end: bytes | None = None) -> tuple[int, list[bytes]]:
        """Delete the keys in [key, end) (end as for `range`). Returns (number
        deleted, their previous serialized KeyValues in key order)."""
        view_rev = self.rev
        if end is None:
            ikey = self._index_key(key) if key else None
            if ikey is None:
                return 0, []
            entry = self._entry_at(ikey, view_rev)
            if entry is None or entry[17] == _TOMB:
                return 0, []
            victims = [(key, ikey, entry)]
        else:
            pairs, _ = self._scan(key, end, view_rev, -1)
            victims = [
                (k, k if len(k) <= _DIRECT_KEY_MAX else _surrogate(k), entry)
                for k, entry in pairs
            ]
        if not victims:
            return 0, []
        txn = self._txn
        kvdb = self._kv
        index = self._index
        events = self._events
        rev = self.begin_rev + 1
        prevs = []
        for k, ikey, entry in victims:
            prev_kv = txn.get(entry[:17], db=kvdb)
            assert prev_kv is not None
            prevs.append(prev_kv)
            revision = _REV.pack(rev, b"_", self._sub)
            self._sub += 1
            if not txn.put(revision + _TOMB_FLAG, KeyValue(key=k).SerializeToString(),
                           db=kvdb, append=True):
                raise RuntimeError("mvcc: revision out of order")
            txn.put(ikey, revision + _TOMB_FLAG + _ENTRY_TAIL.pack(0, 0, 0), db=index)
            event_kv = KeyValue(key=k, mod_revision=rev).SerializeToString()
            events.append(KVEvent(rev, EVENT_DELETE, k, event_kv, prev_kv))
            old_lease = _I64.unpack_from(entry, 34)[0]
            if old_lease:
                if self._leases is None:
                    self._leases = []
                self._leases.append((False, old_lease, k))
        if not self._changed:
            self._mark_changed()
        return len(victims), prevs

    def end(self) -> int:
        """Finish the request; returns its header revision."""
        if self._done:
            return self.rev
        self._done = True
        if self._parent is not None:
            self._txn.commit()
        store = self._store
        store._writer = None
        if self._changed:
            store._rev = self.begin_rev + 1
        lessor = store.lessor
        if lessor is not None and self._leases:
            for attach, lease, key in self._leases:
                if attach:
                    lessor.attach(lease, key)
                else:
                    lessor.detach(lease, key)
        return self.rev

    def abort(self) -> None:
        """Undo the request (only possible when opened `atomic`)."""
        if self._done:
            return
        self._done = True
        self._store._writer = None
        if self._parent is None:
            if self._changed:
                raise RuntimeError("mvcc: cannot undo a non-atomic write")
            return
        self._txn.abort()
        events = self._events
        while events and events[-1].revision == self.begin_rev + 1:
            events.pop()

    def __enter__(self) -> TxnWrite:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.end()
        else:
            self.abort()


class KVStore:
    """etcd's MVCC key-value store over a `Backend`.

    A fresh store is at revision 1 with nothing compacted (compact_revision
    -1), as etcd. It registers with the backend to learn when a batch
    commits (its revision becomes visible to readers) or aborts (it forgets
    the batch's revisions).
    """

    def __init__(self, backend: Backend, *, lessor: LeaseHook | None = None) -> None:
        self.backend = backend
        self.lessor = lessor
        self._open_dbs()
        # (revision, resume key) of the physical compaction under way, or None
        self._committed_pending: tuple[int, bytes] | None = None
        self._writer: TxnWrite | None = None
        self._cursor_txn: lmdb.Transaction[bytes] | None = None
        self._cursor: lmdb.Cursor[bytes] | None = None
        self.reload()
        backend.listeners.append(self)
        backend.reopen_hooks.append(self._open_dbs)

    def reload(self) -> None:
        """Read the state from the backend (at start, and after the backend was replaced
        by a snapshot from the leader: the member calls it then, before anything that
        derives state from the store)."""
        with self.backend.read() as txn:
            self._committed_rev, self._committed_compact = self._revisions(txn)
            raw = txn.get(_META_PHYSICAL, db=self._meta)
        self._committed_pending = None if raw is None else (_I64.unpack_from(raw)[0], raw[8:])
        self._pending = self._committed_pending
        self._rev = self._committed_rev
        self._compact = self._committed_compact
        self._writer = None
        self._cursor = self._cursor_txn = None

    def _open_dbs(self) -> None:
        backend = self.backend
        self._kv = backend.open_db(KV_DB)
        self._index = backend.open_db(INDEX_DB, dupsort=True, dupfixed=True)
        self._longkeys = backend.open_db(LONGKEYS_DB)
        self._meta = backend.meta_db

    def _batch_cursor(self, txn: lmdb.Transaction[bytes]) -> lmdb.Cursor[bytes]:
        """An index cursor on the batch's transaction, made once per batch."""
        if self._cursor_txn is not txn or self._cursor is None:
            self._cursor = txn.cursor(db=self._index)
            self._cursor_txn = txn
        return self._cursor

    # -- state -------------------------------------------------------------------

    # `_committed_*`: as of the last ended batch (the applied state reads see, whether
    # the backend has committed it to disk yet or not); `_rev`, `_compact`, `_pending`:
    # inside the batch being applied.

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
            batch.txn.put(_META_REVS, _REVS.pack(self._rev, self._compact), db=self._meta)
        pending = self._pending
        if pending != self._committed_pending:
            if pending is None:
                batch.txn.delete(_META_PHYSICAL, db=self._meta)
            else:
                batch.txn.put(_META_PHYSICAL, _I64.pack(pending[0]) + pending[1], db=self._meta)

    def after_end(self, batch: WriteBatch) -> None:
        self._cursor = self._cursor_txn = None
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
        raw = txn.get(_META_REVS, db=self._meta)
        if raw is None:
            return 1, -1
        rev, compact = _REVS.unpack(raw)
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
        last = self._rev if self._rev > 1 else 0
        for revkey, data in records:
            if len(revkey) not in (_REV_LEN, _REV_LEN + 1) or revkey[8:9] != b"_":
                raise ValueError(f"mvcc: malformed revision key {revkey.hex()}")
            kv = KeyValue.FromString(data)
            key = bytes(kv.key)
            if not key:
                raise ValueError(f"mvcc: record {revkey.hex()} has no key")
            if len(key) > _DIRECT_KEY_MAX:
                ikey = _surrogate(key)
                txn.put(ikey, key, db=self._longkeys)
            else:
                ikey = key
            if not txn.put(revkey, data, db=self._kv, append=True):
                raise ValueError("mvcc: history out of revision order")
            if len(revkey) > _REV_LEN:
                entry = revkey + _ENTRY_TAIL.pack(0, 0, 0)
            else:
                entry = revkey + _LIVE_FLAG + _ENTRY_TAIL.pack(
                    kv.create_revision, kv.version, kv.lease)
            txn.put(ikey, entry, db=self._index)
            last = _entry_main(revkey)
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
                if entry[17] != _TOMB:
                    lease = _I64.unpack_from(entry, 34)[0]
                    if lease:
                        ikey = cur.key()
                        if len(ikey) == _SURROGATE_LEN:
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
        (`compaction_pending`). Reads, HashKV and history are the same either
        way: only the file holds more meanwhile."""
        if self._writer is not None:
            raise RuntimeError("mvcc: a write request is open")
        if rev <= self._compact:
            raise errors.COMPACTED
        if rev > self._rev:
            raise errors.FUTURE_REV
        self._compact = rev
        # A later compaction supersedes one under way: start over with it.
        self._pending = (rev, b"")
        self.compact_step(batch, budget, deadline=deadline)
        return self._rev

    @property
    def compaction_pending(self) -> bool:
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
        resume = self._compact_physical(batch.txn, rev, start, budget, deadline)
        self._pending = None if resume is None else (rev, resume)
        return resume is None

    def _compact_physical(
        self, txn: lmdb.Transaction[bytes], rev: int, start: bytes, budget: int | None,
        deadline: float | None = None,
    ) -> bytes | None:
        """Remove what compaction at `rev` frees, for index keys from `start`
        on, at most `budget` of them; returns the key to resume at, or None
        when the end was reached."""
        kvdb = self._kv
        cur = txn.cursor(db=self._index)
        limit = _REV.pack(rev + 1, b"_", 0)
        doomed_keys: list[bytes] = []
        more = cur.set_range(start) if start else cur.first()
        left = -1 if budget is None else budget
        resume: bytes | None = None
        visited = 0
        clock = time.perf_counter
        while more:
            if left == 0 or (deadline is not None and visited & 15 == 15
                             and clock() >= deadline):
                resume = cur.key()
                break
            left -= 1
            visited += 1
            ikey = cur.key()
            first = cur.value()
            if first < limit:
                # The entries <= rev: all but the newest go, and the newest
                # too if it is a deletion.
                old = [first]
                while cur.next_dup():
                    entry = cur.value()
                    if entry >= limit:
                        break
                    old.append(entry)
                if old[-1][17] != _TOMB:
                    old.pop()
                if old:
                    cur.first_dup()
                    for entry in old:  # they lead the key's entries
                        txn.delete(_entry_kv_key(entry), db=kvdb)
                        cur.delete()
                    more = cur.set_range(ikey)
                    if more and cur.key() != ikey:
                        if len(ikey) == _SURROGATE_LEN:
                            doomed_keys.append(ikey)
                        continue
                    if not more:
                        if len(ikey) == _SURROGATE_LEN:
                            doomed_keys.append(ikey)
                        break
            more = cur.next_nodup()
        for sur in doomed_keys:
            txn.delete(sur, db=self._longkeys)
        return resume

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
                raise errors.COMPACTED
            if rev > current:
                raise errors.FUTURE_REV
            upto = current if rev <= 0 else rev
            limit = _REV.pack(upto + 1, b"_", 0)
            # While a compaction is under way, records at or below it may
            # still be in the file: count only those it keeps.
            pending = r._txn.get(_META_PHYSICAL, db=self._meta) is not None
            settled = _REV.pack(compact + 1, b"_", 0) if pending else b""
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
        if len(raw) > _REV_LEN:
            return False  # a deletion at or below the compaction revision
        ikey = r._index_key(KeyValue.FromString(value).key)
        if ikey is None:
            return False
        entry = r._entry_at(ikey, compact)
        return entry is not None and entry[17] != _TOMB and entry[:17] == raw
