"""etcd's lease metrics. Counted in plain integers (on the lessor, and the TTL histogram's
buckets here) and read when /metrics is scraped: grants and renewals stay free of
metric locks (prometheus_client's Histogram.observe cost ~1.6 us per grant)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from petcd.lease.lessor import Lease, Lessor

# etcd's buckets for lease TTLs: 1, 2, 4, ... 2**23 seconds (then +Inf).
TTL_BUCKETS = 24
_BOUNDS = [floatToGoString(float(2**i))  # type: ignore[no-untyped-call]
           for i in range(TTL_BUCKETS)] + ["+Inf"]  # (labels as prometheus_client writes)


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


class LeaseTTLs(Collector):
    """etcd_debugging_lease_ttl_total: granted TTLs (whole seconds >= 1) counted per
    power-of-two bucket on the apply path, made cumulative when scraped."""

    def __init__(self) -> None:
        self._counts = [0] * (TTL_BUCKETS + 1)  # the last: above 2**23
        self._sum = 0

    def observe(self, lease: Lease) -> None:
        ttl = lease.ttl  # (>= 1: the lessor's minimum TTL is at least 1 s)
        # The first bucket 2**i >= ttl: i = bit length of ttl - 1 (ttl 1 -> 0, 600 -> 10).
        i = (ttl - 1).bit_length()
        self._counts[i if i < TTL_BUCKETS else TTL_BUCKETS] += 1
        self._sum += ttl

    def collect(self) -> Iterator[Metric]:
        buckets: list[tuple[str, float]] = []
        total = 0
        for bound, n in zip(_BOUNDS, self._counts, strict=True):
            total += n
            buckets.append((bound, total))
        yield HistogramMetricFamily("etcd_debugging_lease_ttl_total",
                                    "Bucketed histogram of lease TTLs.", buckets=buckets,
                                    sum_value=self._sum)


def register(lessor: Lessor, registry: CollectorRegistry) -> None:
    registry.register(LeaseCounters(lessor))
    ttls = LeaseTTLs()
    registry.register(ttls)
    lessor.on_grant = ttls.observe
