"""--insecure-skip-tls-verify against a TLS petcd and a TLS etcd 3.4 whose certificate is
self-signed and names another host: etcdctl and petcdctl both connect with the flag (same
output), and both refuse without it. As etcdctl 3.4 does, the flag acts only together with
--insecure-transport=false (or --cacert/--cert/--key): with an https:// endpoint alone
clientv3 verifies anyway, and so does petcdctl."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from petcd.client.unverified import fetch_chain
from petcd.testing import ETCD_BIN, SRC_DIR, free_port, have_etcd
from petcd.testing_pki import self_signed

from .harness import PETCDCTL, Result, assert_same, run


@pytest.fixture(params=["petcd", pytest.param("etcd", marks=pytest.mark.skipif(
    not have_etcd(), reason="etcd 3.4 not installed"))])
def tls_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    cert, key = self_signed(tmp_path, "not this host", ["wrong-name.test"])
    port, peer = free_port(), free_port()
    url = f"https://127.0.0.1:{port}"
    cmd = [ETCD_BIN] if request.param == "etcd" else [sys.executable, "-m", "petcd"]
    cmd += ["--name", "t", "--data-dir", str(tmp_path / "data"),
            "--listen-client-urls", url, "--advertise-client-urls", url,
            "--listen-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-cluster", f"t=http://127.0.0.1:{peer}",
            "--cert-file", str(cert), "--key-file", str(key)]
    log = open(tmp_path / "log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                            env={"PYTHONPATH": str(SRC_DIR), "PATH": "/usr/bin:/bin"})
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                fetch_chain(f"127.0.0.1:{port}", timeout=2)
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, \
                    (tmp_path / "log").read_text()
                time.sleep(0.2)
        yield url
    finally:
        proc.kill()
        proc.wait()
        log.close()


def _both(url: str, args: list[str]) -> tuple[Result, Result]:
    """etcdctl, then petcdctl, against the same server."""
    return run(["etcdctl"], url, args, None), run(PETCDCTL, url, args, None)


def test_insecure_skip_tls_verify(tls_server: str) -> None:
    url = tls_server
    skip = ["--insecure-transport=false", "--insecure-skip-tls-verify", "--dial-timeout", "3s"]
    deadline = time.monotonic() + 60
    while run(["etcdctl"], url, [*skip, "put", "tls/k", "v"], None).rc != 0:
        assert time.monotonic() < deadline, "the TLS server never took a write"
        time.sleep(0.3)
    for args in (["put", "tls/k", "v2"], ["get", "tls/k"], ["get", "tls/k", "-w", "json"],
                 ["del", "tls/none"]):
        want, got = _both(url, [*skip, *args])
        assert want.rc == 0, want.err
        assert_same(args, want, got)
    # Without the flag the certificate is refused (unknown issuer, wrong name): no
    # command gets through, with either tool.
    for refused in (["--insecure-transport=false"], ["--insecure-skip-tls-verify"]):
        want, got = _both(url, [*refused, "--dial-timeout", "1s", "get", "tls/k"])
        assert want.rc != 0 and got.rc != 0 and not got.out, (refused, want, got)
        assert got.err.startswith("Error: "), got.err
