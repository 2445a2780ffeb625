"""The report petcd-benchmark prints: etcd's benchmark report (pkg/report) in the same
layout and arithmetic, so scripts that read etcd's output read ours, plus a JSON form.

Latencies are seconds. Percentiles are taken as etcd takes them (the first sample whose
rank reaches the percentile); the histogram has 11 marks from the fastest to the slowest
with bars of at most 40 characters.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

PERCENTILES = (10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.9)
_BAR = "∎"


@dataclass
class Stats:
    lats: list[float]  # sorted
    total: float  # wall seconds of the run
    errors: dict[str, int] = field(default_factory=dict)

    @classmethod
    def build(cls, lats: Iterable[float], total: float,
              errors: dict[str, int] | None = None) -> Stats:
        return cls(sorted(lats), total, dict(errors or {}))

    @property
    def count(self) -> int:
        return len(self.lats)

    @property
    def average(self) -> float:
        return math.fsum(self.lats) / len(self.lats) if self.lats else 0.0

    @property
    def stddev(self) -> float:
        if not self.lats:
            return 0.0
        avg = self.average
        return math.sqrt(math.fsum((x - avg) ** 2 for x in self.lats) / len(self.lats))

    @property
    def rps(self) -> float:
        return len(self.lats) / self.total if self.total > 0 else 0.0

    def percentiles(self) -> list[tuple[float, float]]:
        """(percentile, seconds) for etcd's percentiles, 0.0 where there are too few."""
        out = [0.0] * len(PERCENTILES)
        n = len(self.lats)
        j = 0
        for i, lat in enumerate(self.lats):
            if j >= len(PERCENTILES):
                break
            if i * 100.0 / n >= PERCENTILES[j]:
                out[j] = lat
                j += 1
        return list(zip(PERCENTILES, out, strict=True))

    def histogram(self) -> list[tuple[float, int]]:
        """(mark, count): samples in (previous mark, mark], 11 marks."""
        if not self.lats:
            return []
        fastest, slowest = self.lats[0], self.lats[-1]
        width = (slowest - fastest) / 10
        marks = [fastest + width * i for i in range(10)] + [slowest]
        counts = [0] * len(marks)
        b = 0
        for lat in self.lats:
            while lat > marks[b] and b < len(marks) - 1:
                b += 1
            counts[b] += 1
        return list(zip(marks, counts, strict=True))


def _go_v(p: float) -> str:
    """Go's %v of a float64 percentile: 10, 99.9."""
    return str(int(p)) if p == int(p) else repr(p)


def format_text(s: Stats, precise: bool = False) -> str:
    """etcd's text report (empty summary parts when nothing succeeded)."""
    def num(x: float) -> str:
        return repr(x) if precise else f"{x:4.4f}"

    out = ""
    if s.lats:
        out += "\nSummary:\n"
        out += f"  Total:\t{num(s.total)} secs.\n"
        out += f"  Slowest:\t{num(s.lats[-1])} secs.\n"
        out += f"  Fastest:\t{num(s.lats[0])} secs.\n"
        out += f"  Average:\t{num(s.average)} secs.\n"
        out += f"  Stddev:\t{num(s.stddev)} secs.\n"
        out += f"  Requests/sec:\t{num(s.rps)}\n"
        hist = s.histogram()
        most = max(c for _, c in hist)
        out += "\nResponse time histogram:\n"
        for mark, count in hist:
            out += f"  {num(mark)} [{count}]\t|{_BAR * (count * 40 // most if most else 0)}\n"
        out += "\nLatency distribution:\n"
        for p, lat in s.percentiles():
            if lat > 0:
                out += f"  {_go_v(p)}% in {num(lat)} secs.\n"
    if s.errors:
        out += "\nError distribution:\n"
        for err, n in s.errors.items():
            out += f"  [{n}]\t{err}\n"
    return out


def to_json(s: Stats) -> dict[str, object]:
    """The same figures for programs (--output json), in seconds."""
    return {
        "total": s.total,
        "count": s.count,
        "slowest": s.lats[-1] if s.lats else 0.0,
        "fastest": s.lats[0] if s.lats else 0.0,
        "average": s.average,
        "stddev": s.stddev,
        "requests_per_sec": s.rps,
        "histogram": [{"mark": m, "count": c} for m, c in s.histogram()],
        "latency_distribution": [{"percentile": p, "latency": lat}
                                 for p, lat in s.percentiles() if lat > 0],
        "errors": s.errors,
    }


def format_json(s: Stats) -> str:
    return json.dumps(to_json(s))
