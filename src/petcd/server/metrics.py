"""The member's Prometheus metrics, under etcd's names where etcd has one, served at
/metrics. One registry per member (tests run several members in one process)."""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator, Sequence

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from petcd.mvcc.kvstore import KVStore
from petcd.v2store import Store
from petcd.wal.snap import Snapshotter
from petcd.wal.wal import WAL

# etcd's Go client exposes no *_created series; neither do we (one setting per process).
disable_created_metrics()  # type: ignore[no-untyped-call]


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.backend_commit = Histogram(
            "etcd_disk_backend_commit_duration_seconds",
            "The latency distributions of commit called by backend.",
            buckets=[0.001 * 2**i for i in range(14)], registry=r)
        self.apply_batch_size = _Counts(
            "petcd_server_apply_batch_entries", "Log entries applied per backend commit.",
            (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096))
        r.register(self.apply_batch_size)
        self.proposals_committed = Gauge(
            "etcd_server_proposals_committed_total",
            "The total number of consensus proposals committed.", registry=r)
        self.proposals_applied = Gauge(
            "etcd_server_proposals_applied_total",
            "The total number of consensus proposals applied.", registry=r)
        self.proposals_pending = Gauge(
            "etcd_server_proposals_pending",
            "The current number of pending proposals to commit.", registry=r)
        self.proposals_failed = Counter(
            "etcd_server_proposals_failed", "The total number of failed proposals seen.",
            registry=r)
        self.has_leader = Gauge("etcd_server_has_leader",
                                "Whether or not a leader exists. 1 is existence, 0 is not.",
                                registry=r)
        self.is_leader = Gauge("etcd_server_is_leader",
                               "Whether or not this member is a leader. 1 if is, 0 otherwise.",
                               registry=r)
        self.leader_changes = Counter(
            "etcd_server_leader_changes_seen", "The number of leader changes seen.",
            registry=r)
        self.wal_fsync = Histogram(
            "etcd_disk_wal_fsync_duration_seconds",
            "The latency distributions of fsync called by WAL.",
            buckets=[0.001 * 2**i for i in range(14)], registry=r)
        self.snapshots = Counter(
            "petcd_server_snapshots", "Snapshots taken (every --snapshot-count entries).",
            registry=r)
        self.compaction_pending = Gauge(
            "petcd_mvcc_compaction_pending",
            "1 while a compaction's old records are still being removed, else 0.", registry=r)
        self.db_size = Gauge("etcd_mvcc_db_total_size_in_bytes",
                             "Total size of the underlying database physically allocated in "
                             "bytes.", registry=r)
        self.db_size_in_use = Gauge("etcd_mvcc_db_total_size_in_use_in_bytes",
                                    "Total size of the underlying database logically in use "
                                    "in bytes.", registry=r)

        # Operator signals (server/ops_watch.py, apply.py, maintenance).
        self.heartbeat_send_failures = Counter(
            "etcd_server_heartbeat_send_failures",
            "The total number of leader heartbeat send failures (likely overloaded from slow "
            "disk).", registry=r)
        self.slow_apply = Counter("etcd_server_slow_apply",
                                  "The total number of slow apply requests (likely overloaded "
                                  "from slow disk).", registry=r)
        self.slow_read_indexes = Counter(
            "etcd_server_slow_read_indexes",
            "The total number of pending read indexes not in sync with leader's or timed out "
            "read index requests.", registry=r)
        self.read_indexes_failed = Counter(
            "etcd_server_read_indexes_failed", "The total number of failed read indexes seen.",
            registry=r)
        self.snapshot_apply_in_progress = Gauge(
            "etcd_server_snapshot_apply_in_progress_total",
            "1 if the server is applying the incoming snapshot. 0 if none.", registry=r)
        # Counters without the _total suffix in etcd: gauges keep the names as they are.
        self.learner_promote_successes = Gauge(
            "etcd_server_learner_promote_successes",
            "The total number of successful learner promotions while this member is leader.",
            registry=r)
        self.learner_promote_failures = Gauge(
            "etcd_server_learner_promote_failures",
            "The total number of failed learner promotions (likely learner not ready) while "
            "this member is leader.", ["Reason"], registry=r)
        self.defrag_duration = Histogram(
            "etcd_disk_backend_defrag_duration_seconds",
            "The latency distribution of backend defragmentation.",
            buckets=[0.1 * 2**i for i in range(13)], registry=r)
        self.defrag_inflight = Gauge("etcd_disk_defrag_inflight",
                                     "Whether or not defrag is active on the member. 1 means "
                                     "active, 0 means not.", registry=r)
        self.backend_snapshot_duration = Histogram(
            "etcd_disk_backend_snapshot_duration_seconds",
            "The latency distribution of backend snapshots.",
            buckets=[0.01 * 2**i for i in range(17)], registry=r)
        self.hash_duration = Histogram(
            "etcd_mvcc_hash_duration_seconds",
            "The latency distribution of storage hash operation.",
            buckets=[0.01 * 2**i for i in range(15)], registry=r)
        self.hash_rev_duration = Histogram(
            "etcd_mvcc_hash_rev_duration_seconds",
            "The latency distribution of storage hash by revision operation.",
            buckets=[0.01 * 2**i for i in range(15)], registry=r)
        # Snapshot files: the .snap written every --snapshot-count entries, and a
        # backend file received from the leader (etcd's snap and debugging_snap names).
        snap_buckets = [0.001 * 2**i for i in range(14)]
        self._snap = {
            name: Histogram(metric, text, buckets=snap_buckets, registry=r)
            for name, metric, text in (
                ("marshal", "etcd_debugging_snap_save_marshalling_duration_seconds",
                 "The marshalling cost distributions of save called by snapshot."),
                ("total", "etcd_debugging_snap_save_total_duration_seconds",
                 "The total latency distributions of save called by snapshot."),
                ("fsync", "etcd_snap_fsync_duration_seconds",
                 "The latency distributions of fsync called by snap."),
                ("db_fsync", "etcd_snap_db_fsync_duration_seconds",
                 "The latency distributions of fsyncing .snap.db file"),
                ("db_save_total", "etcd_snap_db_save_total_duration_seconds",
                 "The total latency distributions of v3 snapshot save"))}
        self.debugging_db_size = Gauge(
            "etcd_debugging_mvcc_db_total_size_in_bytes",
            "Total size of the underlying database physically allocated in bytes.",
            registry=r)

    def watch_store(self, store: KVStore) -> None:
        """Physical compaction figures from the store, as etcd's mvcc metrics."""
        ms_buckets = [0.5 * 2**i for i in range(12)]
        pause = Histogram("etcd_debugging_mvcc_db_compaction_pause_duration_milliseconds",
                          "Bucketed histogram of db compaction pause duration.",
                          buckets=ms_buckets, registry=self.registry)
        total = Histogram("etcd_debugging_mvcc_db_compaction_total_duration_milliseconds",
                          "Bucketed histogram of db compaction total duration.",
                          buckets=[100 * 2**i for i in range(14)], registry=self.registry)
        keys = Counter("etcd_debugging_mvcc_db_compaction_keys",
                       "Total number of db keys compacted.", registry=self.registry)
        def report(what: str, value: float) -> None:
            if what == "keys":
                keys.inc(value)
            else:
                (pause if what == "pause" else total).observe(value * 1000)
        store.on_compaction = report

    def watch_storage(self, wal: WAL, snapshotter: Snapshotter) -> None:
        """WAL bytes written (read when scraped) and snapshot file timings."""
        self.registry.register(_WalBytes(wal))
        snapshotter.observe = self.observe_snap

    def watch_v2_store(self, store: Callable[[], Store]) -> None:
        self.registry.register(_V2Store(store))

    def observe_snap(self, name: str, seconds: float) -> None:
        self._snap[name].observe(seconds)

    def watch_proposals(self, applied: Callable[[], float], committed: Callable[[], float],
                        pending: Callable[[], float],
                        compaction_pending: Callable[[], float]) -> None:
        """The Raft driver's figures, read when scraped (not set on every write)."""
        self.proposals_applied.set_function(applied)
        self.proposals_committed.set_function(committed)
        self.proposals_pending.set_function(pending)
        self.compaction_pending.set_function(compaction_pending)

    def watch_sizes(self, size: Callable[[], float], in_use: Callable[[], float]) -> None:
        """Sizes are read when scraped, not kept up to date on every write."""
        self.db_size.set_function(size)
        self.debugging_db_size.set_function(size)
        self.db_size_in_use.set_function(in_use)


