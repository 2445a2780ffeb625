"""Certificates for the TLS tests (made per module with petcd.testing_pki, never committed)
and outcome probes shared by the single-member and cluster tests."""

from __future__ import annotations

import contextlib
import json
import ssl
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from petcd.pb.etcdserverpb import rpc_pb2
from petcd.testing import Etcdctl, MemberProcess
from petcd.testing_pki import ClientTLS, Issued, TestCA


@dataclass(frozen=True)
class Pki:
    ca: TestCA
    other_ca: TestCA  # an unrelated CA: its certificates must be refused
    server: Issued  # SAN 127.0.0.1 and localhost
    alice: Issued  # a client certificate without SANs
    host_client: Issued  # a client certificate for client.example
    stranger: Issued  # from other_ca
    revoked: Issued  # listed in crl
    crl: Path

    def client(self, who: Issued | None = None, *, verify: bool = True) -> ClientTLS:
        """Client settings: verify the member with our CA (or not), present `who`'s cert."""
        return ClientTLS(self.ca.cert if verify else None, who.cert if who else None,
                         who.key if who else None)

    def server_args(self, *extra: str) -> list[str]:
        return ["--cert-file", str(self.server.cert), "--key-file", str(self.server.key),
                *extra]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca, other = TestCA(d, "ca"), TestCA(d, "other")
    revoked = ca.issue("mallory", hosts=())
    return Pki(ca, other, ca.issue("server"), ca.issue("alice", hosts=()),
               ca.issue("carol", hosts=("client.example",)), other.issue("bob", hosts=()),
               revoked, ca.write_crl([revoked]))


def grpc_ok(m: MemberProcess, tls: ClientTLS | None, *, secure: bool = True) -> bool:
    """A KV Range through a fresh grpc channel succeeds (False: the call failed UNAVAILABLE,
    i.e. the connection was refused)."""
    target = m.address
    ch = grpc.insecure_channel(target) if tls is None or not secure else \
        grpc.secure_channel(target, tls.grpc_credentials())
    with ch:
        rng = ch.unary_unary("/etcdserverpb.KV/Range",
                             request_serializer=rpc_pb2.RangeRequest.SerializeToString,
                             response_deserializer=rpc_pb2.RangeResponse.FromString)
        try:
            rng(rpc_pb2.RangeRequest(key=b"tls/probe", serializable=True), timeout=10)
        except grpc.RpcError as e:
            assert e.code() in (grpc.StatusCode.UNAVAILABLE,
                                grpc.StatusCode.DEADLINE_EXCEEDED), e
            return False
    return True


def https_get(url: str, tls: ClientTLS | ssl.SSLContext) -> dict[str, str] | None:
    """GET over https; the JSON answer, or None when the connection is refused."""
    ctx = tls if isinstance(tls, ssl.SSLContext) else tls.ssl_context()
    try:
        with urllib.request.urlopen(url, timeout=10, context=ctx) as r:
            doc: dict[str, str] = json.loads(r.read())
            return doc
    except OSError:
        return None


def handshake(port: int, ctx: ssl.SSLContext) -> str | None:
    """The TLS version a handshake with `ctx` reaches, then one HTTP/1.1 request; None if
    the server refuses the handshake or drops the connection."""
    import socket

    ctx.set_alpn_protocols(["http/1.1"])
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 10) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        if s.recv(12).startswith(b"HTTP/1."):
            return s.version()
    return None


def etcdctl_ok(m: MemberProcess, tls: ClientTLS | None,
               *args: str) -> subprocess.CompletedProcess[str]:
    """etcdctl with short timeouts (a refused client fails in seconds)."""
    return Etcdctl(m.endpoint, tls=tls, timeout=30)("--dial-timeout=3s",
                                                    "--command-timeout=5s", *args)


def curl(url: str, tls: ClientTLS, path: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["curl", "-sS", "--max-time", "10", *tls.curl_args(), url + path],
                          capture_output=True, text=True, timeout=30)
