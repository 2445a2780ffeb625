"""TLS on the peer port: messages and a snapshot over mutually authenticated TLS with a CA made
up in the test; a dialler without a client certificate is turned away."""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from transport_helpers import CLUSTER, FAST, Inbox, eventually, payload, run, seq_of

from petcd.testing import make_pki
from petcd.testing_pki import Issued, TestCA
from petcd.tls import Gate, TLSInfo, client_context, server_context
from petcd.transport import PeerTransport

TLS_LOCAL = "https://127.0.0.1:0"


def contexts(
    ca: Path, cert: Path | None, key: Path | None
) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """Server and client contexts the way --peer-client-cert-auth would configure them."""
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(ca))
    server.verify_mode = ssl.CERT_REQUIRED
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca))
    if cert is not None and key is not None:
        server.load_cert_chain(cert, key)
        client.load_cert_chain(cert, key)
    return server, client


def test_tls_round_trip(tmp_path: Path) -> None:
    ca, cert, key = make_pki(tmp_path)
    server_ctx, client_ctx = contexts(ca, cert, key)
    snapshot = b"".join(hashlib.sha256(b"%d" % i).digest() for i in range(100_000))  # 3.2 MB

    async def main() -> None:
        inbox_a, inbox_b = Inbox(), Inbox()
        got: list[bytes] = []

        async def keep(from_id: int, metadata: bytes, chunks: AsyncIterator[bytes]) -> None:
            got.append(b"".join([c async for c in chunks]))

        async def source() -> AsyncIterator[bytes]:
            for i in range(0, len(snapshot), 100_000):
                yield snapshot[i : i + 100_000]

        a = PeerTransport(
            1,
            CLUSTER,
            [TLS_LOCAL],
            inbox_a,
            server_ssl=server_ctx,
            client_ssl=client_ctx,
            config=FAST,
        )
        b = PeerTransport(
            2,
            CLUSTER,
            [TLS_LOCAL],
            inbox_b,
            keep,
            server_ssl=server_ctx,
            client_ssl=client_ctx,
            config=FAST,
        )
        await a.start()
        await b.start()
        try:
            assert a.bound_urls()[0].startswith("https://127.0.0.1:")
            a.add_peer(2, b.bound_urls())
            b.add_peer(1, a.bound_urls())
            a.send(2, [payload(1, i) for i in range(1000)])
            b.send(1, [payload(2, i, 70_000) for i in range(20)])
            await inbox_b.wait_count(1000)
            await inbox_a.wait_count(20)
            assert [seq_of(p) for p in inbox_b.payloads] == list(range(1000))
            assert [seq_of(p) for p in inbox_a.payloads] == list(range(20))
            assert all(len(p) == 70_000 for p in inbox_a.payloads)
            assert await a.send_snapshot(2, b"meta", source())
            assert got == [snapshot]
        finally:
            await a.stop()
            await b.stop()

    run(main())


def test_tls_peer_without_client_certificate_is_refused(tmp_path: Path) -> None:
    ca, cert, key = make_pki(tmp_path)
    server_ctx, _ = contexts(ca, cert, key)
    _, anonymous_client = contexts(ca, None, None)

    async def main() -> None:
        inbox = Inbox()
        a = PeerTransport(1, CLUSTER, [TLS_LOCAL], inbox, server_ssl=server_ctx, config=FAST)
        c = PeerTransport(
            3, CLUSTER, ["http://127.0.0.1:0"], Inbox(), client_ssl=anonymous_client, config=FAST
        )
        await a.start()
        await c.start()
        try:
            a.add_peer(3, c.bound_urls())
            c.add_peer(1, a.bound_urls())
            c.send(1, [b"let me in"])
            assert await c.send_snapshot(1, b"m", str(ca)) is False

            def dial_failed() -> bool:
                status = c.status(1)
                return status is not None and status.last_error is not None

            await eventually(dial_failed)  # the transport reports dial failures by status only
            assert c.active_since(1) is None and not inbox.payloads
        finally:
            await a.stop()
            await c.stop()

    run(main())


