"""Leases on a real petcd member: expiry after keep-alives stop, keep-alive extending a
lease past its TTL, revocation deleting the keys in one revision, leases and keys
surviving restarts (clean and SIGKILL), and many leases kept alive on one stream."""

from __future__ import annotations

import queue
import subprocess
import time
import urllib.request
from collections.abc import Iterator

import grpc
import pytest

from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.testing import ETCDCTL_BIN, Etcdctl, MemberProcess

from .clients import Client, wait_gone


@pytest.fixture
def client(petcd: MemberProcess) -> Iterator[Client]:
    c = Client(petcd)
    yield c
    c.close()


def test_keys_vanish_within_ttl_plus_one_second_after_keepalives_stop(
        petcd: MemberProcess, client: Client) -> None:
    lease_id = client.grant(2).ID
    client.put(b"/expire/a", lease_id)
    client.put(b"/expire/b", lease_id)
    # `etcdctl lease keep-alive` keeps it alive well past its TTL...
    ka = subprocess.Popen([ETCDCTL_BIN, "--endpoints", petcd.endpoint, "lease", "keep-alive",
                           f"{lease_id:x}"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, env={"ETCDCTL_API": "3"})
    try:
        time.sleep(4.5)
        assert client.exists(b"/expire/a") and client.exists(b"/expire/b")
    finally:
        ka.terminate()
        out, _ = ka.communicate(timeout=10)
    last_keepalive = time.monotonic()  # the last one went out before this
    assert f"lease {lease_id:016x} keepalived with TTL(2)" in out
    wait_gone(client, b"/expire/a", 2 + 1 + 0.5)
    assert time.monotonic() - last_keepalive <= 3.0 + 0.5  # TTL + 1 s (+ polling slack)
    assert not client.exists(b"/expire/b")
    assert client.ttl(lease_id).TTL == -1
    assert client.keep_alive(lease_id) == [(lease_id, 0)]


def test_unrenewed_lease_expires_after_its_ttl_not_before(client: Client) -> None:
    before_grant = time.monotonic()
    lease_id = client.grant(3).ID
    client.put(b"/ttl3/a", lease_id)
    rev = client.put(b"/ttl3/b", lease_id)
    wait_gone(client, b"/ttl3/a", 5.0)
    assert time.monotonic() - before_grant >= 3.0
    # The expiry's revocation deleted both keys in one revision (other tests may have
    # written in between: find it).
    def count(r: int) -> int:
        return client.kv.Range(rpc.RangeRequest(key=b"/ttl3/", range_end=b"/ttl30",
                                                revision=r)).count
    r = rev
    while count(r) == 2:
        r += 1
    assert count(r) == 0


def test_keepalive_extends_and_reports_granted_ttl(client: Client) -> None:
    lease_id = client.grant(2).ID
    client.put(b"/extend/k", lease_id)
    for _ in range(6):  # 3 s in all, longer than the TTL
        assert client.keep_alive(lease_id) == [(lease_id, 2)]
        time.sleep(0.5)
    assert client.exists(b"/extend/k")
    resp = client.ttl(lease_id, keys=True)
    assert (resp.grantedTTL, list(resp.keys)) == (2, [b"/extend/k"])
    assert 0 <= resp.TTL <= 2


def test_revoke_deletes_all_keys_in_one_revision(client: Client) -> None:
    lease_id = client.grant(60).ID
    for k in (b"/rv/1", b"/rv/2", b"/rv/3"):
        rev = client.put(k, lease_id)
    resp = client.lease.LeaseRevoke(rpc.LeaseRevokeRequest(ID=lease_id), timeout=10)
    assert resp.header.revision == rev + 1
    assert client.kv.Range(rpc.RangeRequest(key=b"/rv/", range_end=b"/rv0")).count == 0
    with pytest.raises(grpc.RpcError) as e:
        client.lease.LeaseRevoke(rpc.LeaseRevokeRequest(ID=lease_id), timeout=10)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_many_leases_on_one_keepalive_stream(client: Client) -> None:
    ids = [client.grant(30, 0x5000 + i).ID for i in range(50)]
    out = client.keep_alive(*ids, 0x4FFF)
    assert out == [(i, 30) for i in ids] + [(0x4FFF, 0)]
    listed = [le.ID for le in client.lease.LeaseLeases(rpc.LeaseLeasesRequest()).leases]
    assert set(ids) <= set(listed)


def test_keepalive_stream_answers_repeats_and_a_revoked_lease(client: Client) -> None:
    # One stream, the same requests again (the server remembers a stream's IDs): each
    # answer is the lease's state at that moment, a revoked lease included.
    a, b = client.grant(30).ID, client.grant(40).ID
    reqs: queue.Queue[rpc.LeaseKeepAliveRequest | None] = queue.Queue()
    stream = client.lease.LeaseKeepAlive(iter(reqs.get, None), timeout=30)

    def renew(lease_id: int) -> tuple[int, int, int]:
        reqs.put(rpc.LeaseKeepAliveRequest(ID=lease_id))
        r = next(stream)
        return r.ID, r.TTL, r.header.revision

    try:
        rev = client.put(b"/ka/k", a)
        assert [renew(x) for x in (a, b, a, -5, 0, b)] == [
            (a, 30, rev), (b, 40, rev), (a, 30, rev), (-5, 0, rev), (0, 0, rev), (b, 40, rev)]
        client.lease.LeaseRevoke(rpc.LeaseRevokeRequest(ID=a), timeout=10)
        assert [renew(x) for x in (a, b)] == [(a, 0, rev + 1), (b, 40, rev + 1)]
        regranted = client.grant(50, a).ID  # the same ID granted again
        assert regranted == a
        assert renew(a) == (a, 50, rev + 1)
    finally:
        reqs.put(None)
        stream.cancel()


@pytest.mark.parametrize("crash", [False, True], ids=["stop", "kill"])
def test_leases_and_keys_survive_restart(petcd_factory: object, crash: bool) -> None:
    member = petcd_factory()  # type: ignore[operator]
    c = Client(member)
    try:
        long_id = c.grant(60, 0x77).ID
        short_id = c.grant(2, 0x78).ID
        c.put(b"/keep/a", long_id)
        c.put(b"/keep/b", long_id)
        c.put(b"/short/a", short_id)
    finally:
        c.close()
    if crash:
        member.kill()
    else:
        member.stop()
    member.start()
    c = Client(member)
    try:
        resp = c.ttl(long_id, keys=True)
        assert (resp.grantedTTL, sorted(resp.keys)) == (60, [b"/keep/a", b"/keep/b"])
        assert 58 <= resp.TTL <= 61  # renewed on promotion: TTL + election timeout
        # The short lease restarted its countdown (2 s + 1 s election timeout) and expires.
        wait_gone(c, b"/short/a", 3 + 1 + 1)
        assert c.exists(b"/keep/a")
        ctl = Etcdctl(member.endpoint)
        assert ctl.ok("lease", "list") == "found 1 leases\n0000000000000077\n"
        ctl.ok("lease", "revoke", "77")
        assert not c.exists(b"/keep/a") and not c.exists(b"/keep/b")
    finally:
        c.close()


def test_lease_metrics(petcd: MemberProcess, client: Client) -> None:
    def scrape() -> dict[str, float]:
        with urllib.request.urlopen(petcd.http_endpoint + "/metrics", timeout=10) as r:
            text = r.read().decode()
        return {name: float(value) for name, value in
                (line.rsplit(" ", 1) for line in text.splitlines()
                 if line.startswith("etcd_debugging_lease_"))}

    before = scrape()
    lease_id = client.grant(100).ID
    client.keep_alive(lease_id, lease_id)
    client.lease.LeaseRevoke(rpc.LeaseRevokeRequest(ID=lease_id), timeout=10)
    after = scrape()
    for name, delta in (("granted_total", 1), ("renewed_total", 2), ("revoked_total", 1),
                        ('ttl_total_bucket{le="128.0"}', 1), ('ttl_total_bucket{le="64.0"}', 0)):
        name = "etcd_debugging_lease_" + name
        assert after[name] - before[name] == delta, name