class _Counts(Collector):
    """A histogram observed once per applied batch, on the loop thread only: plain
    counts, no lock (prometheus_client's Histogram.observe costs ~2% of a lone put's
    CPU); turned into cumulative buckets when scraped."""

    def __init__(self, name: str, doc: str, bounds: Sequence[float]) -> None:
        self._name = name
        self._doc = doc
        self._bounds = list(bounds)
        self._counts = [0] * (len(self._bounds) + 1)  # the last: above every bound
        self._sum = 0.0

    def observe(self, value: float) -> None:
        self._counts[bisect.bisect_left(self._bounds, value)] += 1
        self._sum += value

    def collect(self) -> Iterator[Metric]:
        buckets: list[tuple[str, float]] = []
        total = 0
        for bound, n in zip([*map(str, map(float, self._bounds)), "+Inf"], self._counts,
                            strict=True):
            total += n
            buckets.append((bound, total))
        yield HistogramMetricFamily(self._name, self._doc, buckets=buckets,
                                    sum_value=self._sum)


_V2_READS = ("get", "getRecursive")
_V2_WRITES = ("compareAndDelete", "compareAndSwap", "create", "delete", "set", "update")


class _V2Store(Collector):
    """etcd's etcd_debugging_store_* figures, read from the v2 store when scraped."""

    def __init__(self, store: Callable[[], Store]) -> None:
        self._store = store

    def collect(self) -> Iterator[Metric]:
        store = self._store()
        reads = CounterMetricFamily("etcd_debugging_store_reads", "Total number of reads "
                                    "action by (get/getRecursive), local to this member.",
                                    labels=["action"])
        writes = CounterMetricFamily("etcd_debugging_store_writes", "Total number of writes "
                                     "(e.g. set/compareAndDelete) seen by this member.",
                                     labels=["action"])
        # Every action shows, zeros included (etcd's show once used; a fresh etcd has
        # already written its member list to the store, so its names are always there).
        counts = store.actions
        for action in _V2_READS:
            reads.add_metric([action], counts.get(("reads", action), 0))
        for action in _V2_WRITES:
            writes.add_metric([action], counts.get(("writes", action), 0))
        yield reads
        yield writes
        yield CounterMetricFamily("etcd_debugging_store_expires", "Total number of expired "
                                  "keys.", value=store.stats["expireCount"])
        yield CounterMetricFamily("etcd_debugging_store_watch_requests", "Total number of "
                                  "incoming watch requests (new or reestablished).",
                                  value=store.watch_requests)
        yield GaugeMetricFamily("etcd_debugging_store_watchers", "Count of currently active "
                                "watchers.", value=store.hub.count)


class _WalBytes(Collector):
    def __init__(self, wal: WAL) -> None:
        self._wal = wal

    def collect(self) -> Iterator[Metric]:
        # (a gauge in etcd, named with _total)
        yield GaugeMetricFamily("etcd_disk_wal_write_bytes_total", "Total number of bytes "
                                "written in WAL.", value=self._wal.bytes_written)
