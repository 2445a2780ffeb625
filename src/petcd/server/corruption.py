"""Corruption checks between members, as etcd 3.4/3.5 run them: every member's HashKV at
one revision must agree where their compacted revisions agree.

- `--experimental-initial-corrupt-check`: before serving, a restarted member compares its
  HashKV at its current revision with every reachable peer's at that revision; a
  mismatch at the same compact revision stops it ("found data inconsistency with peers").
- `--experimental-corrupt-check-time D`: every D the leader hashes its store, asks each
  member for HashKV at the same revision, and raises the CORRUPT alarm (through the log,
  like `etcdctl alarm`) for a member whose hash differs at the same compact revision, or
  for itself if its own hash at that revision changed between two computations.
- `--experimental-compact-hash-check-enabled` (every `-time`, on the leader): the same
  comparison at the latest compacted revision, the revision every member hashed over
  the same history.

Peers are asked over their client URLs (Maintenance.HashKV, the RPC operators use).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import grpc

from petcd.errors import EtcdError
from petcd.pb.etcdserverpb import rpc_pb2 as rpc

log = logging.getLogger("petcd.corruption")

_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class PeerHash:
    member_id: int
    hash: int
    compact_revision: int


HashKV = Callable[[int], Awaitable[tuple[int, int, int, int]]]  # maintenance.hash_kv


async def peer_hashes(peers: Sequence[tuple[int, list[str]]], revision: int,
                      channel: Callable[[str], grpc.aio.Channel]) -> list[PeerHash]:
    """HashKV at `revision` from each peer that answers ((member ID, client URLs) each);
    peers that cannot (down, compacted past it, not there yet) are left out."""
    async def ask(member_id: int, urls: list[str]) -> PeerHash | None:
        for url in urls:
            try:
                async with channel(url) as ch:
                    raw = await ch.unary_unary("/etcdserverpb.Maintenance/HashKV", None, None)(
                        rpc.HashKVRequest(revision=revision).SerializeToString(),
                        timeout=_TIMEOUT)
                resp = rpc.HashKVResponse.FromString(raw)
                return PeerHash(resp.header.member_id or member_id, resp.hash,
                                resp.compact_revision)
            except grpc.RpcError as e:
                log.debug("HashKV from %x at %s: %s", member_id, url, e)
        return None
    answers = await asyncio.gather(*(ask(mid, urls) for mid, urls in peers if urls))
    return [a for a in answers if a is not None]


def mismatches(own_hash: int, own_compact: int, peers: Sequence[PeerHash]) -> list[int]:
    """Members whose hash differs from ours over the same compacted history."""
    return [p.member_id for p in peers
            if p.hash != own_hash and p.compact_revision == own_compact]


class CorruptionMonitor:
    """The leader's periodic checks (start() on the event loop)."""

    def __init__(self, *, hash_kv: HashKV, peers: Callable[[], list[tuple[int, list[str]]]],
                 is_leader: Callable[[], bool], member_id: int,
                 raise_alarm: Callable[[int], Awaitable[None]],
                 compact_revision: Callable[[], int],
                 channel: Callable[[str], grpc.aio.Channel],
                 interval: float, compact_interval: float) -> None:
        self._hash_kv = hash_kv
        self._peers = peers
        self._is_leader = is_leader
        self._member_id = member_id
        self._raise_alarm = raise_alarm
        self._compact_revision = compact_revision
        self._channel = channel
        self._interval = interval
        self._compact_interval = compact_interval
        self._tasks: list[asyncio.Task[None]] = []
        self._last_compact_checked = 0
        self.found: list[int] = []  # members found corrupt (for tests and logs)

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self._interval > 0:
            self._tasks.append(loop.create_task(self._every(self._interval, self.check)))
        if self._compact_interval > 0:
            self._tasks.append(loop.create_task(
                self._every(self._compact_interval, self.check_compacted)))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t

    async def _every(self, interval: float, fn: Callable[[], Awaitable[None]]) -> None:
        while True:
            await asyncio.sleep(interval)
            if not self._is_leader():
                continue
            try:
                await fn()
            except (EtcdError, OSError) as e:
                log.warning("corruption check failed: %s", e)

    async def check(self) -> None:
        """etcd's periodic check at the leader's current revision."""
        h, _, compact, rev = await self._hash_kv(0)
        answers = await peer_hashes(self._peers(), rev, self._channel)
        bad = mismatches(h, compact, answers)
        h2, _, compact2, _ = await self._hash_kv(rev)
        if h2 != h and compact2 == compact:
            bad.append(self._member_id)  # our own store changed under a fixed revision
        await self._report(bad, rev)

    async def check_compacted(self) -> None:
        """etcd 3.5's compact hash check: at the latest compaction, once per compaction."""
        rev = self._compact_revision()
        if rev <= 0 or rev == self._last_compact_checked:
            return
        h, _, compact, _ = await self._hash_kv(rev)
        answers = await peer_hashes(self._peers(), rev, self._channel)
        await self._report(mismatches(h, compact, answers), rev)
        self._last_compact_checked = rev

    async def _report(self, bad: list[int], rev: int) -> None:
        for member_id in sorted(set(bad)):
            log.error("member %x's data is inconsistent with the leader's at revision %d: "
                      "raising the CORRUPT alarm", member_id, rev,
                      extra={"fields": {"revision": rev, "member-id": f"{member_id:x}"}})
            self.found.append(member_id)
            await self._raise_alarm(member_id)


async def initial_check(hash_kv: HashKV, peers: list[tuple[int, list[str]]],
                        channel: Callable[[str], grpc.aio.Channel]) -> None:
    """Raises RuntimeError when a peer's hash at our revision differs over the same
    compacted history (etcd refuses to start then)."""
    h, _, compact, rev = await hash_kv(0)
    answers = await peer_hashes(peers, rev, channel)
    bad = mismatches(h, compact, answers)
    log.info("initial corruption check at revision %d: %d peers compared, %d differ", rev,
             len(answers), len(bad))
    if bad:
        raise RuntimeError(
            "found data inconsistency with peers: " + ", ".join(f"{b:x}" for b in bad))
