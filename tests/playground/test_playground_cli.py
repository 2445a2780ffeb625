"""`petcd playground` without a browser: what it prints, its control endpoints' guards,
that members carry no controls, and that SIGTERM stops every member it started."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from petcd.testing import SRC_DIR, Etcdctl, have_etcd

from .harness import Playground, wait_for


def _request(url: str, method: str, path: str, body: bytes = b"",
             headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    host, port = url.removeprefix("http://").strip("/").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _state(url: str) -> dict[str, Any]:
    status, body = _request(url, "GET", "/api/state")
    assert status == 200
    doc: dict[str, Any] = json.loads(body)
    return doc


def _pids(pg: Playground) -> list[int]:
    return [m["pid"] for m in _state(pg.url)["members"]]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead too (the playground reaps its children; the test is not their parent)
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(") ")[1][0] != "Z"


def test_controls_and_clean_stop(tmp_path: Path) -> None:
    pg = Playground(1, tmp_path / "pg")
    try:
        assert set(pg.client_urls) == {"m1"}
        assert any(line.strip().startswith("etcdctl:") for line in pg.output)
        wait_for("the member's status", lambda: _state(pg.url)["members"][0]["role"] == "leader")
        json_post = {"Content-Type": "application/json"}
        # the guards: JSON only, local Origin only, local Host only
        assert _request(pg.url, "POST", "/api/members/m1/pause", b"{}")[0] == 415
        assert _request(pg.url, "POST", "/api/members/m1/pause", b"{}",
                        {**json_post, "Origin": "http://evil.example"})[0] == 403
        assert _request(pg.url, "GET", "/api/state", headers={"Host": "evil.example"})[0] == 403
        assert _request(pg.url, "POST", "/api/members/m9/kill", b"{}", json_post)[0] == 409
        assert _request(pg.url, "POST", "/api/members/m1/restart", b"{}", json_post)[0] == 409
        assert _request(pg.url, "POST", "/api/members/m1/explode", b"{}", json_post)[0] == 404
        assert _request(pg.url, "GET", "/")[0] == 200
        # a member has no controls: only the playground process has them
        member = pg.client_urls["m1"]
        for path in ("/api/state", "/api/members/m1/kill", "/api/put"):
            assert _request(member, "POST", path, b"{}", json_post)[0] == 404
        # a write through the form's endpoint, then a real fault and its recovery
        status, body = _request(pg.url, "POST", "/api/put",
                                json.dumps({"key": "cli", "value": "v"}).encode(), json_post)
        assert status == 200 and json.loads(body)["ok"] is True
        pid = _pids(pg)[0]
        assert _request(pg.url, "POST", "/api/members/m1/kill", b"{}", json_post)[0] == 200
        assert not _alive(pid)
        assert _state(pg.url)["members"][0]["state"] == "killed"
        assert _request(pg.url, "POST", "/api/members/m1/restart", b"{}", json_post)[0] == 200
        wait_for("the restarted member serving",
                 lambda: _state(pg.url)["members"][0]["role"] == "leader")
        wait_for("the key back in the KV view",
                 lambda: [kv["key"] for kv in _state(pg.url)["kv"]] == ["cli"])
        if have_etcd():  # etcdctl pointed at the printed URL: its write shows up live
            Etcdctl(pg.client_urls["m1"]).ok("--dial-timeout=20s", "--command-timeout=30s",
                                             "put", "from-etcdctl", "hi")
            wait_for("etcdctl's key in the KV view", lambda: [
                (kv["key"], kv["value"]) for kv in _state(pg.url)["kv"]] == [
                    ("cli", "v"), ("from-etcdctl", "hi")])
        assert _request(pg.url, "POST", "/api/members/m1/isolate", b"{}", json_post)[0] == 200
        assert _state(pg.url)["members"][0]["state"] == "isolated"
        assert _request(pg.url, "POST", "/api/heal-all", b"{}", json_post)[0] == 200
        assert _state(pg.url)["members"][0]["state"] == "running"
        texts = [e["text"] for e in _state(pg.url)["events"] if e["kind"] == "partition"]
        assert texts == ["m1 isolated: its peer links cut both ways", "all partitions healed"]
        pids = _pids(pg)
        assert _request(pg.url, "POST", "/api/members/m1/pause", b"{}", json_post)[0] == 200
    except BaseException:
        print(pg.logs())
        raise
    finally:
        code = pg.stop()
    assert code == 0, pg.logs()
    assert not pg.leftovers
    assert not any(_alive(p) for p in pids)  # a paused member is stopped too
    assert (tmp_path / "pg" / "m1" / "member").is_dir()  # a given data dir is kept


def test_temporary_data_dir_removed(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(SRC_DIR), TMPDIR=str(tmp_path))
    proc = subprocess.Popen([sys.executable, "-m", "petcd", "playground", "--members", "1",
                             "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    assert proc.stdout is not None
    out = ""
    for line in proc.stdout:
        out += line
        if line.startswith("Ctrl-C"):
            break
    match = re.search(r"data in (\S+)", out)
    assert match, out
    data_dir = Path(match.group(1))
    assert data_dir.parent == tmp_path and data_dir.is_dir()
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
    assert proc.wait(timeout=40) == 0
    assert not data_dir.exists()


def test_port_taken(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "petcd", "playground", "--port", str(port),
                            "--data-dir", str(tmp_path / "d")], capture_output=True, text=True,
                           env=dict(os.environ, PYTHONPATH=str(SRC_DIR)), timeout=60)
    assert r.returncode == 1
    assert f"cannot serve on 127.0.0.1:{port}" in r.stderr
    assert not (tmp_path / "d" / "m1").exists()  # no member was started
