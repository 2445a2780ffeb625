"""The writes of one mutating request to the MVCC store (`TxnWrite`)."""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING

import lmdb

from petcd import errors
from petcd.mvcc.backend import WriteBatch
from petcd.mvcc.keys import (
    DIRECT_KEY_MAX,
    ENTRY_TAIL,
    I64,
    INLINE_KEEP,
    INLINE_MAX,
    LIVE_ENTRY,
    LIVE_FLAG,
    REV,
    REV_LEN,
    TOMB,
    TOMB_FLAG,
    surrogate,
)
from petcd.mvcc.types import EVENT_DELETE, EVENT_PUT, KVEvent
from petcd.mvcc.view import KVView
from petcd.pb.mvccpb.kv_pb2 import KeyValue

_new_tuple = tuple.__new__

if TYPE_CHECKING:
    from petcd.mvcc.kvstore import KVStore


class TxnWrite(KVView):
    """The changes of ONE mutating request (Put, DeleteRange, or a whole Txn),
    which all get main revision `begin_rev + 1` (sub revisions 0, 1, ...).

    Use as a context manager: on a normal exit the request is finished (the
    store's revision advances if anything changed, lease hooks run); if an
    exception escapes, everything it wrote is undone (it writes through a
    nested LMDB transaction when `atomic`). Reads through it see its own
    earlier writes; `rev` is the revision they see.
    """

    __slots__ = ("_changed", "_done", "_events", "_leases", "_net_keys", "_parent", "_sub",
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
        self._hcur = None
        self.rev = self.begin_rev = store._rev
        self.compact_rev = store._compact
        self._store = store
        self._events = batch.events
        self._net_keys = 0  # keys created minus keys deleted (KVStore.live_keys, at end())
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
            raise errors.EMPTY_KEY()
        rev = self.begin_rev + 1
        if len(key) > DIRECT_KEY_MAX:
            found = self._index_key(key)
            ikey = surrogate(key) if found is None else found
        else:
            ikey = key
        prev_kv, created, old_lease, lease = put_record(
            self._store, self._txn, self._icur, ikey, rev, self._sub, key, value, lease,
            ignore_value, ignore_lease, self._events)
        self._sub += 1
        if created:
            self._net_keys += 1
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
            if entry is None or entry[17] == TOMB:
                return 0, []
            victims = [(key, ikey, entry)]
        else:
            pairs, _ = self._scan(key, end, view_rev, -1)
            victims = [
                (k, k if len(k) <= DIRECT_KEY_MAX else surrogate(k), entry)
                for k, entry in pairs
            ]
        if not victims:
            return 0, []
        self._net_keys -= len(victims)
        txn = self._txn
        kvdb = self._kv
        icur = self._icur
        events = self._events
        rev = self.begin_rev + 1
        prevs = []
        for k, ikey, entry in victims:
            prev_kv = txn.get(entry[:17], db=kvdb)
            assert prev_kv is not None
            prevs.append(prev_kv)
            revision = REV.pack(rev, b"_", self._sub)
            self._sub += 1
            if not txn.put(revision + TOMB_FLAG, KeyValue(key=k).SerializeToString(),
                           db=kvdb, append=True):
                raise RuntimeError("mvcc: revision out of order")
            icur.put(ikey, revision + TOMB_FLAG + ENTRY_TAIL.pack(0, 0, 0))  # (on it after)
            if icur.count() > INLINE_MAX:
                move_history(self._store, txn, icur, ikey)
            event_kv = KeyValue(key=k, mod_revision=rev).SerializeToString()
            events.append(KVEvent(rev, EVENT_DELETE, k, event_kv, prev_kv))
            old_lease = I64.unpack_from(entry, 34)[0]
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
        if self._net_keys and store._live_keys is not None:
            store._live_keys += self._net_keys
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


def put_record(store: KVStore, txn: lmdb.Transaction[bytes], cur: lmdb.Cursor[bytes],
               ikey: bytes, rev: int, sub: int, key: bytes, value: bytes, lease: int,
               ignore_value: bool, ignore_lease: bool,
               events: list[KVEvent]) -> tuple[bytes | None, bool, int, int]:
    """Write key=value at revision (rev, sub) under index key `ikey` (the key itself, or
    a long key's surrogate), with `cur` an index cursor on `txn`, and its event. Returns
    (previous serialized KeyValue or None, whether the key was created, the lease it
    had, the lease it has). ignore_value / ignore_lease keep the current value / lease
    and raise KEY_NOT_FOUND, having written nothing, if the key does not exist. The
    caller keeps the revision, key count and lease attachments (TxnWrite.put,
    put_request)."""
    prev = None
    existed = cur.set_key(ikey)
    if existed:
        cur.last_dup()
        entry = cur.value()
        if entry[17] != TOMB:
            prev = entry
    if prev is None:
        if ignore_value or ignore_lease:
            raise errors.KEY_NOT_FOUND()
        create, version, old_lease = rev, 1, 0
        prev_kv = None
    else:
        create, version, old_lease = ENTRY_TAIL.unpack_from(prev, 18)
        version += 1
        prev_kv = txn.get(prev[:17], None, store._kv)
        if ignore_value:
            value = KeyValue.FromString(prev_kv).value  # type: ignore[arg-type]
        if ignore_lease:
            lease = old_lease
    if not existed and ikey is not key:
        txn.put(ikey, key, db=store._longkeys)  # (a long key's first record)
    entry = LIVE_ENTRY.pack(rev, b"_", sub, LIVE_FLAG, create, version, lease)
    revision = entry[:REV_LEN]
    # (fields set one by one: cheaper than keyword arguments, parsed per call; a zero
    # lease is left unset, as protobuf leaves it out anyway)
    record = KeyValue()
    record.key = key
    record.create_revision = create
    record.mod_revision = rev
    record.version = version
    record.value = value
    if lease:
        record.lease = lease
    data = record.SerializeToString()
    # (LMDB calls with positional flags: (dupdata, overwrite, append[, db]); keyword
    # arguments cost a dict per call.)
    if not txn.put(revision, data, True, True, True, store._kv):
        raise RuntimeError("mvcc: revision out of order")
    store.put_bytes += len(key) + len(value)
    if existed:
        cur.put(ikey, entry, True, True, True)
        if cur.count() > INLINE_MAX:
            move_history(store, txn, cur, ikey)
    else:
        txn.put(ikey, entry, True, True, False, store._index)
    # (KVEvent's own __new__ is a Python function: a frame per event)
    events.append(_new_tuple(KVEvent, (rev, EVENT_PUT, key, data, prev_kv)))
    return prev_kv, prev is None, old_lease, lease


def move_history(store: KVStore, txn: lmdb.Transaction[bytes], cur: lmdb.Cursor[bytes],
                 ikey: bytes) -> None:
    """`ikey` (the index cursor `cur` on it) has more than INLINE_MAX entries in the
    index: move all but its newest INLINE_KEEP to the history database, in one go. A
    key's entries in the index then stay few enough to share its leaf page with other
    keys (past ~40 LMDB gives them a sub-database of their own, and every put to the
    key dirties a page of its own at the next commit), and its history gets a batch of
    older entries now and then, not one page per put."""
    n = cur.count() - INLINE_KEEP
    cur.first_dup()
    moved = []
    for _ in range(n):
        moved.append(cur.value())
        cur.delete()  # (on to the key's next entry)
    hist = txn.cursor(db=store._history)
    for entry in moved:  # (newer than any it has: appended)
        if not hist.put(ikey, entry, True, True, True):
            raise RuntimeError("mvcc: index history out of order")


def put_request(store: KVStore, batch: WriteBatch, key: bytes, value: bytes, lease: int,
                ignore_value: bool, ignore_lease: bool) -> tuple[int, bytes | None]:
    """A whole request that is one put (a Put, a txn of one put): as TxnWrite.put and
    end() would do it, without the TxnWrite (an object, its cursor lookup and two more
    calls per put). Nothing is written when it raises EtcdError. A long key goes the
    TxnWrite way (its surrogate is looked up through the view)."""
    if store._writer is not None:
        raise RuntimeError("mvcc: another write request is open")
    if batch is not store.backend.batch:
        raise RuntimeError("mvcc: not the backend's open write batch")
    if not key or len(key) > DIRECT_KEY_MAX:
        return put_through_txnwrite(store, batch, key, value, lease, ignore_value,
                                    ignore_lease)
    txn = batch.txn
    cur = store._cursor
    if store._cursor_txn is not txn or cur is None:
        cur = store._batch_cursor(txn)
    rev = store._rev + 1
    prev_kv, created, old_lease, lease = put_record(
        store, txn, cur, key, rev, 0, key, value, lease, ignore_value, ignore_lease,
        batch.events)
    store._rev = rev
    if created and store._live_keys is not None:
        store._live_keys += 1
    if old_lease or lease:
        lessor = store.lessor
        if lessor is not None:
            if old_lease:
                lessor.detach(old_lease, key)
            if lease:
                lessor.attach(lease, key)
    return rev, prev_kv


def put_through_txnwrite(store: KVStore, batch: WriteBatch, key: bytes, value: bytes,
                         lease: int, ignore_value: bool,
                         ignore_lease: bool) -> tuple[int, bytes | None]:
    """A one-put request as a TxnWrite: put_request's general way (and what its test
    compares the short way with)."""
    tw = store.write(batch)
    try:
        result = tw.put(key, value, lease, ignore_value=ignore_value,
                        ignore_lease=ignore_lease)
    except BaseException:
        tw.abort()
        raise
    tw.end()
    return result
