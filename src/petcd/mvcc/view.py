"""Reads of the MVCC store: `KVView` over one LMDB transaction at one revision, and
`ReadTxn`, a view that owns (or borrows) its transaction."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import takewhile
from operator import itemgetter
from types import TracebackType
from typing import TYPE_CHECKING

import lmdb

from petcd import errors
from petcd.mvcc.keys import (
    DIRECT_KEY_MAX,
    ENTRY_TAIL,
    REV,
    REV_LEN,
    SURROGATE_LEN,
    TOMB,
    entry_main,
    surrogate,
)
from petcd.mvcc.types import EVENT_DELETE, EVENT_PUT, KVEvent, RangeResult
from petcd.pb.mvccpb.kv_pb2 import KeyValue

if TYPE_CHECKING:
    from petcd.mvcc.kvstore import KVStore

_VALUE = itemgetter(1)
_FLAG = itemgetter(17)


class RangeCounts:
    """What the pages of a paginated range at the head revision leave for the next:
    (a live key K, end) -> (revision, live keys in [K, end)). A page counts the keys
    after it (etcd's `count` is the whole range's); the next page starts at the first
    key not returned, so while the revision is the same its count is known without
    walking the rest again: a paginated read of N keys costs O(N), not O(N^2 / page).
    Held by the store; a few entries, each used once."""

    __slots__ = ("_counts",)

    LIMIT = 64  # entries (each two keys of at most 500 bytes)

    def __init__(self) -> None:
        self._counts: dict[tuple[bytes, bytes], tuple[int, int]] = {}

    def take(self, key: bytes, end: bytes, rev: int) -> int | None:
        hit = self._counts.pop((key, end), None)
        return hit[1] if hit is not None and hit[0] == rev else None

    def put(self, key: bytes, end: bytes, rev: int, n: int) -> None:
        counts = self._counts
        if len(key) > DIRECT_KEY_MAX or len(end) > DIRECT_KEY_MAX:
            return
        if len(counts) >= self.LIMIT:  # (many readers at once, or abandoned reads)
            counts.clear()
        counts[(key, end)] = (rev, n)

    def clear(self) -> None:
        self._counts.clear()


class KVView:
    """Reads over one LMDB transaction at one revision."""

    __slots__ = ("_hcur", "_icur", "_index", "_kv", "_longkeys", "_store", "_txn",
                 "compact_rev", "rev")

    def __init__(
        self, store: KVStore, txn: lmdb.Transaction[bytes], rev: int, compact_rev: int
    ) -> None:
        self._txn = txn
        self._kv = store._kv
        self._index = store._index
        self._longkeys = store._longkeys
        self._store = store
        self._icur = txn.cursor(db=store._index)
        self._hcur: lmdb.Cursor[bytes] | None = None  # (on the history: made when needed)
        self.rev = rev
        self.compact_rev = compact_rev

    # -- index helpers ---------------------------------------------------------

    def _index_key(self, key: bytes) -> bytes | None:
        """The index key of `key`, or None if a long key was never written."""
        if len(key) <= DIRECT_KEY_MAX:
            return key
        sur = surrogate(key)
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
        if entry_main(entry) <= rev:
            return entry
        cur.set_range_dup(ikey, REV.pack(rev + 1, b"_", 0))
        if cur.prev_dup():
            return cur.value()
        # Older than the key's every entry in the index: its history has the rest.
        hcur = self._hcur
        if hcur is None:
            hcur = self._hcur = self._txn.cursor(db=self._store._history)
        if not hcur.set_key(ikey):
            return None
        if hcur.set_range_dup(ikey, REV.pack(rev + 1, b"_", 0)):
            return hcur.value() if hcur.prev_dup() else None
        # (every one is older than rev + 1: the newest; the failed seek left the
        # cursor nowhere, so it goes back to the key first)
        hcur.set_key(ikey)
        hcur.last_dup()
        return hcur.value()

    # -- reads -------------------------------------------------------------------

    def _check_rev(self, rev: int) -> int:
        if rev <= 0:
            return self.rev
        if rev > self.rev:
            raise errors.FUTURE_REV()
        if rev < self.compact_rev:
            raise errors.COMPACTED()
        return rev

    def get(self, key: bytes, rev: int = 0) -> bytes | None:
        """The serialized KeyValue of `key` at `rev` (0: this view's revision),
        or None if the key does not exist then."""
        # The hot path of every read: kept flat on purpose.
        if not key:
            self._check_rev(rev)
            return None  # LMDB has no empty keys; neither does etcd's API
        if len(key) > DIRECT_KEY_MAX:
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
        if entry[17] == TOMB:
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
        if entry[17] == TOMB:
            return None
        create, version, lease = ENTRY_TAIL.unpack_from(entry, 18)
        return create, entry_main(entry), version, lease

    def range(
        self,
        key: bytes,
        end: bytes | None = None,
        *,
        rev: int = 0,
        limit: int = 0,
        count_only: bool = False,
        sink: Callable[[bytes], object] | None = None,
    ) -> RangeResult:
        """Keys in [key, end) at revision `rev` (0: this view's revision).

        end=None reads the single `key`; end=b"" means no upper bound. `limit`
        caps the records returned (0: all), never `count`; with `count_only`
        no records are returned. Raises FUTURE_REV / COMPACTED for a revision
        above the view's or below the compacted one. With `sink`, each record is
        handed to it as it is read instead of collected (the result's `kvs` stays
        empty): a large range then holds nothing per key but what the sink keeps.
        """
        at = self._check_rev(rev)
        if end is None:
            one = self.get(key, at)
            if one is None:
                return RangeResult([], 0, self.rev)
            if count_only:
                return RangeResult([], 1, self.rev)
            if sink is not None:
                sink(one)
                return RangeResult([], 1, self.rev)
            return RangeResult([one], 1, self.rev)
        want = 0 if count_only else (limit or -1)
        get = self._txn.get
        kvdb = self._kv
        kvs: list[bytes] = []
        emit = kvs.append if sink is None else sink
        count = 0
        # At the head revision, the keys past those returned are only counted: by a
        # C-level walk over the index (a page of a huge range must not cost a Python
        # loop over every key after it).
        fast_count = want >= 0 and at >= self.rev
        if fast_count and want == 0:
            n = self._count_head(key, end)
            if n is not None:
                return RangeResult(kvs, n, self.rev)
        first = last = None  # the first live key read, the last one returned
        last_at = 0  # live keys read before `last`
        for ikey, entry in self._live(key, end, at):
            if want < 0 or count < want:
                emit(get(entry[:17], None, kvdb))  # type: ignore[arg-type]
                last, last_at = ikey, count
            elif fast_count and len(ikey) <= DIRECT_KEY_MAX:
                total = self._count_past(first or ikey, ikey, count, last, last_at, end)
                if total is not None:
                    return RangeResult(kvs, total, self.rev)
                fast_count = False  # long keys in the way: count them one by one
            if first is None:
                first = ikey
            count += 1
        return RangeResult(kvs, count, self.rev)

    def scan(self, key: bytes, end: bytes, rev: int, sink: Callable[[bytes], bool]) -> bytes | None:
        """Hand the record of each live key in [key, end) at revision `rev` (b"": no upper
        bound) to `sink`, in key order, until it returns True; returns that record's key
        (resume after it), or None once the range is done. Nothing is counted: this is a
        range read in pieces, each piece a synchronous step of its own (see RangeStream).
        Raises COMPACTED once `rev` is below the compacted revision (a compaction at or
        below `rev` keeps every record live at `rev`, so pieces stay consistent)."""
        at = self._check_rev(rev)
        get = self._txn.get
        kvdb = self._kv
        for ikey, entry in self._live(key, end, at):
            if sink(get(entry[:17], None, kvdb)):  # type: ignore[arg-type]
                return ikey
        return None

    def _count_past(self, first: bytes, ikey: bytes, seen: int, last: bytes | None,
                    last_at: int, end: bytes) -> int | None:
        """The count of a range at the head revision read from its first live key
        `first`, with `seen` live keys before `ikey` (the first not returned) and
        `last_at` before `last` (the last returned): from what the previous page left
        (RangeCounts), else by a walk over the rest. Leaves the count for a next page
        starting at `ikey`, or at `last` (a caller that read one record more than it
        returns). None: long keys in the way."""
        counts = self._range_counts()
        total = None if counts is None else counts.take(first, end, self.rev)
        if total is None:
            n = self._count_head(ikey + b"\0", end)
            if n is None:
                return None
            total = seen + 1 + n
        if counts is not None:
            counts.put(ikey, end, self.rev, total - seen)
            if last is not None:
                counts.put(last, end, self.rev, total - last_at)
        return total

    def _range_counts(self) -> RangeCounts | None:
        # Only reads of the applied state between write requests (ReadTxn) use them: a
        # view inside a write request may see its changes under the same revision.
        return None

    def _count_head(self, start: bytes, end: bytes) -> int | None:
        """Live keys in [start, end) at this view's (head) revision, walking the index
        backwards from `end`: LMDB's previous-key step lands on a key's newest entry,
        so py-lmdb's iterator does the walk. None if a long key (surrogate) is met."""
        if len(start) > DIRECT_KEY_MAX or len(end) > DIRECT_KEY_MAX:
            return None  # bounds compare with surrogates by full key: the slow way
        if end and end <= start:
            return 0
        cur = self._txn.cursor(db=self._index)
        if end and cur.set_range(end):
            if not cur.prev_nodup():
                return 0
        elif not cur.last():
            return 0
        walk = cur.iterprev_nodup(keys=True, values=True)
        if not self._txn.stat(self._longkeys)["entries"]:
            # No long keys anywhere: the walk needs no per-key Python at all. (k, v) >=
            # (start,) exactly when k >= start; byte 17 of an entry is its tombstone flag.
            flags = bytes(map(_FLAG, map(_VALUE, takewhile((start,).__le__, walk))))
            return len(flags) - flags.count(TOMB)
        n = 0
        for k, v in walk:
            if k < start:
                break
            if len(k) == SURROGATE_LEN:
                return None
            if v[17] != TOMB:
                n += 1
        return n

    def _scan(
        self, key: bytes, end: bytes, rev: int, want: int
    ) -> tuple[list[tuple[bytes, bytes]], int]:
        """Live (key, entry) pairs in [key, end) at `rev`, at most `want` of
        them (-1: all), and how many live keys the range has in total."""
        found: list[tuple[bytes, bytes]] = []
        count = 0
        for pair in self._live(key, end, rev):
            if want < 0 or count < want:
                found.append(pair)
            count += 1
        return found, count

    def _live(self, key: bytes, end: bytes, rev: int) -> Iterator[tuple[bytes, bytes]]:
        """Live (key, index entry) pairs in [key, end) at `rev`, in key order, read
        lazily from the index cursor (consume it before using the cursor otherwise)."""
        if end and end <= key:
            return
        cur = self._icur
        long_start = len(key) > DIRECT_KEY_MAX
        if not (cur.set_range(key[:DIRECT_KEY_MAX] if long_start else key) if key
                else cur.first()):
            return
        at_head = rev >= self.rev  # nothing newer than the view: newest entry wins
        while True:
            ikey = cur.key()
            if len(ikey) == SURROGATE_LEN:
                prefix = ikey[:DIRECT_KEY_MAX]
                if end and prefix >= end:
                    return
                group, more = self._long_group(prefix, rev)
                for full, entry in group:
                    if full < key or (end and full >= end):
                        continue
                    yield full, entry
                if not more:
                    return
                continue
            if end and ikey >= end:
                return
            if not (long_start and ikey < key):
                if at_head:
                    cur.last_dup()
                    entry = cur.value()
                else:
                    entry = self._entry_at(ikey, rev)  # type: ignore[assignment]
                if entry is not None and entry[17] != TOMB:
                    yield ikey, entry
            if not cur.next_nodup():
                return

    def _long_group(self, prefix: bytes, rev: int) -> tuple[list[tuple[bytes, bytes]], bool]:
        """Live long keys sharing a 500-byte prefix, at `rev`, sorted by key,
        starting from the cursor on the group's first surrogate; leaves the
        cursor on the next index key. Returns (pairs, cursor_valid)."""
        cur = self._icur
        surrogates = []
        more = True
        while True:
            ikey = cur.key()
            if len(ikey) != SURROGATE_LEN or ikey[:DIRECT_KEY_MAX] != prefix:
                break
            surrogates.append(ikey)
            if not cur.next_nodup():
                more = False
                break
        resume = None if not more else cur.key()
        pairs = []
        for sur in surrogates:
            entry = self._entry_at(sur, rev)
            if entry is not None and entry[17] != TOMB:
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
            raise errors.COMPACTED()
        last = self.rev if end_rev <= 0 else min(end_rev, self.rev)
        out: list[KVEvent] = []
        cur = self._txn.cursor(db=self._kv)
        if not cur.set_range(REV.pack(max(start_rev, 0), b"_", 0)):
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
            if len(raw) > REV_LEN:
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
        if not cur.set_range(REV.pack(max(start_rev, 0), b"_", 0)):
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

    __slots__ = ("_counts", "_owned")

    def __init__(self, store: KVStore, txn: lmdb.Transaction[bytes], rev: int,
                 compact_rev: int, owned: bool = True) -> None:
        KVView.__init__(self, store, txn, rev, compact_rev)
        self._counts = store.range_counts
        self._owned = owned

    def _range_counts(self) -> RangeCounts:
        return self._counts

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
        self.close()
