"""Trust-on-first-use for `--insecure-skip-tls-verify`: gRPC Python cannot turn
certificate verification off, so the server's own certificates are fetched over a TLS
handshake that verifies nothing, then pinned as the only roots of the real channel, with
the name checked overridden by one the certificate holds. Every endpoint's certificates
are fetched (a channel checks one name: one they all hold). The channel is still
encrypted and still checks that the server holds the key of what was fetched; what is
skipped is exactly what the flag skips: whether anyone trusted vouches for it."""

from __future__ import annotations

import os
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


def fetch_chain(target: str, *, timeout: float, cert_chain: str | bytes | None = None,
                key: str | bytes | None = None) -> list[bytes]:
    """The PEM certificates `target` ("host:port") presents, leaf first, unverified.
    cert_chain/key (paths or PEM): a client certificate, for servers that demand one to
    finish the handshake."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    if cert_chain:
        _load_cert_chain(ctx, cert_chain, key)
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


def _load_cert_chain(ctx: ssl.SSLContext, chain: str | bytes, key: str | bytes | None) -> None:
    """ssl loads client certificates only from files: PEM given as bytes goes through
    private temporary files, removed at once."""
    if isinstance(chain, str) and not isinstance(key, bytes):
        ctx.load_cert_chain(chain, key or None)
        return
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        paths = []
        for name, v in (("cert.pem", chain), ("key.pem", key)):
            if isinstance(v, bytes):
                path = f"{d}/{name}"
                with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as f:
                    f.write(v)
                v = path
            paths.append(v)
        ctx.load_cert_chain(paths[0] or "", paths[1] or None)


def names_in(pem: bytes) -> list[str]:
    """The names the certificate is valid for: its DNS SANs, IP SANs, else its CN."""
    cert = x509.load_pem_x509_certificate(pem)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [str(n).replace("*.", "wildcard.", 1)
                 for n in san.get_values_for_type(x509.DNSName)]
        names += [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
        if names:
            return names
    except x509.ExtensionNotFound:
        pass
    return [str(cn.value) for cn in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]


def pin(targets: list[str], *, timeout: float, cert_chain: str | bytes | None = None,
        key: str | bytes | None = None) -> tuple[bytes, str, list[str]]:
    """(PEM roots for grpc.ssl_channel_credentials, the name to give
    grpc.ssl_target_name_override, the targets a channel with that name can reach).
    One channel checks one name: the name is one every reachable endpoint's certificate
    holds if there is one, else the first reachable endpoint's, and the targets are
    those whose certificates hold it. Raises OSError if no endpoint can be reached."""
    leaves: dict[str, list[str]] = {}
    roots: list[bytes] = []
    failure: Exception | None = None
    for t in targets:
        try:
            chain = fetch_chain(t, timeout=timeout, cert_chain=cert_chain, key=key)
        except OSError as e:
            failure = e
            continue
        leaves[t] = names_in(chain[0])
        roots += [p for p in chain if p not in roots]
    if not leaves:
        raise failure or OSError("no endpoints")
    first = next(iter(leaves.values()))
    if not first:
        raise ValueError("the server's certificate names no host")
    name = next((n for n in first if all(n in ns for ns in leaves.values())), first[0])
    return b"".join(roots), name, [t for t, ns in leaves.items() if name in ns]
