"""--insecure-skip-tls-verify against a TLS petcd and a TLS etcd 3.4 whose certificate is
self-signed and names another host: etcdctl and petcdctl both connect with the flag (same
output), and both refuse without it. As etcdctl 3.4 does, the flag acts only together with
--insecure-transport=false (or --cacert/--cert/--key): with an https:// endpoint alone
clientv3 verifies anyway, and so does petcdctl."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from petcd.client.unverified import fetch_chain
from petcd.testing import ETCD_BIN, SRC_DIR, free_port, have_etcd
from petcd.testing_pki import self_signed

from .harness import PETCDCTL, Result, assert_same, run


def _start(kind: str, d: Path, host: str = "wrong-name.test") -> Generator[str, None, None]:
    """A one-member TLS server whose certificate is self-signed for `host`; yields its
    https:// URL once it answers TLS handshakes."""
    d.mkdir(parents=True, exist_ok=True)
    cert, key = self_signed(d, "not this host", [host])
    port, peer = free_port(), free_port()
    url = f"https://127.0.0.1:{port}"
    cmd = [ETCD_BIN] if kind == "etcd" else [sys.executable, "-m", "petcd"]
    cmd += ["--name", "t", "--data-dir", str(d / "data"),
            "--listen-client-urls", url, "--advertise-client-urls", url,
            "--listen-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-cluster", f"t=http://127.0.0.1:{peer}",
            "--cert-file", str(cert), "--key-file", str(key)]
    log = open(d / "log", "wb")  # noqa: SIM115
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
                    (d / "log").read_text()
                time.sleep(0.2)
        yield url
    finally:
        proc.kill()
        proc.wait()
        log.close()


KINDS = ["petcd", pytest.param("etcd", marks=pytest.mark.skipif(
    not have_etcd(), reason="etcd 3.4 not installed"))]


@pytest.fixture(params=KINDS)
def tls_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from _start(request.param, tmp_path)


@pytest.fixture(params=KINDS)
def tls_pair(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[str]]:
    """Two servers whose self-signed certificates name different hosts."""
    one = _start(request.param, tmp_path / "a", "one.test")
    two = _start(request.param, tmp_path / "b", "two.test")
    try:
        yield [next(one), next(two)]
    finally:
        one.close()
        two.close()


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
        assert got.err.splitlines()[-1].startswith("Error: "), got.err
        # (the same lines: clientv3's retry warning, when etcdctl logs one, then the error)
        assert len(got.err.splitlines()) == len(want.err.splitlines()), (want.err, got.err)


def _wait_writable(tool: list[str], url: str, args: list[str]) -> None:
    deadline = time.monotonic() + 60
    while run(tool, url, [*args, "put", "tls/k", "v"], None).rc != 0:
        assert time.monotonic() < deadline, "the TLS server never took a write"
        time.sleep(0.3)


def test_insecure_skip_tls_verify_every_endpoint(tls_pair: list[str], tmp_path: Path
                                                 ) -> None:
    """Endpoints whose certificates name different hosts, the first one dead: each is
    pinned with its own certificate, so per-endpoint commands reach both and a command
    for the cluster gets through on a live one, as with etcdctl."""
    skip = ["--insecure-transport=false", "--insecure-skip-tls-verify", "--dial-timeout", "3s"]
    for url in tls_pair:
        _wait_writable(["etcdctl"], url, skip)
    dead = f"https://127.0.0.1:{free_port()}"
    both = ",".join(tls_pair)
    for eps, args in ((both, ["endpoint", "health"]),
                      (both, ["endpoint", "status", "-w", "json"]),
                      (both, ["endpoint", "hashkv", "-w", "fields"]),
                      (f"{dead},{tls_pair[1]}", ["put", "tls/k", "v2"]),
                      (f"{dead},{tls_pair[1]}", ["get", "tls/k"])):
        want, got = run(["etcdctl"], eps, [*skip, *args], None), \
            run(PETCDCTL, eps, [*skip, *args], None)
        assert want.rc == 0, want.err
        if args[0] == "endpoint":  # (their lines come in the order they finish)
            want.out = b"\n".join(sorted(want.out.split(b"\n")))
            got.out = b"\n".join(sorted(got.out.split(b"\n")))
        assert_same(args, want, got)
    r = run(PETCDCTL, tls_pair[1], [*skip, "snapshot", "save", str(tmp_path / "s.db")], None)
    assert (r.rc, r.out) == (0, f"Snapshot saved at {tmp_path / 's.db'}\n".encode()), r
    out = run(PETCDCTL, both, [*skip, "endpoint", "status"], None).out.decode()
    assert all(u.removeprefix("https://") in out for u in tls_pair), out
    _client_insecure_skip_tls_verify(dead, tls_pair)


def _client_insecure_skip_tls_verify(dead: str, tls_pair: list[str]) -> None:
    """petcd.client (sync and asyncio) takes the same option: each member's channel is
    pinned to that member's certificate; without it the certificates are refused."""
    import asyncio

    from petcd.client import AsyncClient, Client, ConnectionFailedError

    eps = [dead, *tls_pair]
    for i in range(3):  # the client moves over every member, each its own certificate
        with Client(eps[i:] + eps[:i], timeout=20, dial_timeout=2,
                    insecure_skip_tls_verify=True) as c:
            c.put(f"tls/{i}", "v")
            assert c.get(f"tls/{i}").value == b"v"
            assert c.endpoint != dead.removeprefix("https://")

    async def aio() -> None:
        async with AsyncClient(eps, timeout=20, dial_timeout=2,
                               insecure_skip_tls_verify=True) as c:
            await c.put("tls/aio", "v")
            assert (await c.get("tls/aio")).value == b"v"

    asyncio.run(aio())
    with Client(tls_pair, timeout=3, dial_timeout=1) as c, \
            pytest.raises(ConnectionFailedError):
        c.get("tls/0")