def test_peer_gate_checks_the_allowed_cn_and_the_crl(tmp_path: Path) -> None:
    """etcd's --peer-cert-allowed-cn and --peer-crl-file: after the handshake, a peer whose
    certificate has another CN, or a revoked serial, is cut before it sends a byte."""
    ca = TestCA(tmp_path, "ca")
    server, good, stranger, revoked = (ca.issue(cn) for cn in ("m1", "m2", "intruder", "m2"))
    info = TLSInfo(cert_file=str(server.cert), key_file=str(server.key),
                   trusted_ca_file=str(ca.cert), client_cert_auth=True,
                   crl_file=str(ca.write_crl([revoked])), allowed_cn="m2")

    def dialler(peer_id: int, who: Issued) -> PeerTransport:
        ctx = client_context(TLSInfo(cert_file=str(who.cert), key_file=str(who.key),
                                     trusted_ca_file=str(ca.cert)))
        return PeerTransport(peer_id, CLUSTER, ["http://127.0.0.1:0"], Inbox(),
                             client_ssl=ctx, config=FAST)

    async def main() -> None:
        inbox = Inbox()
        a = PeerTransport(1, CLUSTER, [TLS_LOCAL], inbox, config=FAST,
                          server_ssl=server_context(info, alpn=()),
                          server_gate=Gate(info, "peer"))
        others = {2: dialler(2, good), 3: dialler(3, stranger), 4: dialler(4, revoked)}
        await a.start()
        for c in others.values():
            await c.start()
        try:
            for peer_id, c in others.items():
                a.add_peer(peer_id, c.bound_urls())
                c.add_peer(1, a.bound_urls())
                c.send(1, [payload(peer_id, 0)])
            await inbox.wait_count(1)
            for peer_id in (3, 4):
                def dial_failed(c: PeerTransport = others[peer_id]) -> bool:
                    status = c.status(1)
                    return status is not None and status.last_error is not None
                await eventually(dial_failed)
                assert others[peer_id].active_since(1) is None
            assert inbox.payloads == [payload(2, 0)]
        finally:
            await a.stop()
            for c in others.values():
                await c.stop()

    run(main())


@pytest.mark.parametrize(("hosts", "verify", "accepted"), [
    (("127.0.0.2",), True, False),  # another address: refused
    (("127.0.0.2",), False, True),  # --experimental-peer-skip-client-san-verification
    (("127.0.0.2", "localhost"), True, True),  # a DNS SAN resolving to the dialler
    ((), True, True),  # no SANs: nothing to compare (as etcd)
])
def test_peer_client_certificate_must_name_its_address(
        tmp_path: Path, hosts: tuple[str, ...], verify: bool, accepted: bool) -> None:
    ca = TestCA(tmp_path, "ca")
    server, dialler = ca.issue("m1"), ca.issue("m2", hosts=hosts)
    info = TLSInfo(cert_file=str(server.cert), key_file=str(server.key),
                   trusted_ca_file=str(ca.cert), verify_client_san=verify)

    async def main() -> None:
        inbox = Inbox()
        a = PeerTransport(1, CLUSTER, [TLS_LOCAL], inbox, config=FAST,
                          server_ssl=server_context(info, alpn=()),
                          server_gate=Gate(info, "peer") if Gate.needed(info) else None)
        ctx = client_context(TLSInfo(cert_file=str(dialler.cert), key_file=str(dialler.key),
                                     trusted_ca_file=str(ca.cert)))
        c = PeerTransport(2, CLUSTER, ["http://127.0.0.1:0"], Inbox(), client_ssl=ctx,
                          config=FAST)
        await a.start()
        await c.start()
        try:
            a.add_peer(2, c.bound_urls())
            c.add_peer(1, a.bound_urls())
            c.send(1, [payload(2, 0)])
            if accepted:
                await inbox.wait_count(1)
            else:
                def dial_failed() -> bool:
                    status = c.status(1)
                    return status is not None and status.last_error is not None
                await eventually(dial_failed)
                assert not inbox.payloads
        finally:
            await a.stop()
            await c.stop()

    run(main())
