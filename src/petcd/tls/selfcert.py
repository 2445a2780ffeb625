"""Self-signed certificates for --auto-tls and --peer-auto-tls, as etcd makes them: an
ECDSA key and a certificate (organisation "etcd", server auth, SANs from the listen URLs'
hosts) in <data-dir>/fixtures/client or /peer, reused on later starts. etcd uses P-521;
petcd uses P-256 because gRPC's BoringSSL clients (grpcio, grpc C++) do not accept P-521
signatures, so they could not reach an etcd auto-TLS member at all."""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
from collections.abc import Sequence
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from petcd.tls.config import TLSError

log = logging.getLogger("petcd.tls")


def self_cert(directory: str, urls: Sequence[str], validity_years: int = 1,
              *, client_auth: bool = False) -> tuple[str, str]:
    """(cert.pem, key.pem) in `directory`, generated unless both exist already."""
    cert_path = os.path.join(directory, "cert.pem")
    key_path = os.path.join(directory, "key.pem")
    if os.path.exists(cert_path) and os.path.exists(key_path):
        return cert_path, key_path
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        _generate(cert_path, key_path, urls, max(1, validity_years), client_auth)
    except OSError as e:
        raise TLSError(f"cannot create self-signed certificate in {directory}: {e}") from e
    log.info("created self-signed certificate %s and key %s", cert_path, key_path)
    return cert_path, key_path


def _generate(cert_path: str, key_path: str, urls: Sequence[str], years: int,
              client_auth: bool) -> None:
    names: list[x509.GeneralName] = []
    for url in urls:
        host = urlsplit(url).hostname or ""
        if not host:
            continue
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "etcd")])
    usages = [ExtendedKeyUsageOID.SERVER_AUTH] + \
        ([ExtendedKeyUsageOID.CLIENT_AUTH] if client_auth else [])
    builder = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=365 * years))
        .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=True,
                                     content_commitment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False,
                                     decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(key, hashes.SHA256())
    # The key first, private from the moment it exists.
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.TraditionalOpenSSL,
                                  serialization.NoEncryption()))
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
