"""--wal-dir: the WAL lives in its own directory (another disk), a member restarts from it
after kill -9, and `petcdctl snapshot restore --wal-dir` lays a restored member out so."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from petcd.testing import SRC_DIR, Etcdctl, PetcdProcess, free_port


def test_wal_dir(petcd_factory: Any, tmp_path: Path) -> None:
    wal = tmp_path / "fast-disk" / "wal"
    m = petcd_factory(args=["--wal-dir", str(wal)])
    ctl = Etcdctl(m.endpoint, cwd=str(tmp_path))
    for i in range(10):
        ctl.ok("put", f"w/{i}", str(i))
    assert any(p.suffix == ".wal" for p in wal.iterdir())
    assert not (m.data_dir / "member" / "wal").exists()
    m.kill()
    m.start()
    assert Etcdctl(m.endpoint).ok("get", "w/9", "--print-value-only") == "9\n"

    ctl = Etcdctl(m.endpoint, cwd=str(tmp_path))
    ctl.ok("snapshot", "save", "s.db")
    peer = free_port()
    env = dict(os.environ, PYTHONPATH=str(SRC_DIR))
    r = subprocess.run(
        [sys.executable, "-m", "petcd.cli.ctl", "snapshot", "restore", "s.db", "--name", "r",
         "--data-dir", "r.data", "--wal-dir", "r.wal",
         "--initial-cluster", f"r=http://127.0.0.1:{peer}",
         "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert any(p.suffix == ".wal" for p in (tmp_path / "r.wal").iterdir())
    assert not (tmp_path / "r.data" / "member" / "wal").exists()
    restored = PetcdProcess(tmp_path / "r.data", name="r", peer_port=peer,
                            args=["--wal-dir", str(tmp_path / "r.wal")])
    try:
        restored.start()
        assert Etcdctl(restored.endpoint).ok("get", "w/3", "--print-value-only") == "3\n"
    finally:
        restored.kill()
