"""etcd's rafthttp metrics for petcd's peer transport: active peers and disconnects,
messages that could not be sent, and snapshots sent and received (counts, in flight,
durations), by peer. Read from the transport's statuses at scrape time, and fed by its
on_event hook (called on the loop)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from petcd.transport import PeerTransport

_BUCKETS = [0.1 * 2**i for i in range(14)]


class PeerMetrics(Collector):
    def __init__(self, local_id: int, transport: PeerTransport,
                 registry: CollectorRegistry) -> None:
        self._local = f"{local_id:x}"
        self._transport = transport
        r = registry
        self._disconnected = Counter("etcd_network_disconnected_peers",
                                     "The total number of disconnected peers.",
                                     ["Local", "Remote"], registry=r)
        # (counters without _total in etcd: gauges keep their names)
        self._sends = {
            "ok": Gauge("etcd_network_snapshot_send_success", "Total number of successful "
                        "snapshot sends", ["To"], registry=r),
            "failed": Gauge("etcd_network_snapshot_send_failures", "Total number of "
                            "snapshot send failures", ["To"], registry=r),
            "inflight": Gauge("etcd_network_snapshot_send_inflights_total", "Total number "
                              "of inflight snapshot sends", ["To"], registry=r)}
        self._send_time = Histogram(
            "etcd_network_snapshot_send_total_duration_seconds", "Total latency "
            "distributions of v3 snapshot sends", ["To"], buckets=_BUCKETS, registry=r)
        self._receives = {
            "ok": Gauge("etcd_network_snapshot_receive_success", "Total number of "
                        "successful snapshot receives", ["From"], registry=r),
            "failed": Gauge("etcd_network_snapshot_receive_failures", "Total number of "
                            "snapshot receive failures", ["From"], registry=r),
            "inflight": Gauge("etcd_network_snapshot_receive_inflights_total", "Total "
                              "number of inflight snapshot receives", ["From"],
                              registry=r)}
        self._receive_time = Histogram(
            "etcd_network_snapshot_receive_total_duration_seconds", "Total latency "
            "distributions of v3 snapshot receives", ["From"], buckets=_BUCKETS,
            registry=r)
        registry.register(self)
        transport.on_event = self.event

    def event(self, what: str, peer_id: int, seconds: float) -> None:
        peer = f"{peer_id:x}"
        if what == "disconnected":
            self._disconnected.labels(self._local, peer).inc()
            return
        sending = what in ("snapshot_send_start", "snapshot_sent", "snapshot_send_failed")
        gauges = self._sends if sending else self._receives
        if what.endswith("_start"):
            gauges["inflight"].labels(peer).inc()
            return
        gauges["inflight"].labels(peer).dec()
        if what.endswith("failed"):
            gauges["failed"].labels(peer).inc()
        else:
            gauges["ok"].labels(peer).inc()
            (self._send_time if sending else self._receive_time).labels(peer).observe(seconds)

    def collect(self) -> Iterator[Metric]:
        active = GaugeMetricFamily("etcd_network_active_peers", "The current number of "
                                   "active peer connections.", labels=["Local", "Remote"])
        failures = CounterMetricFamily("etcd_network_peer_sent_failures", "The total number "
                                       "of send failures from peers.", labels=["To"])
        for peer_id, st in sorted(self._transport.statuses().items()):
            if st.active:
                active.add_metric([self._local, f"{peer_id:x}"], 1)
            if st.dropped:
                failures.add_metric([f"{peer_id:x}"], st.dropped)
        yield active
        yield failures
