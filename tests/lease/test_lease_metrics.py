"""The lease TTL histogram: counted per power-of-two bucket on the apply path, exposed
as prometheus_client exposes a Histogram with etcd's buckets (1 s ... 2**23 s, +Inf)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from petcd.lease.lessor import Lease
from petcd.lease.metrics import LeaseTTLs


def test_ttl_histogram_buckets_edges_sum_and_count() -> None:
    registry = CollectorRegistry()
    ttls = LeaseTTLs()
    registry.register(ttls)
    for ttl in (1, 2, 3, 4, 5, 600, 2**23, 2**23 + 1, 9_000_000_000):
        ttls.observe(Lease(1, ttl))
    lines = {name: float(value) for name, value in
             (line.rsplit(" ", 1) for line in generate_latest(registry).decode().splitlines()
              if line.startswith("etcd_debugging_lease_ttl_total"))}
    bucket = 'etcd_debugging_lease_ttl_total_bucket{le="%s"}'
    assert [lines[bucket % le] for le in ("1.0", "2.0", "4.0", "8.0", "512.0", "1024.0",
                                          "4.194304e+06", "8.388608e+06", "+Inf")] == \
        [1, 2, 4, 5, 5, 6, 6, 7, 9]
    assert len([k for k in lines if "_bucket" in k]) == 25
    assert lines["etcd_debugging_lease_ttl_total_count"] == 9
    assert lines["etcd_debugging_lease_ttl_total_sum"] == 1 + 2 + 3 + 4 + 5 + 600 + 2**23 + \
        2**23 + 1 + 9_000_000_000
