"""Client TLS on one member, petcd and etcd 3.4 side by side (the same flags, the same
clients: etcdctl, grpc, urllib/curl over https): server-only TLS, client-certificate auth
with a CRL and an allowed hostname, auto-TLS, cipher suites, and what a bad file at start
does. Outcomes must match etcd's wherever etcd has the feature."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from petcd.testing import SRC_DIR, Etcdctl, MemberProcess, free_port, have_etcd
from petcd.testing_pki import ClientTLS

from .conftest import Pki, curl, etcdctl_ok, grpc_ok, handshake, https_get

KINDS = ["petcd", pytest.param("etcd", marks=pytest.mark.skipif(
    not have_etcd(), reason="etcd/etcdctl 3.4 not installed"))]

Start = Callable[..., MemberProcess]


@pytest.fixture(params=KINDS)
def start(request: pytest.FixtureRequest) -> Start:
    """start(args, client_tls): a petcd or an etcd member with an https client URL."""
    factory: Any = request.getfixturevalue(f"{request.param}_factory")

    def make(args: list[str], tls: ClientTLS) -> MemberProcess:
        return factory(args=args, client_tls=tls)  # type: ignore[no-any-return]
    return make


def test_server_tls(start: Start, pki: Pki) -> None:
    m = start(pki.server_args(), pki.client())
    tls = pki.client()
    assert etcdctl_ok(m, tls, "put", "tls/a", "1").stdout == "OK\n"
    assert etcdctl_ok(m, pki.client(verify=False), "get", "tls/a").stdout == "tls/a\n1\n"
    assert grpc_ok(m, tls)
    # A client that trusts another CA does not accept the member.
    assert not grpc_ok(m, ClientTLS(pki.other_ca.cert))
    assert https_get(m.endpoint + "/health", tls) == {"health": "true"}
    version = curl(m.endpoint, tls, "/version")
    assert version.returncode == 0 and '"etcdserver"' in version.stdout
    # Plaintext on the TLS port: no answer worth having; the member keeps serving.
    plain = subprocess.run(["curl", "-s", "--max-time", "5", f"http://{m.address}/health"],
                           capture_output=True, text=True, timeout=30)
    assert '"health"' not in plain.stdout
    assert not grpc_ok(m, tls, secure=False)
    assert https_get(m.endpoint + "/health", tls) == {"health": "true"}


def test_client_cert_auth_with_crl(start: Start, pki: Pki) -> None:
    m = start(pki.server_args("--trusted-ca-file", str(pki.ca.cert), "--client-cert-auth",
                              "--client-crl-file", str(pki.crl)), pki.client(pki.alice))
    good = pki.client(pki.alice)
    assert etcdctl_ok(m, good, "put", "tls/b", "2").stdout == "OK\n"
    assert grpc_ok(m, good)
    assert https_get(m.endpoint + "/health", good) == {"health": "true"}
    assert curl(m.endpoint, good, "/health").stdout.startswith('{"health":"true"')
    for refused in (pki.client(), pki.client(pki.stranger), pki.client(pki.revoked)):
        assert not grpc_ok(m, refused), refused
        assert https_get(m.endpoint + "/health", refused) is None, refused
    r = etcdctl_ok(m, pki.client(), "get", "tls/b")
    assert r.returncode != 0 and "tls/b" not in r.stdout
    assert grpc_ok(m, good)  # still serving the rightful client


def test_trusted_ca_alone_requires_client_certificates(start: Start, pki: Pki) -> None:
    m = start(pki.server_args("--trusted-ca-file", str(pki.ca.cert)), pki.client(pki.alice))
    assert grpc_ok(m, pki.client(pki.alice))
    assert not grpc_ok(m, pki.client())


def test_client_cert_allowed_hostname(start: Start, pki: Pki) -> None:
    m = start(pki.server_args("--trusted-ca-file", str(pki.ca.cert), "--client-cert-auth",
                              "--client-cert-allowed-hostname", "client.example"),
              pki.client(pki.host_client))
    assert grpc_ok(m, pki.client(pki.host_client))
    assert https_get(m.endpoint + "/health", pki.client(pki.host_client)) == {"health": "true"}
    assert not grpc_ok(m, pki.client(pki.alice))
    assert https_get(m.endpoint + "/health", pki.client(pki.alice)) is None


def test_auto_tls(start: Start, pki: Pki) -> None:
    m = start(["--auto-tls"], ClientTLS())
    cert_file = m.data_dir / "fixtures" / "client" / "cert.pem"
    assert (m.data_dir / "fixtures" / "client" / "key.pem").exists()
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "etcd"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert etcdctl_ok(m, ClientTLS(), "put", "tls/auto", "x").stdout == "OK\n"
    if m.kind == "petcd":
        # A grpc client that pins the generated certificate verifies the member with it
        # (etcd's P-521 certificate is beyond gRPC's BoringSSL: such clients cannot connect).
        assert grpc_ok(m, ClientTLS(cert_file))


def _tls12(cipher: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(cipher)
    return ctx


def test_cipher_suites(start: Start, pki: Pki) -> None:
    m = start(pki.server_args("--cipher-suites", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"),
              pki.client())
    port = m.client_port
    assert handshake(port, _tls12("ECDHE-ECDSA-AES128-GCM-SHA256")) == "TLSv1.2"
    assert handshake(port, _tls12("ECDHE-ECDSA-AES256-GCM-SHA384")) is None
    assert handshake(port, pki.client().ssl_context()) == "TLSv1.3"  # 1.3 suites are fixed


def _start_fails(m: MemberProcess) -> str:
    m.start(wait=False)
    assert m.proc is not None
    assert m.proc.wait(60) != 0
    return m.log_tail(4000)


@pytest.mark.parametrize("case", ["missing cert", "key of another cert", "not a cert",
                                  "missing CA"])
def test_bad_files_fail_the_start(start: Start, pki: Pki, tmp_path: Path, case: str,
                                  request: pytest.FixtureRequest) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    missing = str(tmp_path / "nowhere.pem")
    server, key = str(pki.server.cert), str(pki.server.key)
    args, names, gist = {
        "missing cert": (["--cert-file", missing, "--key-file", key], missing,
                         "no such file or directory"),
        "key of another cert": (["--cert-file", server, "--key-file", str(pki.alice.key)],
                                str(pki.alice.key), "private key does not match public key"),
        "not a cert": (["--cert-file", str(junk), "--key-file", key], str(junk),
                       "failed to find any PEM data in certificate input"),
        "missing CA": ([*pki.server_args(), "--trusted-ca-file", missing], missing,
                       "no such file or directory"),
    }[case]
    factory: Any = request.getfixturevalue(
        "petcd_factory" if "petcd" in request.node.callspec.id else "etcd_factory")
    log = _start_fails(factory(args=args, client_tls=pki.client(), start=False))
    assert gist in log
    if "petcd" in request.node.callspec.id:
        assert names in log  # petcd names the file in every case


def test_petcd_refuses_a_missing_crl_at_start(petcd_factory: Any, pki: Pki,
                                              tmp_path: Path) -> None:
    """etcd reads the CRL at each connection (a missing one refuses every client while
    the member looks healthy); petcd checks it at start too."""
    missing = str(tmp_path / "nowhere.crl")
    m = petcd_factory(args=pki.server_args("--client-cert-auth", "--trusted-ca-file",
                                           str(pki.ca.cert), "--client-crl-file", missing),
                      client_tls=pki.client(), start=False)
    log = _start_fails(m)
    assert f"open {missing}: no such file or directory" in log


def test_petcd_tls_version_bounds(petcd_factory: Any, pki: Pki) -> None:
    m = petcd_factory(args=pki.server_args("--tls-max-version", "TLS1.2"),
                      client_tls=pki.client())
    assert handshake(m.client_port, pki.client().ssl_context()) == "TLSv1.2"
    only13 = pki.client().ssl_context()
    only13.minimum_version = ssl.TLSVersion.TLSv1_3
    assert handshake(m.client_port, only13) is None
    m2 = petcd_factory(args=pki.server_args("--tls-min-version", "TLS1.3"),
                       client_tls=pki.client())
    only12 = pki.client().ssl_context()
    only12.maximum_version = ssl.TLSVersion.TLSv1_2
    assert handshake(m2.client_port, only12) is None
    assert handshake(m2.client_port, pki.client().ssl_context()) == "TLSv1.3"


def test_petcd_unixs_and_https_http_urls(pki: Pki, tmp_path: Path) -> None:
    """TLS on a unix socket (unixs://) and on --listen-client-http-urls (gRPC keeps the
    client URLs, HTTP gets its own https port)."""
    port, http_port, peer_port = free_port(), free_port(), free_port()
    sock = f"localhost:{port}"  # etcd's form: the socket file is ./localhost:<port>
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
    env["PYTHONPATH"] = str(SRC_DIR)
    peer = f"http://127.0.0.1:{peer_port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "petcd", "--data-dir", "d",
         "--listen-client-urls", f"https://127.0.0.1:{port},unixs://{sock}",
         "--advertise-client-urls", f"https://127.0.0.1:{port}",
         "--listen-client-http-urls", f"https://127.0.0.1:{http_port}",
         "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
         "--initial-cluster", f"default={peer}", *pki.server_args()],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        health = f"https://127.0.0.1:{http_port}/health"
        deadline = time.monotonic() + 30
        while https_get(health, pki.client()) != {"health": "true"}:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        Etcdctl(f"unixs://{sock}", cwd=str(tmp_path), tls=pki.client()).ok("put", "u", "1")
        ctl = Etcdctl(f"https://127.0.0.1:{port}", tls=pki.client())
        assert ctl.ok("get", "u", "--print-value-only") == "1\n"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0


def _served_serial(port: int) -> int:
    pem = ssl.get_server_certificate(("127.0.0.1", port), timeout=10)
    return x509.load_pem_x509_certificate(pem.encode()).serial_number


def test_a_rotated_certificate_is_served_without_restart(start: Start, pki: Pki,
                                                         tmp_path: Path) -> None:
    """etcd reads its certificate files at each handshake; petcd notices when they change."""
    cert, key = tmp_path / "server.pem", tmp_path / "server-key.pem"
    cert.write_bytes(pki.server.cert.read_bytes())
    key.write_bytes(pki.server.key.read_bytes())
    m = start(["--cert-file", str(cert), "--key-file", str(key)], pki.client())
    assert _served_serial(m.client_port) == pki.server.serial
    fresh = pki.ca.issue("server")
    key.write_bytes(fresh.key.read_bytes())
    cert.write_bytes(fresh.cert.read_bytes())
    assert _served_serial(m.client_port) == fresh.serial
    assert grpc_ok(m, pki.client())


def test_certificate_cn_is_the_user_under_auth(start: Start, pki: Pki) -> None:
    """etcd's rule: with auth on, a verified client certificate's CN is the user name; a
    --user login takes precedence."""
    root = pki.ca.issue("root", hosts=())
    m = start(pki.server_args("--trusted-ca-file", str(pki.ca.cert), "--client-cert-auth"),
              pki.client(root))
    as_root, as_alice = pki.client(root), pki.client(pki.alice)
    for cmd in (("user", "add", "root:rootpw"), ("user", "add", "alice:alicepw"),
                ("role", "add", "reader"), ("role", "grant-permission", "reader", "read", "cn/k"),
                ("user", "grant-role", "alice", "reader"), ("put", "cn/k", "v0"),
                ("auth", "enable")):
        r = etcdctl_ok(m, as_root, *cmd)
        assert r.returncode == 0, r
    assert etcdctl_ok(m, as_alice, "get", "cn/k", "--print-value-only").stdout == "v0\n"
    denied = etcdctl_ok(m, as_alice, "put", "cn/k", "v1")
    assert denied.returncode != 0 and "permission denied" in denied.stderr, denied
    assert etcdctl_ok(m, as_root, "put", "cn/k", "v2").stdout == "OK\n"
    assert etcdctl_ok(m, as_alice, "--user", "root:rootpw", "put", "cn/k", "v3").stdout == "OK\n"
    assert etcdctl_ok(m, as_alice, "get", "cn/k", "--print-value-only").stdout == "v3\n"
