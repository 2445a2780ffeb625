"""Certificates for tests and benchmarks, made on the fly with `cryptography` (nothing is
committed): certificate authorities, server/client certificates for loopback, and CRLs.

    ca = TestCA(tmp_path, "ca")
    server = ca.issue("server")                  # SAN 127.0.0.1, localhost; both usages
    client = ca.issue("alice", hosts=())         # CN alice, no SAN
    crl = ca.write_crl([client])                 # revoked: alice
    server.cert, server.key, ca.cert             # paths
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LOOPBACK = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class Issued:
    """A certificate and its key, written as PEM files."""

    cn: str
    serial: int
    cert: Path
    key: Path


def _san(hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for h in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    return x509.SubjectAlternativeName(names)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))


def self_signed(directory: Path, cn: str, hosts: Sequence[str] = LOOPBACK, *,
                ca: bool = False) -> tuple[Path, Path]:
    """A self-signed certificate (its own trust root when `ca`) and its key, written as
    `self.pem` and `self-key.pem` into `directory`."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(_san(hosts), critical=False))
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None),
                                        critical=True)
    cert_path, key_path = Path(directory) / "self.pem", Path(directory) / "self-key.pem"
    cert_path.write_bytes(builder.sign(key, hashes.SHA256()).public_bytes(
        serialization.Encoding.PEM))
    _write_key(key_path, key)
    return cert_path, key_path


class TestCA:
    """A self-signed CA writing its files (`<name>-ca.pem`, issued `<name>-<cn>.pem` and
    `-key.pem`, `<name>-crl.pem`) into `directory`."""

    __test__ = False  # not a pytest class

    def __init__(self, directory: Path, name: str = "ca", *, days: float = 1.0) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self._now = datetime.datetime.now(datetime.UTC)
        self._days = days
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"petcd test {name}")])
        usage = x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                              content_commitment=False, key_encipherment=False,
                              data_encipherment=False, key_agreement=False,
                              encipher_only=False, decipher_only=False)
        self._cert = (
            x509.CertificateBuilder().subject_name(self._subject).issuer_name(self._subject)
            .public_key(self._key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(self._now - datetime.timedelta(minutes=5))
            .not_valid_after(self._now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(usage, critical=True)
            .sign(self._key, hashes.SHA256()))
        self.cert = self.dir / f"{name}-ca.pem"
        self.cert.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, cn: str, *, hosts: Sequence[str] = LOOPBACK, server: bool = True,
              client: bool = True, expired: bool = False) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + \
                 ([ExtendedKeyUsageOID.CLIENT_AUTH] if client else [])
        start = self._now - datetime.timedelta(minutes=5)
        end = self._now + datetime.timedelta(days=self._days)
        if expired:
            start, end = self._now - datetime.timedelta(days=2), \
                self._now - datetime.timedelta(days=1)
        serial = x509.random_serial_number()
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(self._subject).public_key(key.public_key()).serial_number(serial)
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False))
        if hosts:
            builder = builder.add_extension(_san(hosts), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        stem = f"{self.name}-{cn.replace(' ', '_')}"
        if (self.dir / f"{stem}.pem").exists():  # the same CN again (e.g. to revoke one)
            stem += f"-{serial:x}"[:9]
        cert_path, key_path = self.dir / f"{stem}.pem", self.dir / f"{stem}-key.pem"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key_path, key)
        return Issued(cn, serial, cert_path, key_path)

    def write_crl(self, revoked: Sequence[Issued]) -> Path:
        builder = (x509.CertificateRevocationListBuilder().issuer_name(self._subject)
                   .last_update(self._now - datetime.timedelta(minutes=5))
                   .next_update(self._now + datetime.timedelta(days=1)))
        for item in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(item.serial)
                .revocation_date(self._now - datetime.timedelta(minutes=1)).build())
        crl = builder.sign(self._key, hashes.SHA256())
        path = self.dir / f"{self.name}-crl.pem"
        path.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
        return path


@dataclass(frozen=True)
class ClientTLS:
    """How a test client reaches a TLS client URL: the CA to verify the member with (None:
    no verification) and the client certificate to present (None: none)."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if self.ca is None:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        else:
            ctx.load_verify_locations(cafile=str(self.ca))
        if self.cert is not None and self.key is not None:
            ctx.load_cert_chain(self.cert, self.key)
        return ctx

    def grpc_credentials(self, address: tuple[str, int] | None = None) -> Any:
        """grpc.ChannelCredentials. grpc cannot skip verification: without `ca`, the
        certificate the server at `address` presents is trusted (auto-TLS members)."""
        import grpc

        def read(p: Path | None) -> bytes | None:
            return None if p is None else p.read_bytes()

        root = read(self.ca)
        if root is None and address is not None:
            root = ssl.get_server_certificate(address, timeout=10).encode()
        return grpc.ssl_channel_credentials(root, read(self.key), read(self.cert))

    def etcdctl_args(self) -> list[str]:
        args = ["--insecure-skip-tls-verify", "--insecure-transport=false"] \
            if self.ca is None else ["--cacert", str(self.ca)]
        if self.cert is not None and self.key is not None:
            args += ["--cert", str(self.cert), "--key", str(self.key)]
        return args

    def curl_args(self) -> list[str]:
        args = ["--insecure"] if self.ca is None else ["--cacert", str(self.ca)]
        if self.cert is not None and self.key is not None:
            args += ["--cert", str(self.cert), "--key", str(self.key)]
        return args
