"""Trust-on-first-use for `--insecure-skip-tls-verify`: gRPC Python cannot turn
certificate verification off, so the server's own certificates are fetched over a TLS
handshake that verifies nothing, then pinned as the only roots of the real channel, with
the name checked overridden by one the certificate holds. The channel is still
encrypted and still checks that the server holds the key of what was fetched; what is
skipped is exactly what the flag skips: whether anyone trusted vouches for it."""

from __future__ import annotations

import socket
import ssl

from cryptography import x509
from cryptography.x509.oid import NameOID


def _split(target: str) -> tuple[str, int]:
    host, _, port = target.rpartition(":")
    return host.strip("[]"), int(port)


def _der(cert: object) -> bytes:
    import _ssl

    out = cert.public_bytes(_ssl.ENCODING_DER)  # type: ignore[attr-defined]
    assert isinstance(out, bytes)
    return out


def fetch_chain(target: str, *, timeout: float, cert_chain: str | None = None,
                key: str | None = None) -> list[bytes]:
    """The PEM certificates `target` ("host:port") presents, leaf first, unverified.
    cert_chain/key: a client certificate, for servers that demand one to finish the
    handshake."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    if cert_chain:
        ctx.load_cert_chain(cert_chain, key or None)
    host, port = _split(target)
    with socket.create_connection((host, port), timeout=timeout) as raw, \
            ctx.wrap_socket(raw, server_hostname=host) as tls:
        # (public from Python 3.13; the same method underneath on 3.11 and 3.12)
        chain_of = getattr(tls, "get_unverified_chain", None) or \
            getattr(tls._sslobj, "get_unverified_chain", None)  # type: ignore[attr-defined]
        if chain_of is not None:
            chain = chain_of() or []
            pems = [ssl.DER_cert_to_PEM_cert(_der(c)).encode() for c in chain]
            if pems:
                return pems
        der = tls.getpeercert(binary_form=True)
    if not der:
        raise ssl.SSLError(f"{target} presented no certificate")
    return [ssl.DER_cert_to_PEM_cert(der).encode()]


def name_in(pem: bytes) -> str:
    """A name the certificate is valid for: its first DNS SAN, else IP SAN, else CN."""
    cert = x509.load_pem_x509_certificate(pem)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = san.get_values_for_type(x509.DNSName)
        if dns:
            return str(dns[0]).replace("*.", "wildcard.", 1)
        ips = san.get_values_for_type(x509.IPAddress)
        if ips:
            return str(ips[0])
    except x509.ExtensionNotFound:
        pass
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if cns:
        return str(cns[0].value)
    raise ValueError("the server's certificate names no host")


def pin(targets: list[str], *, timeout: float, cert_chain: str | None = None,
        key: str | None = None) -> tuple[bytes, str]:
    """(PEM roots for grpc.ssl_channel_credentials, the name to give
    grpc.ssl_target_name_override): every endpoint's certificates, and a name from the
    first endpoint's leaf."""
    roots: list[bytes] = []
    name = ""
    for t in targets:
        chain = fetch_chain(t, timeout=timeout, cert_chain=cert_chain, key=key)
        if not name:
            name = name_in(chain[0])
        roots += [p for p in chain if p not in roots]
    return b"".join(roots), name
