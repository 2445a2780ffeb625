"""The watch hub: every committed change, in revision order, exactly once, to every
watcher whose key or range it touches, from any start revision (etcd's watchable
store and watch streams).

The hub runs on the event loop and is fed by `notify(events, revision)`, once per
applied batch (the apply path hands a batch over with one call_soon, see
`commit_listener`). It knows nothing of the apply loop; all it reads is the MVCC store's
applied state (`KVStore.read`, on the loop thread).

- A watcher is *synced* when it has been given every event up to the hub's revision:
  each new batch is matched against the synced group and delivered at once.
- An *unsynced* watcher (its start revision is in the past, or its stream was full)
  catches up from the store, one bounded window of history per round, the rounds
  interleaved with everything else on the loop; once it reaches the hub's revision it
  joins the synced group. A start revision below the compacted one ends the watcher
  with `compact_revision` set, as etcd does.
- Each stream's outbound queue is bounded: a watcher whose stream is over its limit
  moves to the unsynced group instead of queueing more, so a slow reader costs store
  reads later, not memory now.

Responses are encoded by hand from the store's serialized KeyValues: an event's wire
bytes are built once per batch and shared by every watcher that receives it.
Ordering on a stream is its queue's order: a watcher's created response, then its
events by revision, then its cancel.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Final

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from petcd.errors import EtcdError
from petcd.mvcc.kvstore import KVStore, KVView
from petcd.mvcc.types import EVENT_DELETE, EVENT_PUT, KVEvent
from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.pb.mvccpb.kv_pb2 import KeyValue
from petcd.server.proposal import varint

log = logging.getLogger("petcd.watch")

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

_SYNCED, _UNSYNCED, _GONE = 0, 1, 2
_FRAGMENT_FIELD = b"\x38\x01"  # WatchResponse.fragment = true
_REV_KEY_LEN = 17  # a revision key; a deletion's has one more byte ("t")


def _varint64(n: int) -> bytes:
    """int64 as protobuf encodes it (negative numbers take ten bytes)."""
    return varint(n & 0xFFFFFFFFFFFFFFFF if n < 0 else n)


def prefix_end(key: bytes) -> bytes:
    """The range end that makes [key, end) the keys starting with `key` (etcd's
    GetPrefixRangeEnd); b"\\0" (every key from `key` on) if `key` is all 0xff."""
    for i in range(len(key) - 1, -1, -1):
        if key[i] < 0xFF:
            return key[:i] + bytes((key[i] + 1,))
    return b"\x00"


def _record_key(record: bytes) -> bytes:
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
        self.id_field = b"\x10" + _varint64(watch_id) if watch_id else b""
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
        self.state = _GONE
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


_Set = dict[Watcher, None]  # insertion-ordered set


class WatcherGroup:
    """Watchers indexed for matching keys: a dict per single key, a dict per prefix
    length for prefix watchers (a key is looked up once per distinct length), and a
    list for the other ranges (from-key and arbitrary ends, rarer)."""

    __slots__ = ("keys", "prefixes", "ranges", "size")

    def __init__(self) -> None:
        self.keys: dict[bytes, _Set] = {}
        self.prefixes: dict[int, dict[bytes, _Set]] = {}
        self.ranges: _Set = {}
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
        prefixes = list(self.prefixes.items())
        ranges = list(self.ranges)
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


class _Events:
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


class WatchStream:
    """The watchers of one client stream and its outbound queue of serialized
    WatchResponses (drained by `messages()`).

    Each response sent costs gRPC about as much as the events in it cost us, so a
    watcher's new events join its response still waiting in the queue (protobuf
    concatenation: the events append, the newer header wins) instead of queueing
    another: a stream that falls behind sends fewer, larger responses. Never across a
    control response (created, canceled, progress), so those keep their place."""

    def __init__(self, hub: WatchHub) -> None:
        self.hub = hub
        self.watchers: dict[int, Watcher] = {}
        self._next_id = 0
        self.out: deque[bytes | bytearray] = deque()
        self.queued = 0  # bytes in `out`
        self.pushed = 0  # responses queued so far, and sent so far: out = [sent, pushed)
        self.popped = 0
        self.barrier = -1  # the place of the last control response queued
        self.unsynced = 0  # how many of its watchers are unsynced
        self._progress_waiting = 0  # progress requests held until all are synced
        self._ready = asyncio.Event()
        self.closed = False
        self._timer: asyncio.TimerHandle | None = None
        interval = hub.progress_interval
        if interval > 0:
            # Jitter, as etcd: streams opened together do not tick together.
            self._interval = interval + random.uniform(0, interval / 10)
            self._timer = hub.loop.call_later(self._interval, self._progress_tick)

    # -- requests
    def create(self, req: rpc.WatchCreateRequest) -> None:
        hub = self.hub
        key = req.key or b"\x00"  # etcd: an empty key is the smallest key
        end: bytes | None = req.range_end or None
        if end == b"\x00":
            end = b""  # every key >= key
        if end and key >= end:
            self.push(hub.control(hub.revision, watch_id=INVALID_WATCH_ID, created=True,
                                  canceled=True, cancel_reason=ERR_EMPTY_RANGE))
            return
        watch_id = req.watch_id
        if watch_id == 0:  # the server chooses: the lowest unused from a moving start
            while self._next_id in self.watchers:
                self._next_id += 1
            watch_id = self._next_id
            self._next_id += 1
        elif watch_id in self.watchers:
            self.push(hub.control(hub.revision, watch_id=INVALID_WATCH_ID, created=True,
                                  canceled=True, cancel_reason=ERR_DUPLICATE_ID))
            return
        w = Watcher(self, watch_id, key, end, req)
        self.watchers[watch_id] = w
        self.push(hub.control(hub.revision, watch_id=watch_id, created=True))
        hub.add(w, req.start_revision)

    def cancel(self, watch_id: int) -> None:
        w = self.watchers.pop(watch_id, None)
        if w is None:
            return  # etcd says nothing about an unknown ID
        self.hub.remove(w)
        self.push(self.hub.control(self.hub.revision, watch_id=watch_id, canceled=True))

    def request_progress(self) -> None:
        """Answered with the hub's revision once every watcher of the stream has been
        given everything up to it (at once when they all are synced)."""
        if self.unsynced:
            self._progress_waiting += 1
        else:
            self.push(self.hub.control(self.hub.revision, watch_id=INVALID_WATCH_ID))

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for w in self.watchers.values():
            self.hub.remove(w)
        self.watchers.clear()
        self.out.clear()
        self.queued = 0
        if self._timer is not None:
            self._timer.cancel()
        self._ready.set()
        self.hub.streams.discard(self)

    # -- output
    def push(self, msg: bytes, barrier: bool = True) -> None:
        """Queue a response nothing may join (a control response is a barrier: no
        events queued after it join a response before it)."""
        if barrier:
            self.barrier = self.pushed
        self.out.append(msg)
        self.pushed += 1
        self.queued += len(msg)
        if not self._ready.is_set():
            self._ready.set()

    def push_events(self, w: Watcher, msg: bytes) -> None:
        """Queue an events response of `w`, or append it to w's response still queued."""
        tail = w.tail
        if tail is not None and w.tail_index >= self.popped and w.tail_index > self.barrier \
                and len(tail) + len(msg) < self.hub.response_limit:
            tail += msg
            self.queued += len(msg)
            return
        tail = w.tail = bytearray(msg)
        w.tail_index = self.pushed
        self.push(tail, barrier=False)  # type: ignore[arg-type]

    async def messages(self) -> AsyncIterator[bytes]:
        """The serialized responses, in order, as they are queued; ends when closed."""
        out = self.out
        hub = self.hub
        while True:
            if out:
                msg = out.popleft()
                self.popped += 1
                self.queued -= len(msg)
                if self.unsynced and self.queued < hub.low_water:
                    hub.wake_sync()
                yield msg if type(msg) is bytes else bytes(msg)
            elif self.closed:
                return
            else:
                self._ready.clear()
                await self._ready.wait()

    # -- called by the hub
    def all_synced(self) -> None:
        """The last unsynced watcher caught up: answer held progress requests."""
        while self._progress_waiting:
            self._progress_waiting -= 1
            self.push(self.hub.control(self.hub.revision, watch_id=INVALID_WATCH_ID))

    def _progress_tick(self) -> None:
        hub = self.hub
        full = self.queued >= hub.high_water  # busy sending: progress is not news
        for w in self.watchers.values():
            if w.progress:
                if w.quiet and w.state == _SYNCED and not full:
                    self.push(hub.control(hub.revision, watch_id=w.id))
                w.quiet = True
        self._timer = hub.loop.call_later(self._interval, self._progress_tick)


