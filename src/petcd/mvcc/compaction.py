"""The physical part of a compaction: the records and index entries no read at or after
the compaction revision can see, removed key by key (KVStore.compact / compact_step say
when and how much)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import lmdb

from petcd.mvcc.keys import REV, SURROGATE_LEN, TOMB, entry_kv_key

if TYPE_CHECKING:
    from petcd.mvcc.kvstore import KVStore

# A key's index entries sit in its leaf node while they fit (~40 of them with a short key,
# ~35 with a 511-byte one); past that LMDB moves them to a sub-database of the key's own,
# and keeps it when compaction leaves a few: every put to the key then dirties a page of
# its own at the next commit (~1.6 pages a put against ~0.1 when keys share leaf pages).
# So a key that may have had that many and is left with at most REWRITE_KEPT is written
# anew (its entries deleted and put back, the same bytes), which puts them back in its
# leaf node.
MAY_HAVE_SPILLED = 32
REWRITE_KEPT = 24


def compact_physical(
    store: KVStore, txn: lmdb.Transaction[bytes], rev: int, start: bytes, budget: int | None,
    deadline: float | None = None,
) -> bytes | None:
    """Remove what compaction at `rev` frees, for index keys from `start`
    on, at most `budget` of them; returns the key to resume at, or None
    when the end was reached."""
    kvdb = store._kv
    cur = txn.cursor(db=store._index)
    hcur = txn.cursor(db=store._history)
    history = txn.stat(store._history)["entries"] > 0  # (none: no seek per key there)
    limit = REV.pack(rev + 1, b"_", 0)
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
        # The key's entries <= rev (its history's, all older than the index's, then
        # the index's): all but the newest go, and the newest too if it is a deletion.
        past = []
        if history and hcur.set_key(ikey):
            entry = hcur.value()
            while entry < limit:
                past.append(entry)
                if not hcur.next_dup():
                    break
                entry = hcur.value()
        old = []
        if first < limit:
            old.append(first)
            while cur.next_dup():
                entry = cur.value()
                if entry >= limit:
                    break
                old.append(entry)
        newest = old or past
        if newest and newest[-1][17] != TOMB:
            newest.pop()
        if past:
            hcur.set_key(ikey)
            for entry in past:  # they lead the key's history
                txn.delete(entry_kv_key(entry), db=kvdb)
                hcur.delete()
        if (old or past) and store.on_compaction is not None:
            store.on_compaction("keys", len(old) + len(past))
        if old:
            cur.first_dup()
            for entry in old:  # they lead the key's entries
                txn.delete(entry_kv_key(entry), db=kvdb)
                cur.delete()
            more = cur.set_range(ikey)
            if more and cur.key() != ikey:
                if len(ikey) == SURROGATE_LEN:
                    doomed_keys.append(ikey)
                continue
            if not more:
                if len(ikey) == SURROGATE_LEN:
                    doomed_keys.append(ikey)
                break
            kept = cur.count()
            if kept <= REWRITE_KEPT and kept + len(old) >= MAY_HAVE_SPILLED:
                rewrite_entries(store, txn, cur, ikey)
        more = cur.next_nodup()
    for sur in doomed_keys:
        txn.delete(sur, db=store._longkeys)
    return resume


def rewrite_entries(store: KVStore, txn: lmdb.Transaction[bytes], cur: lmdb.Cursor[bytes],
                    ikey: bytes) -> None:
    """Write the index entries of `ikey` (the cursor on its first) anew, unchanged:
    out of a sub-database of their own, back into the key's leaf node (above). The
    cursor is left on the key's first entry."""
    entries = list(cur.iternext_dup())
    txn.delete(ikey, db=store._index)  # (all of its entries)
    index = store._index
    for entry in entries:
        if not txn.put(ikey, entry, db=index):
            raise RuntimeError("mvcc: an index entry could not be written back")
    cur.set_key(ikey)
