"""The Election service: errors, campaign order, and observers that see every leader
change and every proclaimed value, in order."""

from __future__ import annotations

import threading
import time

import grpc
import pytest

from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.pb.v3electionpb import v3election_pb2 as epb
from petcd.testing import MemberProcess

from .clients import Client


def _err(fn, *args) -> tuple[grpc.StatusCode, str]:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as e:
        fn(*args)
    return e.value.code(), e.value.details()


def test_errors(member: MemberProcess) -> None:
    c = Client(member.address)
    assert _err(c.election.Leader, epb.LeaderRequest(name=b"nobody")) == (
        grpc.StatusCode.UNKNOWN, "election: no leader")
    lease = c.grant(30)
    won = c.campaign(b"err-el", lease, b"a")
    stale = epb.LeaderKey(name=b"err-el", key=won.leader.key, rev=won.leader.rev + 1,
                          lease=lease)
    assert _err(c.election.Proclaim, epb.ProclaimRequest(leader=stale, value=b"x")) == (
        grpc.StatusCode.UNKNOWN, "election: not leader")
    assert _err(c.election.Proclaim, epb.ProclaimRequest(value=b"x")) == (
        grpc.StatusCode.UNKNOWN, '"leader" field must be provided')
    # a resign with a stale key deletes nothing
    c.election.Resign(epb.ResignRequest(leader=stale), timeout=10)
    assert c.election.Leader(epb.LeaderRequest(name=b"err-el"), timeout=10).kv.value == b"a"
    # campaigning again with the same lease and another value proclaims it
    again = c.campaign(b"err-el", lease, b"b")
    assert (again.leader.key, again.leader.rev) == (won.leader.key, won.leader.rev)
    assert c.election.Leader(epb.LeaderRequest(name=b"err-el"), timeout=10).kv.value == b"b"
    c.election.Resign(epb.ResignRequest(leader=won.leader), timeout=10)
    assert _err(c.election.Leader, epb.LeaderRequest(name=b"err-el"))[1] == \
        "election: no leader"
    c.close()


def test_observers_see_every_change_in_order(member: MemberProcess) -> None:
    watcher = Client(member.address)
    seen: list[list[tuple[bytes, bytes]]] = [[], []]
    streams = [watcher.election.Observe(epb.LeaderRequest(name=b"obs"), timeout=60)
               for _ in seen]

    def observe(i: int) -> None:
        try:
            for resp in streams[i]:
                seen[i].append((resp.kv.key, resp.kv.value))
        except grpc.RpcError:
            pass

    threads = [threading.Thread(target=observe, args=(i,)) for i in range(len(seen))]
    for t in threads:
        t.start()
    candidates = [Client(member.address) for _ in range(3)]
    leases = [c.grant(30) for c in candidates]
    want: list[tuple[bytes, bytes]] = []
    first = candidates[0].campaign(b"obs", leases[0], b"c0")
    want.append((first.leader.key, b"c0"))
    # the other two queue up behind it, in campaign order
    results: dict[int, epb.CampaignResponse] = {}

    def campaign(i: int) -> None:
        results[i] = candidates[i].campaign(b"obs", leases[i], f"c{i}".encode())

    waiting = []
    for i in (1, 2):
        t = threading.Thread(target=campaign, args=(i,))
        t.start()
        waiting.append(t)
        # queued (its key exists) before the next one campaigns
        key = b"obs/" + format(leases[i], "x").encode()
        while not candidates[0].get(key).kvs:
            time.sleep(0.02)
    candidates[0].election.Proclaim(epb.ProclaimRequest(leader=first.leader, value=b"c0+"),
                                    timeout=10)
    want.append((first.leader.key, b"c0+"))
    candidates[0].election.Resign(epb.ResignRequest(leader=first.leader), timeout=10)
    waiting[0].join(30)
    assert 1 in results and 2 not in results
    want.append((results[1].leader.key, b"c1"))
    # (an observer re-reads the leader after a change: one that changes again before
    # that is not seen, by etcd's observers either; so let them catch up first)
    deadline = time.monotonic() + 20
    while any(len(s) < len(want) for s in seen) and time.monotonic() < deadline:
        time.sleep(0.05)
    # the second leader's session ends: the third takes over
    candidates[1].lease.LeaseRevoke(rpc.LeaseRevokeRequest(ID=leases[1]), timeout=10)
    waiting[1].join(30)
    want.append((results[2].leader.key, b"c2"))
    deadline = time.monotonic() + 20
    while any(len(s) < len(want) for s in seen) and time.monotonic() < deadline:
        time.sleep(0.05)
    for s in streams:
        s.cancel()
    for t in threads:
        t.join(10)
    assert seen == [want, want]
    for c in (watcher, *candidates):
        c.close()
