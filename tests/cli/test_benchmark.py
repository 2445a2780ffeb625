"""petcd-benchmark: etcd's benchmark report (format and arithmetic), and runs of every
subcommand against petcd and real etcd whose reports parse and whose counts match
--total. The flag shapes of etcd's performance docs (op-guide/performance.md) run as
written (with smaller totals, to stay quick)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from typing import Any

import pytest

from petcd.cli.benchmark.report import Stats, format_text, to_json
from petcd.testing import SRC_DIR, MemberProcess


def test_report_arithmetic_and_layout() -> None:
    s = Stats.build([0.001 * i for i in range(1, 101)], total=2.0, errors={"boom": 2})
    assert s.count == 100 and s.rps == 50.0
    assert dict(s.percentiles())[50.0] == pytest.approx(0.051)  # etcd: rank i*100/n >= p
    assert dict(s.percentiles())[99.9] == 0.0  # too few samples: not printed
    hist = s.histogram()
    assert len(hist) == 11 and sum(c for _, c in hist) == 100
    assert hist[0] == (pytest.approx(0.001), 1) and hist[-1][0] == pytest.approx(0.1)
    text = format_text(s)
    assert text.startswith("\nSummary:\n  Total:\t2.0000 secs.\n  Slowest:\t0.1000 secs.\n"
                           "  Fastest:\t0.0010 secs.\n  Average:\t0.0505 secs.\n")
    assert "  Requests/sec:\t50.0000\n\nResponse time histogram:\n  0.0010 [1]\t|∎∎∎∎\n" in text
    assert "\nLatency distribution:\n  10% in 0.0110 secs.\n" in text
    assert "99.9%" not in text
    assert text.endswith("\nError distribution:\n  [2]\tboom\n")
    assert "0.001 [1]" in format_text(s, precise=True)


def parse(text: str) -> dict[str, Any]:
    """The figures of an etcd-style report (what a script reading etcd's output gets)."""
    summary = dict(re.findall(r"^  (Total|Slowest|Fastest|Average|Stddev):\t([\d.]+) secs\.$",
                              text, re.M))
    rps = re.search(r"^  Requests/sec:\t([\d.]+)$", text, re.M)
    hist = [(float(m), int(c)) for m, c in re.findall(r"^  ([\d.]+) \[(\d+)\]\t\|∎*$", text,
                                                          re.M)]
    dist = re.findall(r"^  ([\d.]+)% in ([\d.]+) secs\.$", text, re.M)
    assert set(summary) == {"Total", "Slowest", "Fastest", "Average", "Stddev"}, text
    assert rps is not None and len(hist) == 11 and dist, text
    return {"summary": summary, "rps": float(rps.group(1)), "count": sum(c for _, c in hist),
            "dist": dist}


def bench(member: MemberProcess, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(SRC_DIR)}  # this checkout's petcd
    r = subprocess.run([sys.executable, "-m", "petcd.cli.benchmark",
                        f"--endpoints={member.address}", *args],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.fixture(params=["petcd", "etcd"])
def member(request: pytest.FixtureRequest) -> MemberProcess:
    m: MemberProcess = request.getfixturevalue(request.param)
    return m


def test_put_and_range_counts_match_total(member: MemberProcess) -> None:
    # op-guide/performance.md's lines, with smaller totals
    out = bench(member, "--target-leader", "--conns=1", "--clients=1", "put", "--key-size=8",
                "--sequential-keys", "--total=300", "--val-size=256")
    assert parse(out)["count"] == 300
    out = bench(member, "--conns=100", "--clients=1000", "put", "--key-size=8",
                "--sequential-keys", "--total=1500", "--val-size=256")
    assert parse(out)["count"] == 1500
    out = bench(member, "--conns=1", "--clients=1", "range", "YOUR_KEY",
                "--consistency=l", "--total=300")
    assert parse(out)["count"] == 300
    out = bench(member, "--conns=100", "--clients=1000", "range", "YOUR_KEY", "--consistency=s",
                "--total=1500")
    assert parse(out)["count"] == 1500


@pytest.mark.parametrize("args", [
    ["--clients=4", "txn-put", "--txn-ops=2", "--key-space-size=50", "--total=200"],
    ["--clients=4", "txn-mixed", "k", "--rw-ratio=3", "--total=200"],
    ["--clients=4", "lease-keepalive", "--total=400"],
    ["--clients=3", "watch-latency", "--total=50", "--put-rate=500"],
])
def test_other_subcommands(member: MemberProcess, args: list[str]) -> None:
    out = bench(member, "--output", "json", *args)
    report = json.loads(out)
    total = int(args[-1 if "watch" not in args[1] else -2].split("=")[1])
    want = total * 3 if args[1] == "watch-latency" else total  # one sample per watcher
    assert report["count"] == want and not report["errors"]
    assert sum(h["count"] for h in report["histogram"]) == want
    assert [d["percentile"] for d in report["latency_distribution"]][:3] == [10.0, 25.0, 50.0]


def test_watch(member: MemberProcess) -> None:
    out = bench(member, "--conns=2", "watch", "--streams=2", "--watch-per-stream=10",
                "--put-total=30")
    creation, puts = out.split("Put summary:")
    assert parse(creation)["count"] == 20
    assert parse(puts)["count"] == 30


def test_json_is_the_text_report_in_numbers() -> None:
    s = Stats.build([0.5, 0.25, 1.0], total=1.5)
    j = to_json(s)
    assert j["count"] == 3 and j["fastest"] == 0.25 and j["slowest"] == 1.0
    assert j["requests_per_sec"] == 2.0
