"""The member's Prometheus metrics, under etcd's names where etcd has one, served at
/metrics. One registry per member (tests run several members in one process)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.backend_commit = Histogram(
            "etcd_disk_backend_commit_duration_seconds",
            "The latency distributions of commit called by backend.",
            buckets=[0.001 * 2**i for i in range(14)], registry=r)
        self.apply_batch_size = Histogram(
            "petcd_server_apply_batch_entries", "Log entries applied per backend commit.",
            buckets=[1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096], registry=r)
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

    def watch_sizes(self, size: Callable[[], float], in_use: Callable[[], float]) -> None:
        """Sizes are read when scraped, not kept up to date on every write."""
        self.db_size.set_function(size)
        self.db_size_in_use.set_function(in_use)
