"""TLS for the client URLs, from etcd's flags: the ssl context https and unixs listeners
use (ALPN h2 and http/1.1: gRPC and HTTP share the port) and the post-handshake gate
(CRL, allowed hostname). --auto-tls makes a self-signed certificate when none is given."""

from __future__ import annotations

import logging
import os
import ssl
from dataclasses import dataclass

from petcd.server.options import ServerOptions
from petcd.tls import Gate, TLSError, TLSInfo, client_context, self_cert, server_context

log = logging.getLogger("petcd.tls")

TLS_SCHEMES = ("https", "unixs")
GRPCIO_TLS_REFUSED = (
    "--experimental-grpc-server=grpcio cannot serve https/unixs client URLs (grpcio's TLS "
    "has no CRL, cipher suite or TLS version settings and cannot share the port with "
    "HTTPS); use the default gRPC server (h2)")


@dataclass(frozen=True, slots=True)
class ClientTLS:
    context: ssl.SSLContext
    gate: Gate | None


def _is_tls(url: str) -> bool:
    return url.split("://", 1)[0] in TLS_SCHEMES


def client_info(opts: ServerOptions) -> TLSInfo | None:
    """The client URLs' TLS settings, or None when no client URL is https/unixs."""
    urls = (*opts.listen_client_urls, *opts.listen_client_http_urls)
    cert, key = opts.cert_file, opts.key_file
    self_signed = False
    if opts.auto_tls:
        if cert or key:
            log.warning("ignoring client auto TLS since certs given")
        else:
            cert, key = self_cert(os.path.join(opts.data_dir, "fixtures", "client"),
                                  [u for u in urls if _is_tls(u)],
                                  opts.self_signed_cert_validity)
            self_signed = True
    secure = [u for u in urls if _is_tls(u)]
    for url in (u for u in urls if not _is_tls(u)):
        if cert or key:
            log.warning("scheme is HTTP while key and cert files are present; ignoring key "
                        "and cert files for %s", url)
        if opts.client_cert_auth:
            log.warning("scheme is HTTP while --client-cert-auth is enabled; ignoring client "
                        "cert auth for %s", url)
    if not secure:
        return None
    if not cert and not key:
        raise TLSError(f"TLS key/cert (--cert-file, --key-file) must be provided for client "
                       f"url {secure[0]} with HTTPS scheme")
    return TLSInfo(
        cert_file=cert, key_file=key, client_cert_file=opts.client_cert_file,
        client_key_file=opts.client_key_file, trusted_ca_file=opts.trusted_ca_file,
        client_cert_auth=opts.client_cert_auth, crl_file=opts.client_crl_file,
        allowed_hostname=opts.client_cert_allowed_hostname,
        cipher_suites=opts.cipher_suites, min_version=opts.tls_min_version,
        max_version=opts.tls_max_version, self_signed=self_signed)


def client_tls(opts: ServerOptions) -> ClientTLS | None:
    """The context and gate for TLS client URLs; raises TLSError naming a bad file."""
    info = client_info(opts)
    if info is None:
        return None
    context = server_context(info)
    if info.client_cert_file or info.client_key_file:
        # Presented when this member dials other members' client URLs (member_client);
        # a broken pair fails the start rather than the first forwarded call.
        client_context(info)
    return ClientTLS(context, Gate(info) if Gate.needed(info) else None)
