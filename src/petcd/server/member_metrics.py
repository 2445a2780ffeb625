"""etcd's member-level metrics that are read, not kept: identity and version, request
counts of the KV state machine, revisions, peer traffic, process figures. Counters
live as plain integers where the work happens (no metric lock on the hot paths) and
are turned into metric families when /metrics is scraped."""

from __future__ import annotations

import os
import resource
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from petcd import ETCD_API_VERSION

if TYPE_CHECKING:
    from petcd.server.node import Node


class MemberCollector(Collector):
    def __init__(self, node: Node) -> None:
        self._node = node

    def describe(self) -> Iterator[Metric]:
        # The registry asks for the names when the collector is registered (at start-up):
        # give them without the keys gauge's count, a walk over the whole index.
        return self._families(count_keys=False)

    def collect(self) -> Iterator[Metric]:
        return self._families(count_keys=True)

    def _families(self, count_keys: bool) -> Iterator[Metric]:
        node = self._node
        g = GaugeMetricFamily("etcd_server_id", "Server or member ID in hexadecimal format. "
                              "1 for 'server_id' label with current ID.", labels=["server_id"])
        g.add_metric([f"{node.member_id:x}"], 1)
        yield g
        g = GaugeMetricFamily("etcd_server_version", "Which version is running. 1 for "
                              "'server_version' label with current version.",
                              labels=["server_version"])
        g.add_metric([ETCD_API_VERSION], 1)
        yield g
        g = GaugeMetricFamily("etcd_cluster_version", "Which version is running. 1 for "
                              "'cluster_version' label with current cluster version",
                              labels=["cluster_version"])
        g.add_metric([".".join(ETCD_API_VERSION.split(".")[:2])], 1)
        yield g
        yield GaugeMetricFamily("etcd_server_is_learner", "Whether or not this member is a "
                                "learner. 1 if is, 0 otherwise.", value=int(node.is_learner))
        quota = node.opts.quota_backend_bytes
        yield GaugeMetricFamily("etcd_server_quota_backend_bytes", "Current backend storage "
                                "quota size in bytes.",
                                value=2 * 1024**3 if quota == 0 else max(quota, 0))
        kv = node.kv
        for name, what, value in (("put", "puts", kv.puts), ("delete", "deletes", kv.deletes),
                                  ("range", "ranges", kv.ranges), ("txn", "txns", kv.txns)):
            text = f"Total number of {what} seen by this member."
            yield CounterMetricFamily(f"etcd_mvcc_{name}", text, value=value)
            yield CounterMetricFamily(f"etcd_debugging_mvcc_{name}", text, value=value)
        store = node.store
        yield GaugeMetricFamily("etcd_debugging_mvcc_current_revision",
                                "The current revision of store.", value=store.current_revision)
        yield GaugeMetricFamily("etcd_debugging_mvcc_compact_revision",
                                "The revision of the last compaction in store.",
                                value=store.compact_revision)
        yield GaugeMetricFamily("etcd_debugging_mvcc_keys_total",
                                "Total number of keys.",
                                value=store.live_keys if count_keys else 0)
        yield GaugeMetricFamily("etcd_debugging_mvcc_total_put_size_in_bytes",
                                "The total size of put kv pairs seen by this member.",
                                value=store.put_bytes)
        yield GaugeMetricFamily("etcd_mvcc_db_open_read_transactions",
                                "The number of currently open read transactions",
                                value=node.backend.readers.active)
        yield GaugeMetricFamily("etcd_debugging_auth_revision",
                                "The current revision of auth store.", value=node.auth.revision)
        sent, received = node.peer_traffic()
        c = CounterMetricFamily("etcd_network_peer_sent_bytes", "The total number of bytes "
                                "sent to peers.", labels=["To"])
        for peer, n in sorted(sent.items()):
            c.add_metric([f"{peer:x}"], n)
        yield c
        c = CounterMetricFamily("etcd_network_peer_received_bytes", "The total number of "
                                "bytes received from peers.", labels=["From"])
        for peer, n in sorted(received.items()):
            if peer:
                c.add_metric([f"{peer:x}"], n)
        yield c


class OsCollector(Collector):
    """Go's os_fd_* and process_virtual_memory_max_bytes, which prometheus-client's
    process collector does not give."""

    def collect(self) -> Iterator[Metric]:
        try:
            used = len(os.listdir("/proc/self/fd"))
        except OSError:
            used = 0
        yield GaugeMetricFamily("os_fd_used", "The number of used file descriptors.",
                                value=used)
        yield GaugeMetricFamily("os_fd_limit", "The file descriptor limit.",
                                value=resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        limit = resource.getrlimit(resource.RLIMIT_AS)[0]
        yield GaugeMetricFamily("process_virtual_memory_max_bytes", "Maximum amount of "
                                "virtual memory available in bytes.",
                                value=2**64 - 1 if limit == resource.RLIM_INFINITY else limit)


def register(node: Node, registry: CollectorRegistry) -> None:
    registry.register(MemberCollector(node))
    registry.register(OsCollector())
    ProcessCollector(registry=registry)  # process_cpu_seconds_total, process_open_fds, ...
