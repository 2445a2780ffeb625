"""etcd's backend layout and the conversions between an etcd snapshot (a bbolt file) and a
petcd backend (LMDB), both ways.

Interface facts of etcd 3.4/3.5's layout (bucket: key -> value):
- `key`: revision key (8-byte big-endian main, `_`, 8-byte sub, `t` for a deletion) ->
  mvccpb.KeyValue. petcd's `kv` database is the same records under the same keys.
- `meta`: `consistent_index` (u64 BE), `term` (u64 BE, 3.5), `scheduledCompactRev` and
  `finishedCompactRev` (revision keys).
- `lease`: lease ID (u64 BE) -> leasepb.Lease{ID=1, TTL=2, RemainingTTL=3}.
- `members`: hex member ID -> JSON {"id": decimal, "peerURLs", "isLearner"?, "name"?,
  "clientURLs"?}; `members_removed`: hex ID -> "removed".
- `alarm`: serialized AlarmMember -> empty; `auth` (`authEnabled`, `authRevision`),
  `authUsers` (name -> authpb.User), `authRoles` (name -> authpb.Role): petcd keeps these
  under the same names, keys and values, so they are copied as they are.
- `cluster`: `clusterVersion` -> "3.4.0".

Export reads everything in one LMDB read transaction, so the file is the state of one
committed batch: one revision, one consistent index. Import fills an empty backend in one
write batch, rebuilding petcd's index from the history.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import crc32c
import lmdb

from petcd.lease.lessor import LEASE_DB, id_key, lease_record, parse_lease_record
from petcd.mvcc.backend import Backend
from petcd.mvcc.kvstore import KVStore, rev_key
from petcd.pb.wire import read_varint, varint
from petcd.snapshot.bbolt import BoltError, BoltReader, BoltWriter

_U64 = struct.Struct(">Q")
_MASK64 = (1 << 64) - 1
_INDEX_TERM = struct.Struct(">QQ")
# Buckets whose records petcd keeps under the same names, keys and values (alarms, and the
# auth store: `authEnabled`/`authRevision`, users and roles as authpb messages).
_SAME_LAYOUT = (b"alarm", b"auth", b"authRoles", b"authUsers")
_MEMBERS = b"members"
_REMOVED = b"members_removed"
CLUSTER_VERSION = b"3.4.0"
_IMPORT_BATCH = 50_000  # history records per write transaction on import


class MigrationError(Exception):
    """The etcd file holds something petcd cannot take (message says what)."""


# -- leasepb.Lease, by hand (three int64 fields) ----------------------------------------

def _signed(n: int) -> int:
    return n - (1 << 64) if n >= 1 << 63 else n


def encode_lease(lease_id: int, ttl: int, remaining: int) -> bytes:
    out = b""
    for field, value in ((1, lease_id), (2, ttl), (3, remaining)):
        if value:
            out += bytes([field << 3]) + varint(value & _MASK64)
    return out


def decode_lease(raw: bytes) -> tuple[int, int, int]:
    """(ID, TTL, RemainingTTL) of a leasepb.Lease; unknown fields are skipped."""
    fields = {1: 0, 2: 0, 3: 0}
    i = 0
    while i < len(raw):
        tag, i = read_varint(raw, i)
        wire = tag & 7
        if wire == 0:
            value, i = read_varint(raw, i)
            fields[tag >> 3] = _signed(value)
        elif wire == 2:
            size, i = read_varint(raw, i)
            i += size
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        else:
            raise ValueError("malformed lease record")
    if i > len(raw):
        raise ValueError("malformed lease record")
    return fields[1], fields[2], fields[3]



def _rev_main(raw: bytes) -> int:
    return int(_U64.unpack_from(raw)[0])


# -- export: petcd backend -> etcd bbolt file ----------------------------------------------

def export_bolt(backend: Backend, store: KVStore, out: BinaryIO, page_size: int = 4096,
                txn: lmdb.Transaction[bytes] | None = None) -> int:
    """Writes the backend as an etcd snapshot database (no sha256 trailer) into `out`, a
    seekable file; returns its size. `txn`: the read transaction to export (from another
    thread: `backend.read_snapshot()` taken on the applying thread); default: the
    applied state read here."""
    writer = BoltWriter(out, page_size)
    with contextlib.nullcontext(txn) if txn is not None else backend.read() as txn:
        def items(name: bytes) -> Iterator[tuple[bytes, bytes]]:
            db = backend.existing_db(name, txn)
            if db is not None:
                yield from txn.cursor(db=db)

        _, compact = store.revisions_in(txn)
        index, term = _INDEX_TERM.unpack(txn.get(b"consistent_index", db=backend.meta_db)
                                         or bytes(16))
        buckets: dict[bytes, Iterator[tuple[bytes, bytes]]] = {
            name: items(name) for name in _SAME_LAYOUT}
        buckets[b"cluster"] = iter([(b"clusterVersion", CLUSTER_VERSION)])
        buckets[b"key"] = store.history_in(txn)
        buckets[b"lease"] = (
            (k, encode_lease(_U64.unpack(k)[0], *parse_lease_record(v)))
            for k, v in items(LEASE_DB))
        buckets[b"members"] = (
            (k, _etcd_member(v)) for k, v in items(_MEMBERS))
        buckets[b"members_removed"] = ((k, b"removed") for k, _ in items(_REMOVED))
        meta = [(b"consistent_index", _U64.pack(index))]
        if compact > 0:
            meta += [(b"finishedCompactRev", rev_key(compact)),
                     (b"scheduledCompactRev", rev_key(compact))]
        meta.append((b"term", _U64.pack(term)))
        buckets[b"meta"] = iter(sorted(meta))
        for name in sorted(buckets):
            writer.bucket(name, buckets[name])
        return writer.finish()


def _etcd_member(raw: bytes) -> bytes:
    doc = json.loads(raw)
    out: dict[str, object] = {"id": int(doc["id"], 16), "peerURLs": doc.get("peerURLs", [])}
    if doc.get("isLearner"):
        out["isLearner"] = True
    if doc.get("name"):
        out["name"] = doc["name"]
    if doc.get("clientURLs"):
        out["clientURLs"] = doc["clientURLs"]
    return json.dumps(out, separators=(",", ":")).encode()


# -- import: etcd bbolt file -> petcd backend ----------------------------------------------

@dataclass(frozen=True, slots=True)
class ImportSummary:
    revision: int
    compact_revision: int
    keys: int  # history records
    leases: int
    alarms: int


def import_bolt(bolt: BoltReader, backend: Backend, store: KVStore) -> ImportSummary:
    """Fills an empty petcd backend with an etcd database's keys (every revision of the
    history the file holds), compaction state, leases, alarms and auth store. Members are
    left to the caller (a restore replaces them)."""
    bolt.check()
    buckets = set(bolt.buckets())
    if b"key" not in buckets or b"meta" not in buckets:
        raise MigrationError("not an etcd backend: no `key` or `meta` bucket")
    meta = dict(bolt.items(b"meta"))
    compact = -1
    for name in (b"scheduledCompactRev", b"finishedCompactRev"):
        if name in meta:
            compact = max(compact, _rev_main(meta[name]))
    lease_db = backend.open_db(LEASE_DB)
    same_dbs = {name: backend.open_db(name) for name in _SAME_LAYOUT}
    counted = 0

    def history() -> Iterator[tuple[bytes, bytes]]:
        nonlocal counted
        for item in bolt.items(b"key"):
            counted += 1
            yield item

    leases = alarms = 0
    records = history()
    while True:  # bounded write transactions: LMDB keeps a batch's dirty pages in memory
        with backend.begin_write() as batch:
            before = counted
            revision = store.load_history(batch, itertools.islice(records, _IMPORT_BATCH),
                                          compact)
        if counted - before < _IMPORT_BATCH:
            break
    with backend.begin_write() as batch:
        for k, v in bolt.items(b"lease"):
            lease_id, ttl, remaining = decode_lease(v)
            if len(k) != 8 or _U64.unpack(k)[0] != lease_id & ((1 << 64) - 1):
                raise MigrationError(f"lease record {k.hex()} does not match its ID")
            batch.txn.put(id_key(lease_id), lease_record(ttl, remaining), db=lease_db)
            leases += 1
        for name, db in same_dbs.items():
            for k, v in bolt.items(name):
                batch.txn.put(k, v, db=db)
                alarms += name == b"alarm"
    return ImportSummary(revision, compact, counted, leases, alarms)


# -- status ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class BoltStatus:
    hash: int
    revision: int
    total_key: int
    total_size: int


def bolt_status(path: str) -> BoltStatus:
    """What `etcdctl snapshot status` reports for a bbolt file: CRC-32C of every bucket's
    name, keys and values; the newest revision in `key`; entries; used size."""
    with BoltReader(path) as bolt:
        try:
            bolt.check()
        except BoltError as e:
            raise BoltError(f"snapshot file integrity check failed. 1 errors found.\n{e}") \
                from None
        crc = 0
        total = 0
        revision = 0
        for name in bolt.buckets():
            crc = crc32c.crc32c(name, crc)
            for k, v in bolt.items(name):
                crc = crc32c.crc32c(v, crc32c.crc32c(k, crc))
                total += 1
                if name == b"key":
                    revision = _rev_main(k)
        return BoltStatus(crc, revision, total, bolt.size)


