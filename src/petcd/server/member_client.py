"""gRPC channels from one member to another member's client URLs (lease keep-alives
forwarded to the leader, corruption checks): plaintext for http/unix URLs, and for
https/unixs the member's own client TLS settings: its certificate as the client
certificate (a --client-cert-auth peer asks for one), the trusted CA to verify with."""

from __future__ import annotations

import logging
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

    def _credentials(self) -> grpc.ChannelCredentials:
        if self._creds is None:
            info = client_info(self._opts)
            if info is None:
                raise TLSError("a TLS client URL of another member, but this member has no "
                               "client TLS settings (--cert-file, --key-file)")
            if info.self_signed:
                # grpc cannot skip verification; a peer's self-signed certificate can
                # only be trusted if it is the very one we made (one-host clusters).
                log.warning("dialling a member's https client URL with auto-TLS: its "
                            "certificate cannot be verified unless it is ours")
            self._creds = grpc.ssl_channel_credentials(
                root_certificates=_read(info.trusted_ca_file)
                or (_read(info.cert_file) if info.self_signed else None),
                private_key=_read(info.client_key_file or info.key_file),
                certificate_chain=_read(info.client_cert_file or info.cert_file))
        return self._creds

    def channel(self, url: str) -> grpc.aio.Channel:
        target = grpc_target(url)
        if urlsplit(url).scheme in TLS_SCHEMES:
            return grpc.aio.secure_channel(target, self._credentials())
        return grpc.aio.insecure_channel(target)
