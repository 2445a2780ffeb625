"""Logs: --logger zap writes one JSON object per line with etcd's fields (level, ts, caller,
msg, context fields) to --log-outputs; console format; rotation by lumberjack's rules;
bad settings refuse the start."""

from __future__ import annotations

import gzip
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from petcd.cli.logsetup import RotatingFile, ZapConsoleFormatter, ZapJsonFormatter
from petcd.testing import SRC_DIR, Etcdctl


def test_zap_json_lines_from_a_member(petcd_factory: Any, tmp_path: Path) -> None:
    out = tmp_path / "member.log"
    m = petcd_factory(args=["--logger", "zap", "--log-outputs", str(out), "--log-level",
                            "info", "--auto-compaction-retention", "1s"])
    Etcdctl(m.endpoint).ok("put", "k", "v")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and "completed auto compaction" not in out.read_text():
        time.sleep(0.2)
    m.stop()
    lines = out.read_text().splitlines()
    assert len(lines) > 5
    docs = [json.loads(line) for line in lines]  # every line parses
    for d in docs:
        assert list(d)[:4] == ["level", "ts", "caller", "msg"], d
        assert d["level"] in ("debug", "info", "warn", "error", "fatal")
        assert d["ts"].endswith("Z") and "T" in d["ts"]
        assert ".py:" in d["caller"]
    done = [d for d in docs if d["msg"].startswith("completed auto compaction")]
    assert done and done[0]["revision"] >= 1 and done[0]["compact-period"] == "1s"
    assert "took" in done[0]


def record(msg: str, **fields: Any) -> logging.LogRecord:
    rec = logging.LogRecord("petcd.test", logging.WARNING, "/x/petcd/server/node.py", 42,
                            msg, (), None)
    rec.fields = fields
    return rec


def test_formats() -> None:
    doc = json.loads(ZapJsonFormatter().format(record("slow fdatasync", took="1.2s")))
    assert doc["level"] == "warn" and doc["caller"] == "server/node.py:42"
    assert doc["msg"] == "slow fdatasync" and doc["took"] == "1.2s"
    line = ZapConsoleFormatter().format(record("hello", n=1)).split("\t")
    assert line[1:4] == ["warn", "server/node.py:42", "hello"]
    assert json.loads(line[4]) == {"n": 1}


def test_rotation(tmp_path: Path) -> None:
    path = tmp_path / "petcd.log"
    h = RotatingFile(str(path), 1, 0, 2, False, True)
    h.setFormatter(ZapJsonFormatter())
    try:
        big = "x" * 4000
        for _ in range(900):  # ~3.6 MB: three rotations
            h.emit(record(big))
    finally:
        h.close()
    backups = sorted(p.name for p in tmp_path.iterdir() if p.name != "petcd.log")
    assert len(backups) == 2, backups  # maxbackups
    assert all(b.startswith("petcd-") and b.endswith(".log.gz") for b in backups)
    with gzip.open(tmp_path / backups[0], "rt") as f:
        assert json.loads(f.readline())["msg"] == big
    assert path.stat().st_size < 1024 * 1024


def run_petcd(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(SRC_DIR))
    return subprocess.run([sys.executable, "-m", "petcd", *args], capture_output=True,
                          text=True, env=env, timeout=30)


def test_bad_logging_settings_refuse_start(tmp_path: Path) -> None:
    r = run_petcd("--logger", "zap", "--log-format", "xml")
    assert r.returncode == 1 and "unsupported log format: xml" in r.stderr
    r = run_petcd("--logger", "loguru")
    assert r.returncode == 1 and "unknown logger option" in r.stderr
    r = run_petcd("--enable-log-rotation", "--log-outputs", "stderr")
    assert r.returncode == 1 and "exactly one log output" in r.stderr
    r = run_petcd("--enable-log-rotation", "--log-outputs", str(tmp_path / "a.log"),
                  "--log-rotation-config-json", "{not json")
    assert r.returncode == 1 and "log rotation config" in r.stderr
