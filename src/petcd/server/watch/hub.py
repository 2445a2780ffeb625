"""WatchHub: feeds each applied batch to the synced watchers and catches the unsynced up
from the store (see the package docstring)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from petcd.mvcc.kvstore import KVStore, KVView
from petcd.mvcc.types import EVENT_DELETE, EVENT_PUT, KVEvent
from petcd.server.proposal import varint
from petcd.server.watch.responses import ResponseHeaders, push_by_revision, push_fragments
from petcd.server.watch.stream import Outlet, WatchStream
from petcd.server.watch.watchers import (
    CATCHUP_MATCHED_BYTES,
    CATCHUP_SCAN_RECORDS,
    GONE,
    MAX_CATCHUP_REVISIONS,
    MIN_PROGRESS_INTERVAL,
    REV_KEY_LEN,
    SYNCED,
    UNSYNCED,
    Events,
    Watcher,
    WatcherGroup,
    WatcherSet,
    record_key,
)

log = logging.getLogger("petcd.watch")


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
        self.headers = ResponseHeaders(cluster_id, member_id, term)
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
        self.unsynced: WatcherSet = {}
        self.streams: set[WatchStream] = set()
        self._sync_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._offered: dict[Outlet, None] = {}  # outlets that took responses, to flush
        self.notifying = False  # in a batch's notify: what outlets take is flushed at its end
        # Counters for metrics and tests.
        self.events_sent = 0
        self.catchup_rounds = 0

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def commit_listener(self) -> Callable[[list[KVEvent], int], None]:
        """The Applier commit listener (event loop, right after a batch is applied, before
        its writers are answered) feeding this hub. As etcd notifies at the end of the
        write transaction, the batch is matched and its responses handed to the streams'
        outlets here, and written to their connections before this returns: an event
        costs no loop iteration or task step between its apply and its bytes on the
        wire. Register it before the apply loop starts."""
        self._loop = asyncio.get_running_loop()
        notify = self.notify

        def on_commit(events: list[KVEvent], revision: int) -> None:
            prev = self.revision
            self.notifying = True
            try:
                notify(events, revision)
            except Exception:  # (never expected) the apply must go on: watchers resync
                log.exception("watch: notifying the watchers failed")
                self.revision = max(self.revision, revision)
                self._resync_all(prev + 1)
                # (an outlet may have taken a response it was not told to flush)
                for stream in self.streams:
                    if stream.outlet is not None:
                        self._offered[stream.outlet] = None
            finally:
                self.notifying = False
            self.flush_offered()

        return on_commit

    def offered(self, outlet: Outlet) -> None:
        """A stream's outlet took a response: during a batch's notify, flush it at its
        end (other responses are written with the connection's next output)."""
        if self.notifying:
            self._offered[outlet] = None

    def flush_offered(self) -> None:
        """Write what the outlets took during a batch's notify (a failing connection
        is logged, the others are still written; the apply never fails for them)."""
        offered = self._offered
        if offered:
            self._offered = {}
            for outlet in offered:
                try:
                    outlet.flush()
                except Exception:  # a connection's trouble is its own: flush the others
                    log.exception("watch: writing events to a client failed")

    def open_stream(self) -> WatchStream:
        stream = WatchStream(self)
        self.streams.add(stream)
        return stream

    @property
    def watcher_count(self) -> int:
        return self.synced.size + len(self.unsynced)

    # -- responses
    def control(self, revision: int, **fields: object) -> bytes:
        """A response without events (created, canceled, progress, compacted)."""
        return self.headers.control(revision, **fields)

    def _deliver(self, w: Watcher, batch: Events, idxs: list[int], header: bytes) -> None:
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
        w.quiet = False
        if len(idxs) == 1:  # (a lone write's event: one response, whatever its size)
            self.events_sent += 1
            w.stream.push_events(w, header + w.id_field + field(idxs[0], with_prev))
            return
        fields = [field(i, with_prev) for i in idxs]
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
            push_fragments(lambda m: stream.push(m, barrier=False), base, fields, limit)
        else:
            push_by_revision(lambda m: stream.push_events(w, m), base, fields,
                             [events[i].revision for i in idxs], limit)

    # -- watchers
    def add(self, w: Watcher, start_rev: int) -> None:
        head = self.revision
        if start_rev == 0 or start_rev > head:
            # From now (or a future revision): live events only.
            w.min_rev = max(head + 1, start_rev)
            w.state = SYNCED
            self.synced.add(w)
        else:
            w.min_rev = start_rev
            self._add_unsynced(w)

    def _add_unsynced(self, w: Watcher) -> None:
        w.state = UNSYNCED
        self.unsynced[w] = None
        w.stream.unsynced += 1
        self.wake_sync()

    def remove(self, w: Watcher) -> None:
        if w.state == SYNCED:
            self.synced.remove(w)
        elif w.state == UNSYNCED:
            del self.unsynced[w]
            self._stream_unsynced_dec(w.stream)
        w.state = GONE

    def _stream_unsynced_dec(self, stream: WatchStream) -> None:
        stream.unsynced -= 1
        if not stream.unsynced:
            stream.all_synced()

    def _to_synced(self, w: Watcher) -> None:
        del self.unsynced[w]
        w.state = SYNCED
        self.synced.add(w)
        self._stream_unsynced_dec(w.stream)

    def _to_unsynced(self, w: Watcher, min_rev: int) -> None:
        self.synced.remove(w)
        if min_rev > w.min_rev:
            w.min_rev = min_rev
        w.state = UNSYNCED
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
            self._resync_all(prev + 1)
            return
        self.revision = revision
        synced = self.synced
        if not synced.size:
            return
        hits = synced.collect([e.key for e in events])
        if not hits:
            return
        batch = Events(list(events))
        header = self.headers.header(revision)
        high = self.high_water
        for w, idxs in hits.items():
            if w.stream.queued >= high:
                self._to_unsynced(w, prev + 1)
            else:
                self._deliver(w, batch, idxs, header)

    def _resync_all(self, from_rev: int) -> None:
        """Every synced watcher catches up from the store, from `from_rev` on."""
        for w in list(self.synced):
            self._to_unsynced(w, from_rev)
        self.wake_sync()

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
            batch = Events(events, view)
            hits = group.collect([e.key for e in events]) if events else {}
            header = self.headers.header(head)
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
            key = record_key(record)
            if not any_match(key):
                continue
            if len(rkey) > REV_KEY_LEN:  # a deletion: the record is just the key
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
