"""TLS for the peer URLs, from etcd's --peer-* flags: the server side of https listen URLs
and the client side used to dial https peer URLs (messages, snapshots, requests)."""

from __future__ import annotations

import ssl

from petcd.server.cluster import BootstrapError
from petcd.server.options import ServerOptions


class PeerTLSError(BootstrapError):
    """The --peer-* TLS flags are incomplete or name unreadable files."""


def peer_contexts(opts: ServerOptions) -> tuple[ssl.SSLContext | None, ssl.SSLContext | None]:
    """(server, client) contexts; (None, None) when no peer certificate is configured."""
    cert, key = opts.peer_cert_file, opts.peer_key_file
    if not cert and not key:
        if any(u.startswith("https://") for u in opts.listen_peer_urls):
            raise PeerTLSError("https peer URLs need --peer-cert-file and --peer-key-file")
        return None, None
    if not (cert and key):
        raise PeerTLSError("--peer-cert-file and --peer-key-file go together")
    ca = opts.peer_trusted_ca_file or None
    try:
        server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=ca)
        server.load_cert_chain(cert, key)
        # As etcd: peers' client certificates are checked only with --peer-client-cert-auth.
        server.verify_mode = ssl.CERT_REQUIRED if opts.peer_client_cert_auth else ssl.CERT_NONE
        client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
        client.load_cert_chain(opts.peer_client_cert_file or cert,
                               opts.peer_client_key_file or key)
    except (OSError, ssl.SSLError) as e:
        raise PeerTLSError(f"peer TLS: {e}") from e
    return server, client
