"""TLS on petcd's h2 server: the listener's ssl context offers ALPN h2 and http/1.1;
gRPC (grpcio with TLS) and HTTPS share the port."""

from __future__ import annotations

import datetime
import http.client
import ipaddress
import ssl
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from h2_service import ServerThread


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerThread, Path]]:
    cert, key = _self_signed(tmp_path_factory.mktemp("tls"))
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
