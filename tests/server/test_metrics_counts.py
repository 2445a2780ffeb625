"""petcd_server_apply_batch_entries is counted without prometheus_client's Histogram (no
lock on the apply path); scraped, it must read exactly as that Histogram would."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from petcd.server.metrics import Metrics

BOUNDS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096]


def _lines(registry: CollectorRegistry) -> list[str]:
    return [line for line in generate_latest(registry).decode().splitlines()
            if "apply_batch_entries" in line]


def test_batch_sizes_scrape_like_a_histogram() -> None:
    m = Metrics()
    reference = CollectorRegistry()
    h = Histogram("petcd_server_apply_batch_entries", "Log entries applied per backend commit.",
                  buckets=BOUNDS, registry=reference)
    assert _lines(m.registry) == _lines(reference)  # (empty: zeros everywhere)
    for v in (1, 1, 2, 3, 4, 5, 64, 65, 4096, 4097, 100_000):
        m.apply_batch_size.observe(v)
        h.observe(v)
    assert _lines(m.registry) == _lines(reference)
