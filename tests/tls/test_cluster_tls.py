"""Three members with TLS on both sides, petcd and etcd 3.4 with the same flags: peers
authenticate each other (CA, client certificates, allowed CN, CRL) and clients must
present a certificate; and a petcd cluster on auto-TLS certificates alone."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from petcd.testing import Etcdctl, EtcdProcess, MemberProcess, PetcdCluster, have_etcd
from petcd.testing_pki import ClientTLS

from .conftest import Pki, grpc_ok

FAST = ["--heartbeat-interval", "50", "--election-timeout", "500"]


KINDS = ["petcd", pytest.param("etcd", marks=pytest.mark.skipif(
    not have_etcd(), reason="etcd/etcdctl 3.4 not installed"))]


@pytest.fixture
def started(request: pytest.FixtureRequest) -> Iterator[list[MemberProcess]]:
    """Single processes a test started (etcd members): killed at teardown."""
    made: list[MemberProcess] = []
    failed_before = request.session.testsfailed
    yield made
    if request.session.testsfailed > failed_before:
        for m in made:
            print(f"===== {m.name} =====\n{m.log_tail()}")
    for m in made:
        m.kill()


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


def _etcd_cluster(base: Path, args: list[str], tls: ClientTLS) -> list[MemberProcess]:
    members: list[MemberProcess] = [
        EtcdProcess(base / f"m{i}", name=f"m{i}", args=[*args, "--initial-cluster-token", "t"],
                    peer_scheme="https", client_tls=tls) for i in range(3)]
    initial = ",".join(f"{m.name}={m.peer_url}" for m in members)
    for m in members:
        m.initial_cluster = initial
        m.start(wait=False)
    for m in members:
        m.wait_ready(60)
    return members


@pytest.mark.parametrize("kind", KINDS)
def test_cluster_with_peer_and_client_tls(kind: str, pki: Pki, tmp_path: Path,
                                          clusters: list[PetcdCluster],
                                          started: list[MemberProcess]) -> None:
    peer = pki.ca.issue("petcd peer", hosts=("127.0.0.1",))
    alice = pki.client(pki.alice)
    args = [*FAST, "--peer-cert-file", str(peer.cert), "--peer-key-file", str(peer.key),
            "--peer-trusted-ca-file", str(pki.ca.cert), "--peer-client-cert-auth",
            "--peer-cert-allowed-cn", "petcd peer", "--peer-crl-file", str(pki.crl),
            *pki.server_args("--trusted-ca-file", str(pki.ca.cert), "--client-cert-auth")]
    members: list[MemberProcess]
    if kind == "petcd":
        c = PetcdCluster(tmp_path / "c", 3, peer_scheme="https", client_tls=alice, args=args)
        clusters.append(c)
        c.start()
        members = list(c.members)
    else:
        members = _etcd_cluster(tmp_path, args, alice)
        started.extend(members)
    endpoints = [m.endpoint for m in members]
    Etcdctl(endpoints[0], tls=alice).ok("put", "tls/cluster", "v")
    for m in members[1:]:
        assert Etcdctl(m.endpoint, tls=alice).ok(
            "get", "tls/cluster", "--print-value-only") == "v\n"
        assert not grpc_ok(m, pki.client())  # no client certificate: refused
    listed = json.loads(Etcdctl(endpoints, tls=alice).ok("member", "list", "-w", "json"))
    urls = [u for m in listed["members"] for u in m["peerURLs"] + m["clientURLs"]]
    assert len(urls) == 6 and all(u.startswith("https://") for u in urls)
    health = Etcdctl(endpoints, tls=alice)("endpoint", "health")
    assert health.returncode == 0 and health.stderr.count("is healthy") == 3, health
    # Keep-alives and TimeToLive through every member: two of them are followers, which
    # forward to the leader with their own certificate (the leader asks for one).
    lease = Etcdctl(endpoints[0], tls=alice).ok("lease", "grant", "60").split()[1]
    for m in members:
        ctl = Etcdctl(m.endpoint, tls=alice)
        kept = ctl.ok("lease", "keep-alive", "--once", lease)
        assert f"lease {lease} keepalived with TTL(60)" in kept, kept
        assert "remaining" in ctl.ok("lease", "timetolive", lease)


@pytest.mark.parametrize("kind", KINDS)
def test_cluster_on_auto_tls(kind: str, tmp_path: Path, clusters: list[PetcdCluster],
                             started: list[MemberProcess]) -> None:
    args = [*FAST, "--auto-tls", "--peer-auto-tls"]
    members: list[MemberProcess]
    if kind == "petcd":
        c = PetcdCluster(tmp_path / "c", 3, peer_scheme="https", client_tls=ClientTLS(),
                         args=args)
        clusters.append(c)
        c.start()
        members = list(c.members)
    else:
        members = _etcd_cluster(tmp_path, args, ClientTLS())
        started.extend(members)
    for m in members:
        assert (m.data_dir / "fixtures" / "peer" / "cert.pem").exists()
        assert (m.data_dir / "fixtures" / "client" / "cert.pem").exists()
    Etcdctl(members[0].endpoint, tls=ClientTLS()).ok("put", "tls/auto", "v")
    for m in members[1:]:
        assert Etcdctl(m.endpoint, tls=ClientTLS()).ok(
            "get", "tls/auto", "--print-value-only") == "v\n"
    # Followers forward keep-alives to the leader, whose certificate is self-signed.
    lease = Etcdctl(members[0].endpoint, tls=ClientTLS()).ok(
        "lease", "grant", "60").split()[1]
    for m in members:
        kept = Etcdctl(m.endpoint, tls=ClientTLS(), timeout=20)(
            "--command-timeout=8s", "lease", "keep-alive", "--once", lease)
        assert f"lease {lease} keepalived with TTL(60)" in kept.stdout, kept
