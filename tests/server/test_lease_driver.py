"""LeaseDriver on real members in one process (tests/server/inproc.py), no sockets:
renewals and TimeToLive on the leader, the follower's path through the member's
call_leader helper, refusals of forwarded requests, expiry and revocation."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from petcd import errors
from petcd.errors import EtcdError, LeaderUnreachable
from petcd.lease.apply import LEASE_GRANT
from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.server.node import Node

from .inproc import Cluster, run


async def grant(node: Node, lease_id: int, ttl: int) -> None:
    req = rpc.LeaseGrantRequest(ID=lease_id, TTL=ttl)
    assert isinstance(await node.propose(LEASE_GRANT, req.SerializeToString(), req),
                      rpc.LeaseGrantResponse)


def link_in_process(c: Cluster, node: Node) -> list[int]:
    """Route `node`'s forwarded keep-alives to the leader's LeaseDriver directly (in
    place of the gRPC stream), as the leader's API would answer them."""
    asked: list[int] = []

    async def renew_at(leader: int, lease_id: int, deadline: float) -> int:
        asked.append(leader)
        target = next(n for n in c.nodes if n.member_id == leader)
        try:
            return await target.leases.renew(lease_id, forwarded=True)
        except EtcdError as e:
            if e.kind is errors.NOT_LEADER:
                raise LeaderUnreachable("not leader") from e
            raise

    node.leases._renew_at = renew_at  # type: ignore[method-assign]
    return asked


def test_renew_and_time_to_live_on_the_leader(tmp_path: Path) -> None:
    async def body(c: Cluster) -> None:
        leader = await c.leader()
        await grant(leader, 5, 30)
        assert leader.leases.renew_now(5) == 30
        assert await leader.leases.renew(5) == 30
        assert await leader.leases.renew(999) == 0  # unknown (after a read barrier)
        ttl = await leader.leases.time_to_live(5, True)
        assert ttl.ID == 5 and ttl.grantedTTL == 30 and 0 < ttl.TTL <= 30
        assert (await leader.leases.time_to_live(999, False)).TTL == -1
        # A follower never renews locally, and refuses what was forwarded to it.
        f = c.followers(leader)[0]
        assert f.leases.renew_now(5) is None
        with pytest.raises(EtcdError) as e:
            await f.leases.renew(5, forwarded=True)
        assert e.value.kind is errors.NOT_LEADER
        with pytest.raises(EtcdError) as e:
            await f.leases.time_to_live(5, False, forwarded=True)
        assert e.value.kind is errors.NOT_LEADER
    run(body, tmp_path)


def test_follower_renews_through_whoever_leads(tmp_path: Path) -> None:
    async def body(c: Cluster) -> None:
        leader = await c.leader()
        await grant(leader, 5, 30)
        f, other = c.followers(leader)
        asked = link_in_process(c, f)
        assert await f.leases.renew(5) == 30
        assert asked == [leader.member_id]
        # Leadership moves to the other follower: the next renewal follows it.
        await leader.move_leader(other.member_id)
        await c.leader()
        assert await f.leases.renew(5) == 30
        assert asked[-1] == other.member_id
        # And to this member itself: renewed here, once its lessor is promoted.
        await other.move_leader(f.member_id)
        await c.leader()
        n = len(asked)
        assert await f.leases.renew(5) == 30
        assert len(asked) == n and f.lessor.primary
    run(body, tmp_path)


def test_expired_lease_is_revoked_then_renewal_answers_zero(tmp_path: Path) -> None:
    async def body(c: Cluster) -> None:
        node = c.nodes[0]
        await grant(node, 9, 1)  # (the minimum TTL with these timings)
        req = rpc.PutRequest(key=b"leased", value=b"v", lease=9)
        assert isinstance(await node.propose("put", req.SerializeToString(), req),
                          rpc.PutResponse)
        await asyncio.sleep(1.2)
        assert await node.leases.renew(9) == 0
        assert node.lessor.get(9) is None
        assert node.range(rpc.RangeRequest(key=b"leased")).count == 0
    run(body, tmp_path, size=1)
