"""etcd's lease metrics. Renewals are counted in a plain integer on the lessor (the
keep-alive path stays free of metric locks) and read when /metrics is scraped."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from petcd.lease.lessor import Lessor


class LeaseCounters(Collector):
    def __init__(self, lessor: Lessor) -> None:
        self._lessor = lessor

    def collect(self) -> Iterator[CounterMetricFamily]:
        le = self._lessor
        yield CounterMetricFamily("etcd_debugging_lease_granted", "The total number of "
                                  "granted leases.", value=le.granted_count)
        yield CounterMetricFamily("etcd_debugging_lease_revoked", "The total number of "
                                  "revoked leases.", value=le.revoked_count)
        yield CounterMetricFamily("etcd_debugging_lease_renewed", "The number of renewed "
                                  "leases seen by the leader.", value=le.renewed_count)
        yield CounterMetricFamily("etcd_debugging_server_lease_expired", "The total number "
                                  "of expired leases.", value=le.expired_count)


def register(lessor: Lessor, registry: CollectorRegistry) -> None:
    registry.register(LeaseCounters(lessor))
    ttls = Histogram("etcd_debugging_lease_ttl_total", "Bucketed histogram of lease TTLs.",
                     buckets=[float(2**i) for i in range(24)], registry=registry)
    lessor.on_grant = lambda lease: ttls.observe(lease.ttl)
