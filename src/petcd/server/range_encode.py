"""Plain ranges (key order, no revision filters; keys_only or not) serialized straight
from the stored records: no message objects, no list of records.

Up to STREAM_AT bytes of records the RangeResponse is one buffer. Past that it becomes a
`RangeStream` (a LazyMessage): the rest of the range is walked once more to learn its size
and count (gRPC's length prefix comes first), then re-read from the store CHUNK bytes at a
time, at the same revision, as the connection takes them. Each piece is a read of its own
(one synchronous step, as every read of the applied state here), so nothing is held open
between pieces: a slow or gone client costs the member at most STREAM_AT + CHUNK bytes of
records, whatever the range's size. A compaction above the range's revision while it is
sent ends the call (COMPACTED): the records it still had to send may be gone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from petcd.pb.mvccpb.kv_pb2 import KeyValue
from petcd.pb.wire import LazyMessage, varint, varint_len

if TYPE_CHECKING:
    from petcd.mvcc.kvstore import KVStore
    from petcd.mvcc.view import ReadTxn
    from petcd.pb.etcdserverpb import rpc_pb2 as pb

STREAM_AT = 1 << 20  # bytes of records a response is built with at once
CHUNK = 256 << 10  # bytes of records per later piece

# RangeResponse field 2 (kvs) tag and length, for records shorter than this.
_KV_FIELD_CACHED = 4096
_KV_FIELD = [b"\x12" + varint(n) for n in range(_KV_FIELD_CACHED)]


class _Overflow(Exception):
    """The records written passed STREAM_AT (args: the last record written)."""


def encode_range(store: KVStore, req: pb.RangeRequest, suffix: bytes
                 ) -> bytearray | RangeStream:
    """The serialized RangeResponse of a plain range with `suffix` appended: one buffer,
    or a RangeStream when its records pass STREAM_AT bytes."""
    if not req.range_end:  # one key (the hottest read): no sink, nothing to stream
        with store.read() as view:
            rev = varint(view.rev)
            raw = view.get(req.key, req.revision)
        out = bytearray(b"\x0a" + varint(len(rev) + 1) + b"\x18" + rev)  # header {revision}
        if raw is not None:
            if not req.count_only:
                if req.keys_only:
                    raw = without_value(raw)
                n = len(raw)
                out += _KV_FIELD[n] if n < _KV_FIELD_CACHED else b"\x12" + varint(n)
                out += raw
            out += b"\x20\x01"  # count (a limit cannot cut one key)
        out += suffix
        return out
    buf = bytearray()
    extend = buf.extend
    stream_at = STREAM_AT

    def emit(raw: bytes) -> None:
        n = len(raw)
        try:
            extend(_KV_FIELD[n])
        except IndexError:  # (a record of 4 KiB or more)
            extend(b"\x12" + varint(n))
        extend(raw)
        if len(buf) > stream_at:
            raise _Overflow(raw)

    if req.keys_only:
        plain = emit

        def emit(raw: bytes) -> None:
            plain(without_value(raw))

    limit = req.limit if req.limit > 0 else 0
    end = req.range_end
    if end == b"\x00":
        end = b""  # no upper bound
    with store.read() as view:
        rev = varint(view.rev)
        extend(b"\x0a" + varint(len(rev) + 1) + b"\x18" + rev)  # header {revision}
        try:
            count = view.range(req.key, end, rev=req.revision, limit=limit,
                               count_only=req.count_only, sink=emit).count
        except _Overflow as o:
            return _stream(store, view, req, end, buf, o.args[0], limit, suffix)
    if limit and count > limit:
        extend(b"\x18\x01")  # more
    if count:
        extend(b"\x20" + varint(count))
    extend(suffix)
    return buf


def _stream(store: KVStore, view: ReadTxn, req: pb.RangeRequest, end: bytes,
            first: bytearray, last: bytes, limit: int, suffix: bytes
            ) -> bytearray | RangeStream:
    """The records passed STREAM_AT at `last` (written into `first`): the rest of the
    range is walked for its size and count, and sent as a RangeStream."""
    at = req.revision if req.revision > 0 else view.rev  # (pieces read here, not at the head)
    resume = KeyValue.FromString(last).key + b"\0"
    sent = view.range(req.key, resume, rev=at, count_only=True).count
    left = limit - sent if limit else 0
    rest = 0

    keys_only = req.keys_only

    def size(raw: bytes) -> None:
        nonlocal rest
        n = len(without_value(raw) if keys_only else raw)
        rest += 1 + varint_len(n) + n

    if limit and not left:
        rr = view.range(resume, end, rev=at, count_only=True)
    else:
        rr = view.range(resume, end, rev=at, limit=left, sink=size)
    count = sent + rr.count
    left = min(left, rr.count) if limit else rr.count
    tail = bytearray()
    if limit and count > limit:
        tail += b"\x18\x01"  # more
    tail += b"\x20" + varint(count)
    tail += suffix
    if not rest:
        first += tail
        return first
    return RangeStream(store, first, resume, end, at, left, rest, bytes(tail), keys_only)


class RangeStream(LazyMessage):
    """The rest of a large plain range, read `CHUNK` bytes of records at a time (see the
    module's docstring). `first` is the part already read, `left` the records after it
    (from `key` up to `end`, at revision `rev`), `rest` their encoded size."""

    __slots__ = ("_end", "_first", "_key", "_keys_only", "_left", "_rev", "_sent", "_store",
                 "_tail")

    def __init__(self, store: KVStore, first: bytearray, key: bytes, end: bytes, rev: int,
                 left: int, rest: int, tail: bytes, keys_only: bool = False) -> None:
        super().__init__(len(first) + rest + len(tail))
        self._keys_only = keys_only
        self._store = store
        self._first: bytearray | None = first
        self._key = key
        self._end = end
        self._rev = rev
        self._left = left
        self._tail: bytes | None = tail
        self._sent = 0

    def next_chunk(self) -> bytes | bytearray | None:
        first = self._first
        if first is not None:
            self._first = None
            self._sent = len(first)
            return first
        if self._left:
            buf = bytearray()
            extend = buf.extend
            left = self._left
            keys_only = self._keys_only

            def emit(raw: bytes) -> bool:
                nonlocal left
                if keys_only:
                    raw = without_value(raw)
                n = len(raw)
                try:
                    extend(_KV_FIELD[n])
                except IndexError:
                    extend(b"\x12" + varint(n))
                extend(raw)
                left -= 1
                return not left or len(buf) >= CHUNK

            with self._store.read() as view:
                last = view.scan(self._key, self._end, self._rev, emit)
            self._sent += len(buf)
            if (last is None and left) or self._sent + len(self._tail or b"") > self.size:
                raise RuntimeError("a streamed range changed while it was sent")
            self._left = left
            if last is not None:
                self._key = last + b"\0"
            return buf
        tail = self._tail
        if tail is None:
            return None
        self._tail = None
        if self._sent + len(tail) != self.size:
            raise RuntimeError("a streamed range changed while it was sent")
        return tail


def without_value(raw: bytes) -> bytes:
    """A stored KeyValue record without its value (field 5), for keys_only: the fields
    are walked (a key may hold any byte), the value's bytes cut out."""
    pos, n = 0, len(raw)
    while pos < n:
        start = pos
        tag = raw[pos]  # (KeyValue's fields are 1-6: one-byte tags)
        pos += 1
        if tag & 7 == 0:  # varint
            while raw[pos] & 0x80:
                pos += 1
            pos += 1
        elif tag & 7 == 2:  # length-delimited
            size = shift = 0
            while True:
                b = raw[pos]
                pos += 1
                size |= (b & 0x7F) << shift
                if b < 0x80:
                    break
                shift += 7
            pos += size
        else:
            raise ValueError(f"unexpected wire type in a stored record: {tag}")
        if tag == 0x2A:
            return raw[:start] + raw[pos:]
    return raw
