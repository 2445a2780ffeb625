"""Three petcd members with TLS on both sides: peers authenticate each other (CA, client
certificates, allowed CN, CRL) and clients must present a certificate; and a cluster that
runs on auto-TLS certificates alone."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from petcd.testing import Etcdctl, PetcdCluster
from petcd.testing_pki import ClientTLS

from .conftest import Pki, grpc_ok

FAST = ["--heartbeat-interval", "50", "--election-timeout", "500"]


@pytest.fixture
def clusters(request: pytest.FixtureRequest) -> Iterator[list[PetcdCluster]]:
    made: list[PetcdCluster] = []
    failed_before = request.session.testsfailed
    yield made
    if request.session.testsfailed > failed_before:
        for c in made:
            print(c.dump_logs())
    for c in made:
        c.kill_all()


def test_cluster_with_peer_and_client_tls(pki: Pki, tmp_path: Path,
                                          clusters: list[PetcdCluster]) -> None:
    peer = pki.ca.issue("petcd peer", hosts=("127.0.0.1",))
    alice = pki.client(pki.alice)
    c = PetcdCluster(tmp_path / "c", 3, peer_scheme="https", client_tls=alice, args=[
        *FAST, "--peer-cert-file", str(peer.cert), "--peer-key-file", str(peer.key),
        "--peer-trusted-ca-file", str(pki.ca.cert), "--peer-client-cert-auth",
        "--peer-cert-allowed-cn", "petcd peer", "--peer-crl-file", str(pki.crl),
        *pki.server_args("--trusted-ca-file", str(pki.ca.cert), "--client-cert-auth")])
    clusters.append(c)
    c.start()
    leader = c.wait_leader()
    Etcdctl(leader.endpoint, tls=alice).ok("put", "tls/cluster", "v")
    for m in c.followers(leader):
        assert Etcdctl(m.endpoint, tls=alice).ok(
            "get", "tls/cluster", "--print-value-only") == "v\n"
        assert not grpc_ok(m, pki.client())  # no client certificate: refused
    members = json.loads(Etcdctl(c.endpoints, tls=alice).ok("member", "list", "-w", "json"))
    urls = [u for m in members["members"] for u in m["peerURLs"] + m["clientURLs"]]
    assert len(urls) == 6 and all(u.startswith("https://") for u in urls)
    health = Etcdctl(c.endpoints, tls=alice)("endpoint", "health")
    assert health.returncode == 0 and health.stderr.count("is healthy") == 3, health
    # A follower forwards keep-alives and TimeToLive to the leader's https client URL
    # with its own certificate (the leader asks for one).
    lease = Etcdctl(leader.endpoint, tls=alice).ok("lease", "grant", "60").split()[1]
    follower = Etcdctl(c.followers(leader)[0].endpoint, tls=alice)
    kept = follower.ok("lease", "keep-alive", "--once", lease)
    assert f"lease {lease} keepalived with TTL(60)" in kept, kept
    assert "remaining" in follower.ok("lease", "timetolive", lease)


def test_cluster_on_auto_tls(tmp_path: Path, clusters: list[PetcdCluster]) -> None:
    c = PetcdCluster(tmp_path / "c", 3, peer_scheme="https", client_tls=ClientTLS(),
                     args=[*FAST, "--auto-tls", "--peer-auto-tls"])
    clusters.append(c)
    c.start()
    leader = c.wait_leader()
    for m in c.members:
        assert (m.data_dir / "fixtures" / "peer" / "cert.pem").exists()
        assert (m.data_dir / "fixtures" / "client" / "cert.pem").exists()
    Etcdctl(leader.endpoint, tls=ClientTLS()).ok("put", "tls/auto", "v")
    follower = c.followers(leader)[0]
    assert Etcdctl(follower.endpoint, tls=ClientTLS()).ok(
        "get", "tls/auto", "--print-value-only") == "v\n"
