"""gRPC channels from one member to another member's client URLs (lease keep-alives
forwarded to the leader, corruption checks): plaintext for http/unix URLs, and for
https/unixs the member's own client TLS settings: its certificate as the client
certificate (a --client-cert-auth peer asks for one), the trusted CA to verify with."""

from __future__ import annotations

import logging
import ssl
from urllib.parse import urlsplit

import grpc

from petcd.server.client_tls import TLS_SCHEMES, client_info
from petcd.server.options import ServerOptions
from petcd.tls import TLSError

log = logging.getLogger("petcd.server")


def grpc_target(url: str) -> str:
    u = urlsplit(url)
    if u.scheme in ("unix", "unixs"):
        return f"unix:{u.netloc}{u.path}"
    return u.netloc


def _read(path: str) -> bytes | None:
    if not path:
        return None
    with open(path, "rb") as f:
        return f.read()


class MemberChannels:
    """Makes channels to other members' client URLs with this member's settings."""

    def __init__(self, opts: ServerOptions) -> None:
        self._opts = opts
        self._creds: grpc.ChannelCredentials | None = None
        self._pinned: dict[str, grpc.ChannelCredentials] = {}  # auto-TLS: per URL
        self._self_signed = False

    def _credentials(self) -> grpc.ChannelCredentials:
        if self._creds is None:
            info = client_info(self._opts)
            if info is None:
                raise TLSError("a TLS client URL of another member, but this member has no "
                               "client TLS settings (--cert-file, --key-file)")
            self._self_signed = info.self_signed
            self._creds = grpc.ssl_channel_credentials(
                root_certificates=_read(info.trusted_ca_file)
                or (_read(info.cert_file) if info.self_signed else None),
                private_key=_read(info.client_key_file or info.key_file),
                certificate_chain=_read(info.client_cert_file or info.cert_file))
        return self._creds

    def _pinned_credentials(self, url: str) -> grpc.ChannelCredentials:
        """Auto-TLS: etcd dials members with self-signed certificates without verifying
        them; grpc always verifies, so the certificate the member presents on first
        contact is the one trusted for its URL (a short blocking handshake, once)."""
        creds = self._pinned.get(url)
        if creds is not None:
            return creds
        u = urlsplit(url)
        if u.scheme != "https" or u.hostname is None or u.port is None:
            return self._credentials()
        try:
            pem = ssl.get_server_certificate((u.hostname, u.port), timeout=2)
        except OSError as e:
            log.warning("cannot fetch the auto-TLS certificate of %s: %s", url, e)
            return self._credentials()  # fails verification; asked again next time
        info = client_info(self._opts)
        assert info is not None
        creds = self._pinned[url] = grpc.ssl_channel_credentials(
            root_certificates=pem.encode(), private_key=_read(info.key_file),
            certificate_chain=_read(info.cert_file))
        return creds

    def channel(self, url: str) -> grpc.aio.Channel:
        target = grpc_target(url)
        if urlsplit(url).scheme in TLS_SCHEMES:
            self._credentials()  # settles whether our certificates are self-signed
            if self._self_signed:
                return grpc.aio.secure_channel(target, self._pinned_credentials(url))
            return grpc.aio.secure_channel(target, self._credentials())
        return grpc.aio.insecure_channel(target)
