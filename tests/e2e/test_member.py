"""A petcd member as operators see it: flags, startup, /health and /version on the client
port, etcdctl endpoint/member commands, restart, clean shutdown."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import pytest

from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.pb.etcdserverpb import rpc_pb2_grpc as rpc_grpc
from petcd.server.ids import cluster_id, member_id
from petcd.testing import SRC_DIR, Etcdctl, MemberProcess, PetcdProcess, free_port, have_etcd

needs_etcdctl = pytest.mark.skipif(not have_etcd(), reason="etcd/etcdctl 3.4 not installed")


def http_get(url: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def petcd_cmd(*args: str, env: dict[str, str] | None = None,
              timeout: float = 30) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
    full_env["PYTHONPATH"] = str(SRC_DIR)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "petcd", *args], capture_output=True,
                          text=True, env=full_env, timeout=timeout)


def test_health_and_version_on_the_client_port(petcd: MemberProcess) -> None:
    status, headers, body = http_get(petcd.endpoint + "/health")
    assert (status, body) == (200, b'{"health":"true"}')
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    assert headers["Access-Control-Allow-Origin"] == "*"
    status, headers, body = http_get(petcd.endpoint + "/version")
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"etcdserver": "3.5.0", "etcdcluster": "3.5.0"}
    assert http_get(petcd.endpoint + "/nope")[::2] == (404, b"404 page not found\n")
    assert http_get(petcd.endpoint + "/health", "POST")[::2] == (405, b"Method Not Allowed\n")


@needs_etcdctl
def test_health_matches_etcd(petcd: MemberProcess, etcd: MemberProcess) -> None:
    for path in ("/health", "/nope"):
        want, got = http_get(etcd.endpoint + path), http_get(petcd.endpoint + path)
        assert got[0] == want[0] and got[2] == want[2]
        for h in ("Content-Type", "Access-Control-Allow-Methods",
                  "Access-Control-Allow-Headers"):
            assert got[1].get(h) == want[1].get(h)


def test_grpc_and_http_share_one_connection_port(petcd: MemberProcess) -> None:
    # Several gRPC calls over one channel and HTTP in between, on the same port.
    with grpc.insecure_channel(petcd.address) as ch:
        kv = rpc_grpc.KVStub(ch)
        for i in range(20):
            kv.Put(rpc.PutRequest(key=b"share/%d" % i, value=b"x" * 10000), timeout=5)
            assert http_get(petcd.endpoint + "/health")[0] == 200
        resp = kv.Range(rpc.RangeRequest(key=b"share/", range_end=b"share0"), timeout=5)
        assert resp.count == 20


@needs_etcdctl
def test_etcdctl_endpoint_and_member_commands(petcd: MemberProcess) -> None:
    ctl = Etcdctl(petcd.endpoint)
    health = ctl("endpoint", "health")  # etcdctl 3.4 prints this on stderr
    assert health.returncode == 0
    assert "is healthy: successfully committed proposal" in health.stdout + health.stderr
    status = json.loads(ctl.ok("endpoint", "status", "-w", "json"))[0]["Status"]
    mid = member_id([petcd.peer_url], "etcd-cluster")
    assert status["header"]["member_id"] == mid
    assert status["header"]["cluster_id"] == cluster_id([mid])
    assert status["leader"] == mid
    assert status["version"] == "3.5.0"
    assert status["dbSize"] > 0 and status["raftAppliedIndex"] <= status["raftIndex"]
    members = json.loads(ctl.ok("member", "list", "-w", "json"))
    assert members["members"] == [{"ID": mid, "name": "default", "peerURLs": [petcd.peer_url],
                                   "clientURLs": [petcd.endpoint]}]
    table = ctl.ok("member", "list")
    assert f"{mid:x}, started, default, {petcd.peer_url}, {petcd.endpoint}, false" in table
    assert "alarm" not in ctl.ok("alarm", "list")


@needs_etcdctl
def test_ids_and_data_survive_restart(petcd_factory: Any) -> None:
    m = petcd_factory(args=["--initial-cluster-token", "tok"])
    ctl = Etcdctl(m.endpoint)
    ctl.ok("put", "persist", "yes")
    before = json.loads(ctl.ok("endpoint", "status", "-w", "json"))[0]["Status"]
    assert before["header"]["member_id"] == member_id([m.peer_url], "tok")
    assert m.stop() == 0
    # On restart the bootstrap flags no longer matter: IDs come from the data dir.
    m.extra_args = ["--initial-cluster-token", "other"]
    m.start()
    after = json.loads(ctl.ok("endpoint", "status", "-w", "json"))[0]["Status"]
    assert after["header"]["member_id"] == before["header"]["member_id"]
    assert after["header"]["cluster_id"] == before["header"]["cluster_id"]
    assert after["header"]["revision"] == before["header"]["revision"]
    assert ctl.ok("get", "persist", "--print-value-only") == "yes\n"
    ctl.ok("put", "persist", "again")
    assert json.loads(ctl.ok("get", "persist", "-w", "json"))["header"]["revision"] == \
        before["header"]["revision"] + 1


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_shuts_down_cleanly(petcd_factory: Any, sig: signal.Signals) -> None:
    m = petcd_factory()
    assert m.proc is not None
    with grpc.insecure_channel(m.address) as ch:
        rpc_grpc.KVStub(ch).Put(rpc.PutRequest(key=b"k", value=b"v"), timeout=5)
    m.proc.send_signal(sig)
    assert m.proc.wait(15) == 0
    assert "stopped" in m.log_tail()


def test_separate_http_port(petcd_factory: Any) -> None:
    m = petcd_factory(separate_http=True)
    assert m.http_port is not None
    assert http_get(m.http_endpoint + "/health")[0] == 200
    with grpc.insecure_channel(m.address) as ch:
        rpc_grpc.KVStub(ch).Put(rpc.PutRequest(key=b"k", value=b"v"), timeout=5)
    # gRPC owns the client port now: HTTP/1.1 there is not answered as HTTP.
    with pytest.raises(Exception):  # noqa: B017 - connection reset or bad status line
        http_get(m.endpoint + "/health")


def test_env_and_config_file(tmp_path: Path) -> None:
    port, peer = free_port(), free_port()
    conf = tmp_path / "petcd.yml"
    conf.write_text(
        f"name: fromfile\ndata-dir: {tmp_path / 'data'}\n"
        f"listen-client-urls: http://127.0.0.1:{port}\n"
        f"advertise-client-urls: http://127.0.0.1:{port}\n"
        f"listen-peer-urls: http://127.0.0.1:{peer}\n"
        f"initial-advertise-peer-urls: http://127.0.0.1:{peer}\n"
        f"initial-cluster: fromfile=http://127.0.0.1:{peer}\n")

    class FromEnv(PetcdProcess):
        def member_args(self) -> list[str]:
            return []

    m = FromEnv(tmp_path / "unused", client_port=port, peer_port=peer,
                env={"ETCD_CONFIG_FILE": str(conf)})
    try:
        m.start()
        with grpc.insecure_channel(m.address) as ch:
            resp = rpc_grpc.ClusterStub(ch).MemberList(rpc.MemberListRequest(), timeout=5)
        assert [x.name for x in resp.members] == ["fromfile"]
        assert (tmp_path / "data" / "member").is_dir()
    finally:
        m.kill()


def test_help_version_and_bad_flags() -> None:
    out = petcd_cmd("--help")
    assert out.returncode == 0
    etcd_help = subprocess.run(["/usr/bin/etcd", "--help"], capture_output=True, text=True)
    if etcd_help.returncode == 0:
        for line in etcd_help.stdout.splitlines():
            if line.startswith("  --"):
                flag = line.split()[0]
                assert f"  {flag} " in out.stdout, f"{flag} missing from petcd --help"
    assert "[not yet used]" not in out.stdout  # every flag acts, or is refused/warned with why
    assert "--proxy: refused: " in out.stdout
    assert petcd_cmd("--version").stdout.startswith("petcd Version: ")
    bad = petcd_cmd("--no-such-flag")
    assert bad.returncode == 2 and "flag provided but not defined: -no-such-flag" in bad.stderr
    bad = petcd_cmd("--listen-client-urls", "http://127.0.0.1:1")
    assert bad.returncode == 1
    assert "--advertise-client-urls is required" in bad.stderr
    bad = petcd_cmd(env={"ETCD_ELECTION_TIMEOUT": "100"})
    assert bad.returncode == 1 and "should be at least as 5 times" in bad.stderr


def test_refuses_a_name_missing_from_initial_cluster(tmp_path: Path) -> None:
    port = free_port()
    out = petcd_cmd("--name", "x", "--data-dir", str(tmp_path / "d"),
                    "--listen-client-urls", f"http://127.0.0.1:{port}",
                    "--advertise-client-urls", f"http://127.0.0.1:{port}")
    assert out.returncode == 1
    assert "couldn't find local name \"x\" in the initial cluster configuration" in out.stderr


def test_port_in_use_fails(petcd: MemberProcess, tmp_path: Path) -> None:
    m = PetcdProcess(tmp_path / "second", client_port=petcd.client_port)
    try:
        m.start(wait=False)
        assert m.proc is not None
        assert m.proc.wait(30) == 1
        assert "address already in use" in m.log_tail().lower()
    finally:
        m.kill()


@needs_etcdctl
def test_unix_socket_client_url(tmp_path: Path) -> None:
    sock = "localhost:23999"  # etcd's form: the socket file is ./localhost:23999
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
    env["PYTHONPATH"] = str(SRC_DIR)
    proc = subprocess.Popen([sys.executable, "-m", "petcd", "--data-dir", "d",
                             "--listen-client-urls", f"unix://{sock}",
                             "--advertise-client-urls", f"unix://{sock}"],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / sock).exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        ctl = Etcdctl(f"unix://{sock}", cwd=str(tmp_path))
        ctl.ok("put", "u", "1")
        assert ctl.ok("get", "u", "--print-value-only") == "1\n"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    assert not (tmp_path / sock).exists()


def test_http_pipelining_and_bad_requests(petcd: MemberProcess) -> None:
    import socket

    with socket.create_connection(("127.0.0.1", petcd.client_port), timeout=5) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while data.count(b"HTTP/1.1 200 OK") < 2 or not data.endswith(b"}"):
            chunk = s.recv(65536)
            assert chunk, data
            data += chunk
    assert b'{"health":"true"}' in data and b'"etcdserver"' in data
    with socket.create_connection(("127.0.0.1", petcd.client_port), timeout=5) as s:
        s.sendall(b"not http at all\r\n\r\n")
        assert s.recv(65536).startswith(b"HTTP/1.1 400 Bad Request")
    assert http_get(petcd.endpoint + "/health")[0] == 200  # still serving


def test_port_in_use_fails_with_separate_http_too(petcd: MemberProcess, tmp_path: Path) -> None:
    m = PetcdProcess(tmp_path / "third", client_port=petcd.client_port, separate_http=True)
    try:
        m.start(wait=False)
        assert m.proc is not None
        assert m.proc.wait(30) == 1
        assert "address already in use" in m.log_tail().lower()
    finally:
        m.kill()
