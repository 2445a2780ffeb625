"""Lease checkpoints (--experimental-enable-lease-checkpoint) on an in-process member
with a short checkpoint interval: the leader logs remaining TTLs of long leases, a
renewal clears them, and with -persist they survive a restart."""

from __future__ import annotations

import asyncio
from pathlib import Path

from petcd.lease.apply import LEASE_GRANT
from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.server.node import Node
from petcd.server.options import ServerOptions
from petcd.testing import free_port


def options(data_dir: Path, peer_port: int, client_port: int) -> ServerOptions:
    peer = f"http://127.0.0.1:{peer_port}"
    client = f"http://127.0.0.1:{client_port}"
    return ServerOptions(
        data_dir=str(data_dir), listen_client_urls=(client,), advertise_client_urls=(client,),
        listen_peer_urls=(peer,), initial_advertise_peer_urls=(peer,),
        initial_cluster={"default": (peer,)}, lease_checkpoint=True,
        lease_checkpoint_persist=True, lease_checkpoint_interval=0.3)


async def started(opts: ServerOptions) -> Node:
    node = Node(opts)
    await node.listen_peers()
    node.start()
    assert await node.wait_ready(10)
    for _ in range(200):
        if node.leases.is_leader:
            return node
        await asyncio.sleep(0.05)
    raise AssertionError("no leader")


async def poll(cond: object, timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if cond():  # type: ignore[operator]
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached")


def test_checkpoints_logged_cleared_and_persisted(tmp_path: Path) -> None:
    opts = options(tmp_path / "m", free_port(), free_port())

    async def first_run() -> None:
        node = await started(opts)
        try:
            req = rpc.LeaseGrantRequest(ID=1, TTL=100)
            resp = await node.propose(LEASE_GRANT, req.SerializeToString(), req)
            assert resp.ID == 1
            long_lease = node.lessor.get(1)
            assert long_lease is not None
            await asyncio.sleep(1.2)  # remaining drops below 100: a checkpoint is logged
            await poll(lambda: 0 < long_lease.remaining_ttl < 100)
            assert node.leases.renew_now(1) == 100  # a renewal clears it (through the log)
            await poll(lambda: long_lease.remaining_ttl == 0)
            await asyncio.sleep(1.2)
            await poll(lambda: 0 < long_lease.remaining_ttl < 100)
        finally:
            await node.stop()

    async def second_run() -> float:
        node = await started(opts)
        try:
            lease = node.lessor.get(1)
            assert lease is not None and 0 < lease.remaining_ttl < 100
            # Promotion restarted it from the checkpoint, not from the full TTL.
            return lease.expiry - node.lessor.clock()
        finally:
            await node.stop()

    asyncio.run(first_run())
    remaining = asyncio.run(second_run())
    assert remaining < 100
