"""TLS with a client certificate (--client-cert-auth): the client connects with CA, cert
and key (paths or bytes), and fails cleanly without them. Against etcd 3.4, and petcd
once it serves client TLS (skipped before)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from petcd.client import Client
from petcd.client.errors import ConnectionFailedError, EtcdError
from petcd.testing import ETCD_BIN, SRC_DIR, free_port, have_etcd, make_pki

from .conftest import AsyncBridge


def _petcd_serves_tls() -> bool:
    out = subprocess.run([sys.executable, "-m", "petcd", "--help"], capture_output=True,
                         text=True, env={"PYTHONPATH": str(SRC_DIR)}, check=False).stdout
    line = next((ln for ln in out.splitlines() if "--client-cert-auth" in ln), "")
    return bool(line) and "not yet used" not in line


@pytest.mark.parametrize("kind", ["etcd", "petcd"])
@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_client_cert_tls(kind: str, flavour: str, tmp_path: Path) -> None:
    if kind == "etcd" and not have_etcd():
        pytest.skip("etcd 3.4 not installed")
    if kind == "petcd" and not _petcd_serves_tls():
        pytest.skip("this petcd does not serve client TLS yet")
    ca, cert, key = make_pki(tmp_path)
    port, peer = free_port(), free_port()
    url = f"https://127.0.0.1:{port}"
    cmd = [ETCD_BIN] if kind == "etcd" else [sys.executable, "-m", "petcd"]
    cmd += ["--name", "t", "--data-dir", str(tmp_path / "data"),
            "--listen-client-urls", url, "--advertise-client-urls", url,
            "--listen-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-cluster", f"t=http://127.0.0.1:{peer}",
            "--cert-file", str(cert), "--key-file", str(key),
            "--trusted-ca-file", str(ca), "--client-cert-auth"]
    log = open(tmp_path / "log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                            env={"PYTHONPATH": str(SRC_DIR), "PATH": "/usr/bin:/bin"})
    make = Client if flavour == "sync" else AsyncBridge
    try:
        with make(url, ca_cert=ca, cert_key=key, cert_cert=cert.read_bytes(),
                  timeout=5) as c:
            deadline = time.monotonic() + 60
            while True:
                try:
                    c.put("tls", "yes")
                    break
                except EtcdError:
                    assert time.monotonic() < deadline, (tmp_path / "log").read_text()
                    time.sleep(0.2)
            assert c.get("tls").value == b"yes"
        with make(url, ca_cert=ca, dial_timeout=0.5, timeout=1.5) as anon, \
                pytest.raises(EtcdError) as e:
            anon.get("tls")
        assert isinstance(e.value, (ConnectionFailedError, EtcdError))
    finally:
        proc.kill()
        proc.wait()
        log.close()
