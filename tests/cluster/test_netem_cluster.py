"""A 3-member cluster whose peer links all pass through userspace proxies that delay
(25 ms each way, +-5 ms), lose (2% of pieces wait a 200 ms retransmission timeout)
and now and then reset links (playground/netem.py: this kernel has no sch_netem):
writes keep committing, the elections forced by stopping the leader settle, and no
acknowledged write is lost. The election timeout is raised as docs/OPERATIONS.md
says for such links (heartbeat 100 ms, election 1000 ms)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest

from petcd.pb.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from petcd.playground.netem import Impairment
from petcd.playground.proxy import PeerProxy
from petcd.testing import PetcdCluster, PetcdProcess, free_port

pytestmark = pytest.mark.slow

T = TypeVar("T")
LINKS = Impairment(delay=0.025, jitter=0.005, loss=0.02, rto=0.2, cut=0.001)
TUNED = ["--heartbeat-interval", "100", "--election-timeout", "1000"]


class ProxyLoop:
    """The proxies' event loop, in a thread of the test process."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.proxies: list[PeerProxy] = []

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    def add(self, name: str, port: int, target: int) -> None:
        proxy = PeerProxy(name, port, target, lambda sender, receiver: False)
        proxy.impairment = LINKS
        self.run(proxy.start())
        self.proxies.append(proxy)

    def close(self) -> None:
        for p in self.proxies:
            self.run(p.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


class ProxiedMember(PetcdProcess):
    """Listens for peers on its own port and advertises its proxy's (its peer URL)."""

    proxy_port = 0

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.proxy_port}"

    def member_args(self) -> list[str]:
        args = super().member_args()
        i = args.index("--listen-peer-urls")
        args[i + 1] = f"http://127.0.0.1:{self.peer_port}"
        return args


class NetemCluster(PetcdCluster):
    def __init__(self, base: Path, net: ProxyLoop) -> None:
        super().__init__(base, 3, args=TUNED)
        self._net = net

    def _make_members(self) -> None:
        super()._make_members()
        self.members = [ProxiedMember(m.data_dir, name=m.name, args=m.extra_args)
                        for m in self.members]
        for m in self.members:
            m.proxy_port = free_port()
            self._net.add(m.name, m.proxy_port, m.peer_port)
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        for m in self.members:
            m.initial_cluster = initial


def _put(m: PetcdProcess, key: str, value: str) -> bool:
    with grpc.insecure_channel(m.address) as ch:
        try:
            rpc_pb2_grpc.KVStub(ch).Put(rpc_pb2.PutRequest(key=key.encode(),
                                                           value=value.encode()), timeout=10)
            return True
        except grpc.RpcError:
            return False


def _contents(m: PetcdProcess) -> dict[str, str]:
    with grpc.insecure_channel(m.address) as ch:
        resp = rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(
            key=b"netem/", range_end=b"netem0", serializable=True), timeout=30)
    return {kv.key.decode(): kv.value.decode() for kv in resp.kvs}


def test_writes_commit_through_delay_and_loss(tmp_path: Path) -> None:
    net = ProxyLoop()
    c = NetemCluster(tmp_path, net)
    try:
        c.start(timeout=120)
        c.wait_leader(timeout=60)
        acked: dict[str, str] = {}
        attempts = 0
        for phase in range(3):
            # Writes for a while, through every running member in turn.
            until = time.monotonic() + 15
            while time.monotonic() < until:
                m = c.members[attempts % 3]
                attempts += 1
                key, value = f"netem/{attempts:05d}", f"v{attempts}"
                if _put(m, key, value):
                    acked[key] = value
            if phase == 2:
                break
            # The leader stops past an election timeout: the others elect; writes go
            # on through them meanwhile; the old leader comes back as a follower.
            leader = c.wait_leader(timeout=60)
            leader.pause()
            try:
                c.wait_leader(timeout=60, exclude=[leader])
                for i in range(10):
                    m = next(x for x in c.members if x is not leader)
                    key = f"netem/p{phase}-{i}"
                    if _put(m, key, "during"):
                        acked[key] = "during"
            finally:
                leader.resume()
            c.wait_leader(timeout=60)
        print(f"{len(acked)} writes acknowledged of {attempts + 20} tried")  # (for -s)
        assert len(acked) >= 30, f"only {len(acked)} of {attempts} writes committed"

        # Every member holds every acknowledged write, and all hold the same data.
        leader = c.wait_leader(timeout=60)
        commit = c.statuses([leader])[leader.name].committed
        c.wait_applied(commit, timeout=120)
        contents = [_contents(m) for m in c.members]
        for got in contents:
            missing = {k: v for k, v in acked.items() if got.get(k) != v}
            assert missing == {}
        assert contents[0] == contents[1] == contents[2]
    finally:
        c.kill_all()
        net.close()
