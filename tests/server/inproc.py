"""Members in one process, without sockets: real Nodes (WAL, LMDB backend, MVCC, lessor,
all in tmp dirs) whose Raft drivers talk over an in-memory transport. Links between
members can be cut; messages are delivered by the event loop, as the real transport's
reader would."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from petcd.server.node import Node
from petcd.server.options import ServerOptions
from petcd.transport import RequestFailed


class FakeNet:
    def __init__(self) -> None:
        self.transports: dict[int, FakeTransport] = {}
        self.cut: set[frozenset[int]] = set()  # links that drop everything

    def up(self, a: int, b: int) -> bool:
        return b in self.transports and frozenset((a, b)) not in self.cut

    def isolate(self, member_id: int) -> None:
        for other in self.transports:
            if other != member_id:
                self.cut.add(frozenset((member_id, other)))

    def heal(self) -> None:
        self.cut.clear()


class _FileChunks:
    """A snapshot's data from a file, as the transport's SnapshotStream gives it."""

    def __init__(self, f: Any) -> None:
        self._f = f

    async def batch(self) -> list[bytes]:
        chunk = await asyncio.to_thread(self._f.read, 1 << 16)
        return [chunk] if chunk else []

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while batch := await self.batch():
            for chunk in batch:
                yield chunk


class FakeTransport:
    """What RaftDriver uses of petcd.transport.PeerTransport."""

    def __init__(self, net: FakeNet, member_id: int, cluster_id: int, urls: list[str],
                 on_messages: Callable[[list[bytes]], None],
                 on_snapshot: Callable[[int, bytes, Any], Awaitable[None]],
                 *, on_request: Callable[[int, bytes], Awaitable[bytes]] | None = None,
                 **_: Any) -> None:
        self.net = net
        self.id = member_id
        self._on_messages = on_messages
        self._on_snapshot = on_snapshot
        self._on_request = on_request
        self._peers: dict[int, list[str]] = {}
        self.received_bytes: dict[int, int] = {}
        self.snapshots_sent = 0

    async def start(self) -> None:
        self.net.transports[self.id] = self

    async def stop(self) -> None:
        self.net.transports.pop(self.id, None)

    def send(self, to: int, payloads: list[bytes], now: bool = False) -> None:
        if self.net.up(self.id, to):
            target = self.net.transports[to]
            asyncio.get_running_loop().call_soon(target._on_messages, list(payloads))

    async def send_snapshot(self, to: int, metadata: bytes, source: Any) -> bool:
        if not self.net.up(self.id, to):
            return False

        # a path, or a raw stream (the leader's backend copy) read in a thread
        with (open(source, "rb") if isinstance(source, str)
              else contextlib.nullcontext(source)) as f:
            await self.net.transports[to]._on_snapshot(self.id, metadata, _FileChunks(f))
        self.snapshots_sent += 1
        return True

    async def request(self, to: int, payload: bytes, *, timeout: float) -> bytes:
        if not self.net.up(self.id, to):
            await asyncio.sleep(0.01)
            raise RequestFailed(f"no link to {to:x}")
        handler = self.net.transports[to]._on_request
        assert handler is not None
        return await asyncio.wait_for(handler(self.id, payload), timeout)

    def add_peer(self, peer_id: int, urls: list[str]) -> None:
        self._peers[peer_id] = urls

    def update_peer(self, peer_id: int, urls: list[str]) -> None:
        self._peers[peer_id] = urls

    def remove_peer(self, peer_id: int) -> None:
        self._peers.pop(peer_id, None)

    def peer_ids(self) -> list[int]:
        return list(self._peers)

    def statuses(self) -> dict[int, Any]:
        return {}

    def drain_unreachable(self) -> list[int]:
        return [p for p in self._peers if not self.net.up(self.id, p)]

    def active_since(self, peer_id: int) -> float | None:
        return 0.0 if self.net.up(self.id, peer_id) else None  # (connected long ago)


def options(tmp: Path, names: list[str], name: str, **kw: Any) -> ServerOptions:
    # Addresses are never bound (the transport is in memory); port 9 is discard.
    peers = {n: (f"http://127.0.0.1:9/{n}",) for n in names}
    base: dict[str, Any] = dict(
        name=name, data_dir=str(tmp / name), initial_cluster=peers,
        initial_advertise_peer_urls=peers[name], listen_peer_urls=peers[name],
        listen_client_urls=(f"http://127.0.0.1:9/client-{name}",),
        advertise_client_urls=(f"http://127.0.0.1:9/client-{name}",),
        heartbeat_ms=20, election_ms=200, unsafe_no_fsync=True,
        backend_batch_interval_ms=10)
    base.update(kw)
    return ServerOptions(**base)


class Cluster:
    def __init__(self, tmp: Path, size: int, **kw: Any) -> None:
        self.net = FakeNet()
        names = [f"m{i}" for i in range(size)]
        self.nodes = [Node(options(tmp, names, n, **kw),
                           transport_factory=self._factory) for n in names]

    def _factory(self, *args: Any, **kw: Any) -> FakeTransport:
        return FakeTransport(self.net, *args, **kw)

    async def start(self) -> None:
        for n in self.nodes:
            await n.listen_peers()
        for n in self.nodes:
            n.start()
        for n in self.nodes:
            assert await n.wait_ready(10.0)

    async def stop(self) -> None:
        for n in self.nodes:
            await n.stop()

    async def leader(self, timeout: float = 10.0) -> Node:
        """The member every running member agrees leads."""
        deadline = time.monotonic() + timeout
        while True:
            leads = {n.leader_id for n in self.nodes if not n._log.stopped}
            lead = next(iter(leads))
            if len(leads) == 1 and lead:
                return next(n for n in self.nodes if n.member_id == lead)
            assert time.monotonic() < deadline, f"no agreed leader: {leads}"
            await asyncio.sleep(0.01)

    def followers(self, leader: Node) -> list[Node]:
        return [n for n in self.nodes if n is not leader]


def run(body: Callable[[Cluster], Awaitable[None]], tmp: Path, size: int = 3,
        **kw: Any) -> None:
    """`body` against a started cluster of `size` members (options `kw`), within 60 s;
    the cluster is stopped whatever happens."""
    async def main() -> None:
        c = Cluster(tmp, size, **kw)
        await c.start()
        try:
            await asyncio.wait_for(body(c), 60)
        finally:
            await c.stop()
    asyncio.run(main())
