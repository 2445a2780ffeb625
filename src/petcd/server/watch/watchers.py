"""Watchers and how they are found: a watcher's key, range and filters, the groups that
match a changed key to its watchers, and the shared wire encoding of a run of events."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Final

from petcd.errors import EtcdError
from petcd.mvcc.kvstore import KVView
from petcd.mvcc.types import EVENT_DELETE, EVENT_PUT, KVEvent
from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.pb.mvccpb.kv_pb2 import KeyValue
from petcd.server.proposal import varint

if TYPE_CHECKING:
    from petcd.server.watch.stream import WatchStream


# etcd's InvalidWatchID: failed creations and stream-wide progress responses carry it.
INVALID_WATCH_ID: Final = -1
# Revisions a catching-up watcher is sent per response (etcd's watchBatchMaxRevs).
MAX_CATCHUP_REVISIONS: Final = 1000
# One catch-up round stops at a revision boundary once it has scanned this many
# records or matched this many bytes, so the loop is never held for long.
CATCHUP_SCAN_RECORDS: Final = 20_000
CATCHUP_MATCHED_BYTES: Final = 8 << 20
# Etcd's errors for a refused watch creation (sent as cancel_reason).
ERR_EMPTY_RANGE: Final = "mvcc: watcher range is empty"
ERR_DUPLICATE_ID: Final = "mvcc: duplicate watch ID provided on the WatchStream"
# Etcd never sends periodic progress more often than this.
MIN_PROGRESS_INTERVAL: Final = 0.1

SYNCED, UNSYNCED, GONE = 0, 1, 2
FRAGMENT_FIELD = b"\x38\x01"  # WatchResponse.fragment = true
REV_KEY_LEN = 17  # a revision key; a deletion's has one more byte ("t")


def varint64(n: int) -> bytes:
    """int64 as protobuf encodes it (negative numbers take ten bytes)."""
    return varint(n & 0xFFFFFFFFFFFFFFFF if n < 0 else n)


def prefix_end(key: bytes) -> bytes:
    """The range end that makes [key, end) the keys starting with `key` (etcd's
    GetPrefixRangeEnd); b"\\0" (every key from `key` on) if `key` is all 0xff."""
    for i in range(len(key) - 1, -1, -1):
        if key[i] < 0xFF:
            return key[:i] + bytes((key[i] + 1,))
    return b"\x00"


def record_key(record: bytes) -> bytes:
    """The key of a serialized KeyValue without parsing all of it (the store writes
    the key first; anything else takes the slow path)."""
    if record[:1] == b"\x0a":
        n = record[1]
        if n < 0x80:
            return record[2:2 + n]
    return KeyValue.FromString(record).key


class Watcher:
    """One watch on a stream: a key, a prefix, a range, or every key from one on."""

    __slots__ = ("end", "fragment", "id", "id_field", "key", "min_rev", "no_delete",
                 "no_put", "prefix", "prev_kv", "progress", "quiet", "state", "stream", "tail",
                 "tail_index")

    def __init__(self, stream: WatchStream, watch_id: int, key: bytes, end: bytes | None,
                 req: rpc.WatchCreateRequest) -> None:
        self.stream = stream
        self.id = watch_id
        self.id_field = b"\x10" + varint64(watch_id) if watch_id else b""
        self.key = key
        self.end = end  # None: just `key`; b"": no upper bound; else [key, end)
        self.prefix = end is not None and end != b"" and end == prefix_end(key)
        filters = set(req.filters)
        self.no_put = rpc.WatchCreateRequest.NOPUT in filters
        self.no_delete = rpc.WatchCreateRequest.NODELETE in filters
        self.prev_kv = req.prev_kv
        self.fragment = req.fragment
        self.progress = req.progress_notify
        self.quiet = True  # no events since the last progress tick
        self.min_rev = 0  # the first revision this watcher has not been given
        self.state = GONE
        # Its last queued response and that response's place in the stream: more events
        # join it while it is still queued (see WatchStream.push_events).
        self.tail: bytearray | None = None
        self.tail_index = -1

    def matches(self, key: bytes) -> bool:
        end = self.end
        if end is None:
            return key == self.key
        return self.key <= key and (not end or key < end)

    def __repr__(self) -> str:
        return f"Watcher(id={self.id}, key={self.key!r}, end={self.end!r}, min_rev={self.min_rev})"


WatcherSet = dict[Watcher, None]  # insertion-ordered set


class WatcherGroup:
    """Watchers indexed for matching keys: a dict per single key, a dict per prefix
    length for prefix watchers (a key is looked up once per distinct length), and a
    list for the other ranges (from-key and arbitrary ends, rarer)."""

    __slots__ = ("keys", "prefixes", "ranges", "size")

    def __init__(self) -> None:
        self.keys: dict[bytes, WatcherSet] = {}
        self.prefixes: dict[int, dict[bytes, WatcherSet]] = {}
        self.ranges: WatcherSet = {}
        self.size = 0

    def add(self, w: Watcher) -> None:
        self.size += 1
        if w.end is None:
            self.keys.setdefault(w.key, {})[w] = None
        elif w.prefix:
            self.prefixes.setdefault(len(w.key), {}).setdefault(w.key, {})[w] = None
        else:
            self.ranges[w] = None

    def remove(self, w: Watcher) -> None:
        self.size -= 1
        if w.end is None:
            ws = self.keys[w.key]
            del ws[w]
            if not ws:
                del self.keys[w.key]
        elif w.prefix:
            by_key = self.prefixes[len(w.key)]
            ws = by_key[w.key]
            del ws[w]
            if not ws:
                del by_key[w.key]
                if not by_key:
                    del self.prefixes[len(w.key)]
        else:
            del self.ranges[w]

    def __iter__(self) -> Iterator[Watcher]:
        for ws in self.keys.values():
            yield from ws
        for by_key in self.prefixes.values():
            for ws in by_key.values():
                yield from ws
        yield from self.ranges

    def collect(self, keys: Sequence[bytes]) -> dict[Watcher, list[int]]:
        """For each watcher that any of `keys` touches: the indexes of those keys,
        in order."""
        hits: dict[Watcher, list[int]] = {}
        get = hits.get
        single = self.keys
        prefixes = self.prefixes.items()  # (nothing here changes them)
        ranges = self.ranges
        for i, k in enumerate(keys):
            ws = single.get(k)
            if ws is not None:
                for w in ws:
                    idxs = get(w)
                    if idxs is None:
                        hits[w] = [i]
                    else:
                        idxs.append(i)
            for n, by_key in prefixes:
                ws = by_key.get(k[:n])  # shorter keys cannot match a key of length n
                if ws is not None:
                    for w in ws:
                        idxs = get(w)
                        if idxs is None:
                            hits[w] = [i]
                        else:
                            idxs.append(i)
            for w in ranges:
                end = w.end
                if w.key <= k and (not end or k < end):
                    idxs = get(w)
                    if idxs is None:
                        hits[w] = [i]
                    else:
                        idxs.append(i)
        return hits

    def any_match(self, key: bytes) -> bool:
        if key in self.keys:
            return True
        for n, by_key in self.prefixes.items():
            if key[:n] in by_key:
                return True
        return any(w.matches(key) for w in self.ranges)


class Events:
    """A run of events (an applied batch, or a window of history) whose wire encodings
    (WatchResponse.events fields) are built at most once each, with and without
    prev_kv. History events have no prev_kv yet: it is read from `view` on demand."""

    __slots__ = ("_plain", "_prev", "_view", "events")

    def __init__(self, events: list[KVEvent], view: KVView | None = None) -> None:
        self.events = events
        self._view = view
        n = len(events)
        self._plain: list[bytes | None] = [None] * n
        self._prev: list[bytes | None] = [None] * n

    def field(self, i: int, with_prev: bool) -> bytes:
        cache = self._prev if with_prev else self._plain
        out = cache[i]
        if out is None:
            ev = self.events[i]
            kv = ev.kv
            body = b"\x12" + varint(len(kv)) + kv
            if ev.type == EVENT_DELETE:
                body = b"\x08\x01" + body
            if with_prev:
                prev = ev.prev_kv if self._view is None else self._lookup_prev(ev)
                if prev is not None:
                    body += b"\x1a" + varint(len(prev)) + prev
            out = cache[i] = b"\x5a" + varint(len(body)) + body
        return out

    def _lookup_prev(self, ev: KVEvent) -> bytes | None:
        # As etcd: the key at the revision before, unless the event created the key;
        # nothing if that revision is compacted.
        if ev.type == EVENT_PUT:
            kv = KeyValue.FromString(ev.kv)
            if kv.create_revision == kv.mod_revision:
                return None
        if ev.revision <= 1:
            return None
        assert self._view is not None
        try:
            return self._view.get(ev.key, ev.revision - 1)
        except EtcdError:
            return None
