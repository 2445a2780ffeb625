"""Synchronous gRPC clients of the Lock and Election services for the tests, and a
lease kept alive by a thread (what a lock holder's session does)."""

from __future__ import annotations

import sys
import threading
import time

import grpc

from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.pb.etcdserverpb import rpc_pb2_grpc as rpc_grpc
from petcd.pb.v3electionpb import v3election_pb2 as epb
from petcd.pb.v3electionpb import v3election_pb2_grpc as epb_grpc
from petcd.pb.v3lockpb import v3lock_pb2 as lpb
from petcd.pb.v3lockpb import v3lock_pb2_grpc as lpb_grpc


def target(addresses: list[str]) -> str:
    """One channel over several members: pick_first, re-picked when one dies."""
    return addresses[0] if len(addresses) == 1 else "ipv4:" + ",".join(addresses)


class Client:
    def __init__(self, *addresses: str) -> None:
        self.channel = grpc.insecure_channel(target(list(addresses)))
        self.kv = rpc_grpc.KVStub(self.channel)
        self.lease = rpc_grpc.LeaseStub(self.channel)
        self.locks = lpb_grpc.LockStub(self.channel)
        self.election = epb_grpc.ElectionStub(self.channel)
        self._stop = threading.Event()
        self._keeper: threading.Thread | None = None

    def grant(self, ttl: int) -> int:
        return self.lease.LeaseGrant(rpc.LeaseGrantRequest(TTL=ttl), timeout=10).ID

    def keep_alive(self, lease: int, every: float = 0.5) -> None:
        """Renew `lease` from a thread until close() (errors retried: failover)."""
        def run() -> None:
            while not self._stop.wait(every):
                try:
                    for _ in self.lease.LeaseKeepAlive(
                            iter([rpc.LeaseKeepAliveRequest(ID=lease)]), timeout=2):
                        pass
                except grpc.RpcError:
                    pass
        self._keeper = threading.Thread(target=run, daemon=True)
        self._keeper.start()

    def lock(self, name: bytes, lease: int, timeout: float = 30) -> lpb.LockResponse:
        return self.locks.Lock(lpb.LockRequest(name=name, lease=lease), timeout=timeout)

    def unlock(self, key: bytes) -> None:
        self.locks.Unlock(lpb.UnlockRequest(key=key), timeout=10)

    def get(self, key: bytes) -> rpc.RangeResponse:
        return self.kv.Range(rpc.RangeRequest(key=key), timeout=10)

    def put(self, key: bytes, value: bytes) -> int:
        return self.kv.Put(rpc.PutRequest(key=key, value=value), timeout=10).header.revision

    def campaign(self, name: bytes, lease: int, value: bytes,
                 timeout: float = 30) -> epb.CampaignResponse:
        return self.election.Campaign(epb.CampaignRequest(name=name, lease=lease,
                                                          value=value), timeout=timeout)

    def close(self) -> None:
        self._stop.set()
        if self._keeper is not None:
            self._keeper.join()
        self.channel.close()


def retry(fn, *args, limit: float = 30.0):  # type: ignore[no-untyped-def]
    """fn(*args) until it does not fail with UNAVAILABLE/DEADLINE (failover)."""
    deadline = time.monotonic() + limit
    while True:
        try:
            return fn(*args)
        except grpc.RpcError as e:
            if e.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                                grpc.StatusCode.UNKNOWN) or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def main() -> None:
    """`python -m tests.concurrency.clients ADDRESS NAME TTL`: grant a lease, keep it
    alive, take the lock, print its key, then hold it until killed."""
    address, name, ttl = sys.argv[1], sys.argv[2].encode(), int(sys.argv[3])
    c = Client(address)
    lease = c.grant(ttl)
    c.keep_alive(lease)
    resp = c.lock(name, lease)
    print(resp.key.decode(), resp.header.revision, flush=True)
    while True:
        time.sleep(60)


if __name__ == "__main__":
    main()
