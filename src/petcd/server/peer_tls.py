"""TLS for the peer URLs, from etcd's --peer-* flags: the server side of https listen URLs
(with etcd's post-handshake checks: CRL, allowed CN or hostname) and the client side used
to dial https peer URLs (messages, snapshots, requests)."""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass

from petcd.server.errors import BootstrapError
from petcd.server.options import ServerOptions
from petcd.tls import Gate, TLSError, TLSInfo, client_context, self_cert, server_context


class PeerTLSError(BootstrapError):
    """The --peer-* TLS flags are incomplete or name unreadable files."""


@dataclass(frozen=True, slots=True)
class PeerTLS:
    server: ssl.SSLContext | None = None
    client: ssl.SSLContext | None = None
    gate: Gate | None = None  # checks on inbound peer connections, when any is configured


def peer_info(opts: ServerOptions) -> TLSInfo | None:
    """The peers' TLS settings; None for plaintext peers. --peer-auto-tls makes (once) a
    self-signed certificate when no --peer-cert-file/--peer-key-file is given."""
    cert, key = opts.peer_cert_file, opts.peer_key_file
    self_signed = False
    if not cert and not key and opts.peer_auto_tls:
        try:
            cert, key = self_cert(os.path.join(opts.data_dir, "fixtures", "peer"),
                                  opts.listen_peer_urls, opts.self_signed_cert_validity,
                                  client_auth=True)
        except TLSError as e:
            raise PeerTLSError(f"peer auto TLS: {e}") from e
        self_signed = True
    if not cert and not key:
        if any(u.startswith("https://") for u in opts.listen_peer_urls):
            raise PeerTLSError("https peer URLs need --peer-cert-file and --peer-key-file")
        return None
    if not (cert and key):
        raise PeerTLSError("--peer-cert-file and --peer-key-file go together")
    if opts.peer_cert_allowed_cn and opts.peer_cert_allowed_hostname:
        raise PeerTLSError(
            f"AllowedCN and AllowedHostname are mutually exclusive "
            f"(cn={opts.peer_cert_allowed_cn!r}, hostname={opts.peer_cert_allowed_hostname!r})"
            .replace("'", '"'))
    return TLSInfo(
        cert_file=cert, key_file=key, client_cert_file=opts.peer_client_cert_file,
        client_key_file=opts.peer_client_key_file, trusted_ca_file=opts.peer_trusted_ca_file,
        client_cert_auth=opts.peer_client_cert_auth, crl_file=opts.peer_crl_file,
        allowed_cn=opts.peer_cert_allowed_cn, allowed_hostname=opts.peer_cert_allowed_hostname,
        cipher_suites=opts.cipher_suites, min_version=opts.tls_min_version,
        max_version=opts.tls_max_version, self_signed=self_signed,
        verify_client_san=not opts.peer_skip_client_san_verification)


def peer_contexts(opts: ServerOptions) -> PeerTLS:
    """(server, client, gate); all None when no peer certificate is configured."""
    info = peer_info(opts)
    if info is None:
        return PeerTLS()
    try:
        # As etcd: a peer's certificate is required with --peer-client-cert-auth, and
        # also whenever --peer-trusted-ca-file is given.
        server = server_context(info, alpn=())
        client = client_context(info)
        gate = Gate(info, "peer") if Gate.needed(info) else None
    except TLSError as e:
        raise PeerTLSError(f"peer TLS: {e}") from e
    return PeerTLS(server, client, gate)
