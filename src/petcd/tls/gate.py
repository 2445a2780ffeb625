"""What etcd checks once a TLS handshake is done, and what grpc tells handlers about the
client's certificate.

`Gate` wraps a listener's protocol factory: when a connection's handshake completes (the
moment asyncio calls connection_made on a TLS transport) the client certificate is
checked against the CRL and the allowed CN / hostname; a refused connection is aborted
before any protocol sees a byte, an accepted one is handed to the real protocol, and the
gate steps out of the data path. `auth_properties` is grpc's auth context for a TLS
transport (the keys grpc.aio's ServicerContext.auth_context() returns)."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from petcd.tls.config import TLSError, TLSInfo, load_crl

log = logging.getLogger("petcd.tls")

Factory = Callable[[], asyncio.BaseProtocol]


def peer_certificate(transport: asyncio.BaseTransport) -> x509.Certificate | None:
    """The client's certificate, if it sent one (verified when the context requires one)."""
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    return None if der is None else x509.load_der_x509_certificate(der)


def _common_name(cert: x509.Certificate) -> str:
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = attrs[0].value if attrs else ""
    return value.decode() if isinstance(value, bytes) else value


def _san(cert: x509.Certificate) -> x509.SubjectAlternativeName | None:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None


def matches_hostname(cert: x509.Certificate, host: str) -> bool:
    """Go's Certificate.VerifyHostname: an IP must be among the IP SANs, a name among the
    DNS SANs (a leading '*.' label matches one label); the CN is not consulted."""
    san = _san(cert)
    if san is None:
        return False
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        ip = None
    if ip is not None:
        return ip in san.get_values_for_type(x509.IPAddress)
    want = host.rstrip(".").lower()
    for pattern in san.get_values_for_type(x509.DNSName):
        p = pattern.rstrip(".").lower()
        if p == want:
            return True
        if p.startswith("*.") and "." in want and want.split(".", 1)[1] == p[2:]:
            return True
    return False


@dataclass(frozen=True, slots=True)
class _Lookup:
    """The remote address is none of the certificate's IP SANs: it passes if one of the
    certificate's DNS names resolves to it (etcd resolves them too)."""

    host: str
    names: tuple[str, ...]  # DNS SANs (wildcards cannot be resolved: skipped)
    all_names: tuple[str, ...]

    async def refusal(self) -> str | None:
        loop = asyncio.get_running_loop()
        want = ipaddress.ip_address(self.host)
        for name in self.names:
            try:
                infos = await loop.getaddrinfo(name, None, type=socket.SOCK_STREAM)
            except OSError:
                continue
            if any(ipaddress.ip_address(str(i[4][0])) == want for i in infos):
                return None
        quoted = " ".join(f'"{n}"' for n in self.all_names)
        return f'tls: "{self.host}" does not match any of DNSNames [{quoted}]'


def remote_san_refusal(cert: x509.Certificate, host: str) -> str | _Lookup | None:
    """etcd's peer check: a client certificate with SANs must name the address it
    connects from (an IP SAN, or a DNS SAN resolving to it)."""
    san = _san(cert)
    if san is None:
        return None
    ips = san.get_values_for_type(x509.IPAddress)
    dns = san.get_values_for_type(x509.DNSName)
    if ips:
        try:
            if ipaddress.ip_address(host) in ips:
                return None
        except ValueError:
            pass
        if not dns:
            return f"x509: certificate is valid for {', '.join(map(str, ips))}, not {host}"
    if not dns:
        return None
    return _Lookup(host, tuple(n for n in dns if not n.startswith("*")), tuple(dns))


