"""A small synchronous gRPC client for the lease tests."""

from __future__ import annotations

import time

import grpc

from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.pb.etcdserverpb import rpc_pb2_grpc as rpc_grpc
from petcd.testing import MemberProcess


class Client:
    def __init__(self, member: MemberProcess) -> None:
        self.channel = grpc.insecure_channel(member.address)
        self.kv = rpc_grpc.KVStub(self.channel)
        self.lease = rpc_grpc.LeaseStub(self.channel)

    def grant(self, ttl: int, lease_id: int = 0) -> rpc.LeaseGrantResponse:
        return self.lease.LeaseGrant(rpc.LeaseGrantRequest(TTL=ttl, ID=lease_id), timeout=10)

    def put(self, key: bytes, lease: int = 0) -> int:
        resp = self.kv.Put(rpc.PutRequest(key=key, value=b"v", lease=lease), timeout=10)
        return resp.header.revision

    def exists(self, key: bytes, *, serializable: bool = False) -> bool:
        req = rpc.RangeRequest(key=key, serializable=serializable)
        return self.kv.Range(req, timeout=10).count == 1

    def ttl(self, lease_id: int, keys: bool = False) -> rpc.LeaseTimeToLiveResponse:
        return self.lease.LeaseTimeToLive(rpc.LeaseTimeToLiveRequest(ID=lease_id, keys=keys),
                                          timeout=10)

    def keep_alive(self, *ids: int) -> list[tuple[int, int]]:
        reqs = iter([rpc.LeaseKeepAliveRequest(ID=i) for i in ids])
        return [(r.ID, r.TTL) for r in self.lease.LeaseKeepAlive(reqs, timeout=10)]

    def close(self) -> None:
        self.channel.close()


def wait_gone(client: Client, key: bytes, limit: float) -> float:
    """Seconds until `key` disappears (fails after `limit`)."""
    start = time.monotonic()
    while client.exists(key):
        assert time.monotonic() - start < limit, f"{key!r} still there after {limit}s"
        time.sleep(0.02)
    return time.monotonic() - start