class WatchHub:
    """Every watcher of the member. Call everything on the event loop."""

    def __init__(self, store: KVStore, *, cluster_id: int, member_id: int,
                 term: Callable[[], int], response_limit: int,
                 progress_interval: float = 600.0,
                 high_water: int = 4 << 20, low_water: int = 1 << 20,
                 catchup_revisions: int = MAX_CATCHUP_REVISIONS,
                 catchup_records: int = CATCHUP_SCAN_RECORDS,
                 catchup_bytes: int = CATCHUP_MATCHED_BYTES) -> None:
        """response_limit: a response with more bytes than this is split (at revision
        boundaries; inside a revision only for watchers that asked for fragments), as
        etcd's --max-request-bytes + gRPC overhead. high_water/low_water: a stream's
        queued bytes above which its watchers stop taking live events, and below
        which they catch up again. catchup_*: the budget of one catch-up round."""
        self.store = store
        self.cluster_id = cluster_id
        self.member_id = member_id
        self._term = term
        self.response_limit = response_limit
        if 0 < progress_interval < MIN_PROGRESS_INTERVAL:
            progress_interval = MIN_PROGRESS_INTERVAL
        self.progress_interval = progress_interval
        self.high_water = high_water
        self.low_water = min(low_water, high_water)
        self.catchup_revisions = catchup_revisions
        self.catchup_records = catchup_records
        self.catchup_bytes = catchup_bytes
        self.revision = store.current_revision  # everything up to here was notified
        self.synced = WatcherGroup()
        self.unsynced: _Set = {}
        self.streams: set[WatchStream] = set()
        self._sync_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._hdr_key = (-1, -1)
        self._hdr = b""
        # Counters for metrics and tests.
        self.events_sent = 0
        self.catchup_rounds = 0

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def commit_listener(self) -> Callable[[list[KVEvent], int], None]:
        """The Applier commit listener (event loop, right after a batch is applied)
        feeding this hub: one call_soon per batch, so the batch's writers are answered
        first. Register it before the apply loop starts."""
        loop = self.loop
        notify = self.notify

        def on_commit(events: list[KVEvent], revision: int) -> None:
            loop.call_soon(notify, events, revision)

        return on_commit

    def open_stream(self) -> WatchStream:
        stream = WatchStream(self)
        self.streams.add(stream)
        return stream

    @property
    def watcher_count(self) -> int:
        return self.synced.size + len(self.unsynced)

    # -- responses
    def _header(self, revision: int) -> bytes:
        """Serialized WatchResponse.header field for `revision`, cached."""
        term = self._term()
        if (revision, term) != self._hdr_key:
            h = rpc.ResponseHeader(cluster_id=self.cluster_id, member_id=self.member_id,
                                   revision=revision, raft_term=term).SerializeToString()
            self._hdr = b"\x0a" + varint(len(h)) + h
            self._hdr_key = (revision, term)
        return self._hdr

    def control(self, revision: int, **fields: object) -> bytes:
        """A response without events (created, canceled, progress, compacted)."""
        resp = rpc.WatchResponse(**fields)  # type: ignore[arg-type]
        h = resp.header
        h.cluster_id, h.member_id, h.raft_term = self.cluster_id, self.member_id, self._term()
        h.revision = revision
        return resp.SerializeToString()

    def _deliver(self, w: Watcher, batch: _Events, idxs: list[int], header: bytes) -> None:
        events = batch.events
        min_rev = w.min_rev
        if w.no_put or w.no_delete or events[idxs[0]].revision < min_rev:
            no_put, no_delete = w.no_put, w.no_delete
            idxs = [i for i in idxs if events[i].revision >= min_rev and not (
                no_put if events[i].type == EVENT_PUT else no_delete)]
            if not idxs:
                return
        with_prev = w.prev_kv
        field = batch.field
        fields = [field(i, with_prev) for i in idxs]
        w.quiet = False
        self.events_sent += len(fields)
        base = header + w.id_field
        size = len(base)
        for f in fields:
            size += len(f)
        stream = w.stream
        limit = self.response_limit
        if size < limit or len(fields) < 2:
            stream.push_events(w, base + b"".join(fields))
        elif w.fragment:
            w.tail = None  # nothing joins a fragment
            self._push_fragments(lambda m: stream.push(m, barrier=False), base, fields, limit)
        else:
            self._push_by_revision(lambda m: stream.push_events(w, m), base, fields,
                                   [events[i].revision for i in idxs], limit)

    @staticmethod
    def _push_fragments(push: Callable[[bytes], None], base: bytes, fields: list[bytes],
                        limit: int) -> None:
        # etcd's split: fill each piece until the next event would take it to the
        # limit (a piece holds at least one event); all but the last say fragment.
        n = len(fields)
        i = 0
        while i < n:
            start = i
            size = len(base) + len(_FRAGMENT_FIELD)
            while i < n:
                size += len(fields[i])
                if i > start and size >= limit:
                    break
                i += 1
            if i < n:
                push(base + _FRAGMENT_FIELD + b"".join(fields[start:i]))
            else:
                push(base + b"".join(fields[start:i]))

    @staticmethod
    def _push_by_revision(push: Callable[[bytes], None], base: bytes, fields: list[bytes],
                          revs: list[int], limit: int) -> None:
        # Several responses, each ending at a revision boundary (a revision's events
        # always travel together), each under the limit unless one revision is not.
        start = 0
        size = len(base)
        n = len(fields)
        i = 0
        while i < n:
            j = i  # the events of revision revs[i]
            group = 0
            while j < n and revs[j] == revs[i]:
                group += len(fields[j])
                j += 1
            if i > start and size + group >= limit:
                push(base + b"".join(fields[start:i]))
                start, size = i, len(base)
            size += group
            i = j
        push(base + b"".join(fields[start:]))

    # -- watchers
    def add(self, w: Watcher, start_rev: int) -> None:
        head = self.revision
        if start_rev == 0 or start_rev > head:
            # From now (or a future revision): live events only.
            w.min_rev = max(head + 1, start_rev)
            w.state = _SYNCED
            self.synced.add(w)
        else:
            w.min_rev = start_rev
            self._add_unsynced(w)

    def _add_unsynced(self, w: Watcher) -> None:
        w.state = _UNSYNCED
        self.unsynced[w] = None
        w.stream.unsynced += 1
        self.wake_sync()

    def remove(self, w: Watcher) -> None:
        if w.state == _SYNCED:
            self.synced.remove(w)
        elif w.state == _UNSYNCED:
            del self.unsynced[w]
            self._stream_unsynced_dec(w.stream)
        w.state = _GONE

    def _stream_unsynced_dec(self, stream: WatchStream) -> None:
        stream.unsynced -= 1
        if not stream.unsynced:
            stream.all_synced()

    def _to_synced(self, w: Watcher) -> None:
        del self.unsynced[w]
        w.state = _SYNCED
        self.synced.add(w)
        self._stream_unsynced_dec(w.stream)

    def _to_unsynced(self, w: Watcher, min_rev: int) -> None:
        self.synced.remove(w)
        if min_rev > w.min_rev:
            w.min_rev = min_rev
        w.state = _UNSYNCED
        self.unsynced[w] = None
        w.stream.unsynced += 1
        # No wake-up here: the stream is full; draining below low water wakes the sync.

    # -- live events
    def notify(self, events: Sequence[KVEvent], revision: int) -> None:
        """The events of one committed batch (in revision order) and the store's
        revision after it. A gap (events starting past revision + 1, or a revision
        jump without events, e.g. after a snapshot was installed) sends every watcher
        to catch up from the store."""
        prev = self.revision
        if revision <= prev:
            return
        if events and events[0].revision <= prev:  # already notified (never expected)
            events = [e for e in events if e.revision > prev]
        if not events or events[0].revision != prev + 1:
            log.info("watch: revisions %d..%d arrived without events; watchers catch up "
                     "from the store", prev + 1, revision)
            self.revision = revision
            for w in list(self.synced):
                self._to_unsynced(w, prev + 1)
            self.wake_sync()
            return
        self.revision = revision
        synced = self.synced
        if not synced.size:
            return
        hits = synced.collect([e.key for e in events])
        if not hits:
            return
        batch = _Events(list(events))
        header = self._header(revision)
        high = self.high_water
        for w, idxs in hits.items():
            if w.stream.queued >= high:
                self._to_unsynced(w, prev + 1)
            else:
                self._deliver(w, batch, idxs, header)

    # -- catching up
    def wake_sync(self) -> None:
        if not self._sync_scheduled and self.unsynced:
            self._sync_scheduled = True
            self.loop.call_soon(self._sync)

    def _sync(self) -> None:
        self._sync_scheduled = False
        try:
            more = self.sync_round()
        except Exception:
            log.exception("watch: catching up from the store failed; retrying")
            self._sync_scheduled = True
            self.loop.call_later(0.1, self._sync)
            return
        if more:
            self.wake_sync()  # another round after what else is ready to run

    def sync_round(self) -> bool:
        """One window of history for the unsynced watchers whose streams have room.
        Returns whether it did anything (so another round may follow)."""
        low = self.low_water
        eligible = [w for w in self.unsynced if w.stream.queued < low]
        if not eligible:
            return False
        self.catchup_rounds += 1
        head = self.revision
        with self.store.read() as view:
            compact = view.compact_rev
            todo: list[Watcher] = []
            for w in eligible:
                if w.min_rev > head:
                    self._to_synced(w)
                elif w.min_rev < compact:
                    self._compacted(w, compact)
                else:
                    todo.append(w)
            if not todo:
                return True
            start = max(1, min(w.min_rev for w in todo))  # a start <= 0 means all of it
            cap = min(head, start + self.catchup_revisions - 1)
            group = WatcherGroup()
            for w in todo:
                if w.min_rev <= cap:
                    group.add(w)
            events, end = self._history(view, group, start, cap)
            batch = _Events(events, view)
            hits = group.collect([e.key for e in events]) if events else {}
            header = self._header(head)
            high = self.high_water
            for w in group:
                if w.stream.queued >= high:
                    continue  # stays where it is; the stream's drain wakes us again
                if w.min_rev > end:
                    continue  # the round's budget ran out before its start
                idxs = hits.get(w)
                if idxs:
                    self._deliver(w, batch, idxs, header)
                w.min_rev = end + 1
                if end >= head:
                    self._to_synced(w)
        return True

    def _history(self, view: KVView, group: WatcherGroup, start: int,
                 cap: int) -> tuple[list[KVEvent], int]:
        """The events in [start, end] on keys the group watches, and `end`: `cap`,
        or an earlier revision boundary where the round's budget ran out."""
        events: list[KVEvent] = []
        scanned = matched = 0
        current = start - 1
        any_match = group.any_match
        max_records, max_bytes = self.catchup_records, self.catchup_bytes
        for rkey, record in view.changes(start, cap):
            main = int.from_bytes(rkey[:8], "big")
            if main != current:
                if scanned >= max_records or matched >= max_bytes:
                    return events, current
                current = main
            scanned += 1
            key = _record_key(record)
            if not any_match(key):
                continue
            if len(rkey) > _REV_KEY_LEN:  # a deletion: the record is just the key
                kv = record + b"\x18" + varint(main)  # + mod_revision
                events.append(KVEvent(main, EVENT_DELETE, key, kv, None))
            else:
                events.append(KVEvent(main, EVENT_PUT, key, record, None))
            matched += len(record)
        return events, cap

    def _compacted(self, w: Watcher, compact: int) -> None:
        # As etcd: canceled, compact_revision set, no header revision, no reason.
        stream = w.stream
        self.remove(w)
        stream.watchers.pop(w.id, None)
        stream.push(self.control(0, watch_id=w.id, canceled=True, compact_revision=compact))


class WatchMetrics(Collector):
    """The hub's figures under etcd's metric names, read when scraped."""

    def __init__(self, hub: WatchHub) -> None:
        self._hub = hub

    def collect(self) -> Iterator[Metric]:
        hub = self._hub
        yield GaugeMetricFamily("etcd_debugging_mvcc_watch_stream_total",
                                "Total number of watch streams.", value=len(hub.streams))
        yield GaugeMetricFamily("etcd_debugging_mvcc_watcher_total",
                                "Total number of watchers.", value=hub.watcher_count)
        yield GaugeMetricFamily("etcd_debugging_mvcc_slow_watcher_total",
                                "Total number of unsynced slow watchers.",
                                value=len(hub.unsynced))
        yield CounterMetricFamily("etcd_debugging_mvcc_events_total",
                                  "Total number of events sent by this member.",
                                  value=hub.events_sent)
        yield GaugeMetricFamily("petcd_watch_queued_bytes",
                                "Bytes of watch responses queued for slow readers.",
                                value=sum(st.queued for st in hub.streams))
        yield CounterMetricFamily("petcd_watch_catchup_rounds",
                                  "Rounds of reading history for unsynced watchers.",
                                  value=hub.catchup_rounds)
