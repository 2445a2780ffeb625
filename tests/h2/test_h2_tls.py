"""TLS on petcd's h2 server: the listener's ssl context offers ALPN h2 and http/1.1;
gRPC (grpcio with TLS) and HTTPS share the port."""

from __future__ import annotations

import http.client
import ssl
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from h2_service import ServerThread, h2_server

from petcd.testing_pki import ClientTLS, TestCA, self_signed
from petcd.tls import TLSInfo, server_context

__all__ = ["h2_server"]  # a fixture


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerThread, Path]]:
    cert, key = self_signed(tmp_path_factory.mktemp("tls"), "localhost", ca=True)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    s = ServerThread("h2", ssl=ctx).start()
    yield s, cert
    s.stop()


def test_grpc_over_tls(tls: tuple[ServerThread, Path]) -> None:
    server, cert = tls
    creds = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
    with grpc.secure_channel(f"127.0.0.1:{server.port}", creds) as ch:
        echo = ch.unary_unary("/test.Svc/Echo")
        assert echo(b"secret", timeout=10) == b"secret"
        assert list(ch.unary_stream("/test.Svc/ServerStream")(b"3:10", timeout=10)) == [
            bytes([i]) * 10 for i in range(3)]


def test_https_on_the_same_port(tls: tuple[ServerThread, Path]) -> None:
    server, cert = tls
    ctx = ssl.create_default_context(cafile=str(cert))
    conn = http.client.HTTPSConnection("127.0.0.1", server.port, context=ctx, timeout=5)
    conn.request("GET", "/health")
    r = conn.getresponse()
    assert (r.status, r.read()) == (200, b"GET /health over HTTP/1.1")
    conn.close()


@pytest.mark.parametrize("kind", ["h2", "grpcio"])
def test_auth_context_shows_the_client_certificate(kind: str, tmp_path: Path) -> None:
    """Handlers see the verified client certificate through context.auth_context() the same
    way on petcd's server as on grpc.aio (the CN is etcd's user name under auth)."""
    ca = TestCA(tmp_path, "ca")
    server_cert = ca.issue("server")
    alice = ca.issue("alice", hosts=())
    bob = ca.issue("bob", hosts=("bob.example", "10.1.2.3"))
    if kind == "h2":
        ctx = server_context(TLSInfo(cert_file=str(server_cert.cert),
                                     key_file=str(server_cert.key),
                                     trusted_ca_file=str(ca.cert), client_cert_auth=True))
        s = ServerThread("h2", ssl=ctx).start()
    else:
        creds = grpc.ssl_server_credentials(
            [(server_cert.key.read_bytes(), server_cert.cert.read_bytes())],
            root_certificates=ca.cert.read_bytes(), require_client_auth=True)
        s = ServerThread("grpcio", grpc_credentials=creds).start()
    try:
        seen = {}
        for who in (alice, bob):
            creds = ClientTLS(ca.cert, who.cert, who.key).grpc_credentials()
            with grpc.secure_channel(f"127.0.0.1:{s.port}", creds) as ch:
                seen[who.cn] = ch.unary_unary("/test.Svc/Echo")(b"auth", timeout=10).decode()
                meta = ch.unary_unary("/test.Svc/Echo")(b"meta", timeout=10).decode()
                assert "'ipv4:127.0.0.1:" in meta  # peer() as over plaintext
    finally:
        s.stop()
    assert seen["alice"] == repr((
        {"transport_security_type": [b"ssl"], "x509_common_name": [b"alice"],
         "x509_subject": [b"CN=alice"]}, "x509_common_name", [b"alice"]))
    assert seen["bob"] == repr((
        {"peer_dns": [b"bob.example"], "peer_ip": [b"10.1.2.3"],
         "transport_security_type": [b"ssl"], "x509_common_name": [b"bob"],
         "x509_subject": [b"CN=bob"],
         "x509_subject_alternative_name": [b"bob.example", b"10.1.2.3"]},
        "x509_subject_alternative_name", [b"bob.example", b"10.1.2.3"]))


def test_auth_context_without_tls_is_empty(h2_server: ServerThread) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{h2_server.port}") as ch:
        assert ch.unary_unary("/test.Svc/Echo")(b"auth", timeout=10) == b"({}, None, None)"
