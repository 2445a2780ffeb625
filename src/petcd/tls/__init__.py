"""TLS for client and peer URLs, as etcd configures it: ssl contexts from etcd's flags
(`config`), the self-signed certificates of --auto-tls/--peer-auto-tls (`selfcert`), and
the checks etcd runs after a handshake (CRL, allowed CN/hostname) plus grpc's view of the
client certificate (`gate`). Knows nothing of the rest of petcd: api/ and transport/
both use it."""

from petcd.tls.config import (
    TLSError,
    TLSInfo,
    check_tls_settings,
    client_context,
    server_context,
)
from petcd.tls.gate import Gate, auth_properties
from petcd.tls.selfcert import self_cert

__all__ = ["Gate", "TLSError", "TLSInfo", "auth_properties", "check_tls_settings",
           "client_context", "self_cert", "server_context"]
