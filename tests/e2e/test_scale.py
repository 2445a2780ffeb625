"""The scale benchmark as a test (slow): a 3-member petcd cluster loaded with
PETCD_SCALE_KEYS keys (default 20000; bench/scale_bench.py runs 1 million), then a
paginated range, a one-call get --prefix, defragment, a clean and a kill -9 restart of a
follower and a new member caught up by snapshot, all of which must complete with the
right key counts (the benchmark checks them), and the member's memory may grow by the
response of the big range, not by a multiple of it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "scale_bench.py"


@pytest.mark.slow
def test_scale(tmp_path: Path) -> None:
    keys = int(os.environ.get("PETCD_SCALE_KEYS", "20000"))
    prefix_keys = 10 ** (len(str(keys)) - 2)  # a tenth of the keys, a power of 10
    out = tmp_path / "scale.json"
    r = subprocess.run(
        [sys.executable, str(BENCH), "--targets", "petcd", "--keys", str(keys),
         "--prefix-keys", str(prefix_keys), "--page", str(max(100, keys // 20)),
         "--clients", "32", "--dir", str(tmp_path), "--json", str(out)],
        capture_output=True, text=True, timeout=3600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (res,) = json.loads(out.read_text())
    assert res["prefix_keys"] == prefix_keys
    size = res["prefix_bytes"]
    assert size > prefix_keys * 256
    # One buffer for the response, plus what is in flight to the client (the message
    # path held ~3x: records, messages, serialized copies).
    assert res["prefix_anon_peak_growth"] <= 1.5 * size + (1 << 20), res
    assert res["range_anon_growth"] <= 64 << 20, res
    for m in res["rss"].values():
        assert m["RssAnon"] < 400 << 20, res  # nothing per key lives in Python memory
    assert res["new_member_s"] > 0 and res["restart_kill9_caught_up_s"] > 0
