"""petcd.tls without sockets: the checks of files at start (each error names the file),
hostname matching, the post-handshake gate's decisions, auto-TLS certificates."""

from __future__ import annotations

import datetime
import ssl
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from petcd.testing_pki import Issued, TestCA
from petcd.tls import Gate, TLSError, TLSInfo, self_cert, server_context
from petcd.tls.gate import matches_hostname


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA(tmp_path_factory.mktemp("pki"), "ca")


def _cert(issued: Issued) -> x509.Certificate:
    return x509.load_pem_x509_certificate(issued.cert.read_bytes())


def test_hostname_matching_follows_go(ca: TestCA) -> None:
    c = _cert(ca.issue("h", hosts=("node1.example", "*.pods.example", "10.0.0.7", "::1")))
    assert matches_hostname(c, "node1.example") and matches_hostname(c, "NODE1.example.")
    assert matches_hostname(c, "a.pods.example")
    assert not matches_hostname(c, "a.b.pods.example") and not matches_hostname(c, "pods.example")
    assert matches_hostname(c, "10.0.0.7") and matches_hostname(c, "[::1]")
    assert not matches_hostname(c, "10.0.0.8")
    # The CN is not a hostname (Go stopped reading it; so does petcd).
    assert not matches_hostname(_cert(ca.issue("cn.example", hosts=())), "cn.example")


class _Transport:
    """Just what Gate.refusal reads from an asyncio TLS transport."""

    def __init__(self, issued: Issued | None) -> None:
        self._der = None if issued is None else \
            ssl.PEM_cert_to_DER_cert(issued.cert.read_text())

    def get_extra_info(self, name: str) -> Any:
        return self if name == "ssl_object" else None

    def getpeercert(self, binary_form: bool) -> bytes | None:
        return self._der


def test_gate_decisions(ca: TestCA, tmp_path: Path) -> None:
    good, other, revoked = ca.issue("m1", hosts=("m1.example",)), ca.issue("m2"), ca.issue("m3")
    crl = ca.write_crl([revoked])
    gate = Gate(TLSInfo(crl_file=str(crl), allowed_hostname="m1.example"), "peer")
    t: Any = _Transport
    assert gate.refusal(t(good)) is None
    assert gate.refusal(t(None)) is None  # no certificate was asked for
    assert "hostname" in (gate.refusal(t(other)) or "")
    assert f"certificate serial {revoked.serial:x} revoked" in (gate.refusal(t(revoked)) or "")
    cn_gate = Gate(TLSInfo(allowed_cn="m2"), "peer")
    assert cn_gate.refusal(t(other)) is None
    assert "CN 'm1'" in (cn_gate.refusal(t(good)) or "")
    # A CRL replaced while serving is read again.
    ca.write_crl([revoked, good])
    assert "revoked" in (gate.refusal(t(good)) or "")


def test_every_bad_file_is_named(ca: TestCA, tmp_path: Path) -> None:
    server, other = ca.issue("server"), ca.issue("other")
    junk = tmp_path / "junk"
    junk.write_text("junk")
    base = TLSInfo(cert_file=str(server.cert), key_file=str(server.key))
    cases = {
        "nowhere.pem": TLSInfo(cert_file=str(tmp_path / "nowhere.pem"),
                               key_file=str(server.key)),
        str(other.key): TLSInfo(cert_file=str(server.cert), key_file=str(other.key)),
        str(junk): TLSInfo(cert_file=str(server.cert), key_file=str(junk)),
        "ca.pem": TLSInfo(cert_file=base.cert_file, key_file=base.key_file,
                          trusted_ca_file=str(tmp_path / "ca.pem")),
        "junk-ca": TLSInfo(cert_file=base.cert_file, key_file=base.key_file,
                           trusted_ca_file=str(junk)),
        "crl": TLSInfo(cert_file=base.cert_file, key_file=base.key_file,
                       crl_file=str(junk)),
    }
    for name, info in cases.items():
        with pytest.raises(TLSError) as e:
            server_context(info)
        assert name.replace("junk-ca", str(junk)).replace("crl", str(junk)) in str(e.value)
    server_context(base)


def test_auto_tls_certificate(tmp_path: Path) -> None:
    d = str(tmp_path / "fixtures" / "client")
    cert, key = self_cert(d, ["https://127.0.0.1:1", "https://node.example:2"], 2)
    c = x509.load_pem_x509_certificate(Path(cert).read_bytes())
    san = c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["node.example"]
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    lifetime = c.not_valid_after_utc - c.not_valid_before_utc
    assert lifetime == datetime.timedelta(days=730)
    assert (Path(key).stat().st_mode & 0o777) == 0o600
    assert self_cert(d, ["https://127.0.0.1:1"]) == (cert, key)  # reused, not regenerated
    assert Path(cert).read_bytes() == c.public_bytes(serialization.Encoding.PEM)
