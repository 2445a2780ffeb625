"""The MVCC store's on-disk layout: database names, revision keys, index entries and
long-key surrogates (see kvstore.py's docstring for the layout)."""

from __future__ import annotations

import hashlib
import struct

KV_DB = b"kv"
INDEX_DB = b"index"
# A key's older index entries (kvstore.py's docstring): each put of a key with more than
# INLINE_MAX entries in `index` moves all but its newest INLINE_KEEP here, in one go.
HISTORY_DB = b"index_history"
INLINE_MAX = 16
INLINE_KEEP = 4
LONGKEYS_DB = b"longkeys"
META_REVS = b"kv_revisions"  # current revision, compact revision (2 x int64)
# Physical compaction still to do: revision (int64) + index key to resume from.
META_PHYSICAL = b"kv_compaction_pending"

# Keys up to this length are their own index key; longer ones get a surrogate
# of the same prefix plus a hash, 511 bytes (LMDB's maximum) in all. Nothing
# else in the index is longer than this, so surrogates are recognised by length.
DIRECT_KEY_MAX = 500
SURROGATE_LEN = 511

REV = struct.Struct(">QcQ")  # main, b"_", sub
I64 = struct.Struct(">q")
REVS = struct.Struct(">qq")
ENTRY_TAIL = struct.Struct(">qqq")  # create_revision, version, lease
# A live record's whole index entry: its revision key (main, b"_", sub), LIVE_FLAG, then
# ENTRY_TAIL's fields; one pack per put (its first REV_LEN bytes are the `kv` key).
LIVE_ENTRY = struct.Struct(">QcQcqqq")
TOMB = 0x74  # b"t"
LIVE_FLAG = b"\x00"
TOMB_FLAG = b"t"
REV_LEN = 17


def rev_key(main: int, sub: int = 0) -> bytes:
    """The `kv` key of revision (main, sub), without tombstone mark."""
    return REV.pack(main, b"_", sub)


def parse_rev_key(raw: bytes) -> tuple[int, int, bool]:
    """(main, sub, is_tombstone) of a `kv` key."""
    main, _, sub = REV.unpack_from(raw)
    return main, sub, len(raw) > REV_LEN


def entry_main(entry: bytes) -> int:
    return int.from_bytes(entry[:8], "big")


def entry_kv_key(entry: bytes) -> bytes:
    return entry[:18] if entry[17] == TOMB else entry[:17]


def surrogate(key: bytes) -> bytes:
    digest = hashlib.blake2b(key, digest_size=SURROGATE_LEN - DIRECT_KEY_MAX).digest()
    return key[:DIRECT_KEY_MAX] + digest