class Gate:
    """etcd's post-handshake checks for one listener (see the module docstring)."""

    def __init__(self, info: TLSInfo, what: str = "client") -> None:
        self._crl_file = info.crl_file
        self._allowed_cn = info.allowed_cn
        self._allowed_hostname = info.allowed_hostname
        self._check_san = info.verify_client_san
        self._what = what
        self._crl_stamp: tuple[int, int] | None = None
        self._revoked: frozenset[int] = frozenset()
        if self._crl_file:
            self._reload_crl()

    @staticmethod
    def needed(info: TLSInfo) -> bool:
        return bool(info.crl_file or info.allowed_cn or info.allowed_hostname
                    or info.verify_client_san)

    def _reload_crl(self) -> None:
        # Re-read only when the file changed: etcd reads it on every connection.
        st = os.stat(self._crl_file)
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self._crl_stamp:
            self._revoked = load_crl(self._crl_file)
            self._crl_stamp = stamp

    def refusal(self, transport: asyncio.BaseTransport) -> str | _Lookup | None:
        """Why this handshaken connection must be closed, None to accept it, or a DNS
        lookup that decides."""
        cert = peer_certificate(transport)
        if cert is None:
            return None  # no certificate asked for or sent: nothing to check (as etcd)
        if self._crl_file:
            try:
                self._reload_crl()
            except (OSError, TLSError) as e:  # an unreadable CRL refuses everyone
                return str(e)
            if cert.serial_number in self._revoked:
                return f"transport: certificate serial {cert.serial_number:x} revoked"
        if self._allowed_cn and _common_name(cert) != self._allowed_cn:
            return f"{self._what} certificate authentication failed (CN {_common_name(cert)!r})"
        if self._allowed_hostname and not matches_hostname(cert, self._allowed_hostname):
            return f"{self._what} certificate authentication failed (hostname)"
        if self._check_san:
            peer = transport.get_extra_info("peername")
            if isinstance(peer, tuple):
                return remote_san_refusal(cert, str(peer[0]))
        return None

    def wrap(self, factory: Factory) -> Factory:
        return lambda: _Gated(self, factory)


class _Gated(asyncio.Protocol):
    """Stands in for the real protocol until the checks pass (then swaps itself out)."""

    __slots__ = ("_factory", "_gate", "_lost", "_task")

    def __init__(self, gate: Gate, factory: Factory) -> None:
        self._gate = gate
        self._factory = factory
        self._lost = False
        self._task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        verdict = self._gate.refusal(transport)
        if isinstance(verdict, _Lookup):
            # Hold the connection's bytes until the names are resolved.
            cast(asyncio.Transport, transport).pause_reading()
            self._task = asyncio.get_running_loop().create_task(
                self._after_lookup(transport, verdict))
            return
        self._decide(transport, verdict)

    async def _after_lookup(self, transport: asyncio.BaseTransport, lookup: _Lookup) -> None:
        reason = await lookup.refusal()
        if self._lost:
            return
        self._decide(transport, reason)
        if reason is None:
            cast(asyncio.Transport, transport).resume_reading()

    def _decide(self, transport: asyncio.BaseTransport, reason: str | None) -> None:
        if reason is not None:
            log.info("rejected connection from %s (%s)",
                     transport.get_extra_info("peername"), reason)
            cast(asyncio.Transport, transport).abort()
            return
        inner = self._factory()
        transport.set_protocol(inner)
        inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        pass  # only reached on a refused connection being torn down

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True


_TLS_BASE = {"transport_security_type": [b"ssl"],
             "security_level": [b"TSI_PRIVACY_AND_INTEGRITY"]}


def auth_properties(transport: asyncio.BaseTransport | None) -> dict[str, list[bytes]]:
    """grpc's auth context for this connection: {} without TLS; with TLS the security
    type, and for a client certificate its CN, subject, SANs and PEM."""
    if transport is None or transport.get_extra_info("ssl_object") is None:
        return {}
    ssl_object: Any = transport.get_extra_info("ssl_object")
    out = {k: list(v) for k, v in _TLS_BASE.items()}
    out["ssl_session_reused"] = [b"true" if ssl_object.session_reused else b"false"]
    out["ssl_tls_version"] = [(ssl_object.version() or "").encode()]
    cert = peer_certificate(transport)
    if cert is None:
        return out
    cn = _common_name(cert)
    if cn:
        out["x509_common_name"] = [cn.encode()]
    out["x509_subject"] = [cert.subject.rfc4514_string().encode()]
    san = _san(cert)
    if san is not None:
        dns = [n.encode() for n in san.get_values_for_type(x509.DNSName)]
        ips = [str(a).encode() for a in san.get_values_for_type(x509.IPAddress)]
        uris = [u.encode() for u in san.get_values_for_type(x509.UniformResourceIdentifier)]
        emails = [e.encode() for e in san.get_values_for_type(x509.RFC822Name)]
        names = dns + uris + emails + ips
        if names:
            out["x509_subject_alternative_name"] = names
        if dns:
            out["peer_dns"] = dns
        if ips:
            out["peer_ip"] = ips
    out["x509_pem_cert"] = [cert.public_bytes(serialization.Encoding.PEM)]
    return out


def peer_identity_key(props: dict[str, list[bytes]]) -> str | None:
    """grpc's choice of identity: the SANs when there are any, else the CN."""
    for key in ("x509_subject_alternative_name", "x509_common_name"):
        if key in props:
            return key
    return None
