"""The lessor's life on the event loop: leadership, expiry, renewals, forwarding.

- On becoming leader (a leader listener of the node) the lessor is promoted: every
  lease restarts its countdown with its full TTL plus an election timeout, as etcd
  does, so no lease expires because of a failover. On losing leadership it is
  demoted (nothing expires locally).
- The leader scans for expired leases (at the next expiry, at least every 0.5 s) and
  proposes their revocations through the log, at most `revoke_rate` per second, as
  etcd's rate limit. A revocation that is lost is proposed again 3 s later.
- Keep-alives renew on the leader only, in memory (no log entry). A follower sends
  them to the leader over one LeaseKeepAlive stream to its client URL, marked as
  forwarded (a forwarded request reaching a non-leader fails with NOT_LEADER and is
  retried against whoever is leader then: the member's `call_leader` helper, the one
  Cluster RPCs use too). TimeToLive is answered by the leader the same way (only it
  knows the remaining time).
- With lease checkpoints on, the leader records long leases' remaining TTLs in the
  log every checkpoint interval, so that a new leader restarts them from there.

The API layer calls only: `new_id`, `renew_now` / `renew`, `time_to_live_now` /
`time_to_live`, `leases`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol, TypeVar

import grpc
from google.protobuf.message import Message

from petcd import errors
from petcd.errors import EtcdError, LeaderUnreachable
from petcd.lease.apply import LEASE_CHECKPOINT, LEASE_REVOKE
from petcd.lease.ids import LeaseIdGenerator
from petcd.lease.lessor import EXPIRED, NOT_FOUND, NOT_PRIMARY, Lessor
from petcd.pb.etcdserverpb import rpc_pb2 as rpc

log = logging.getLogger("petcd.lease")

# gRPC metadata marking a request a follower forwarded to the leader.
FORWARDED = "petcd-lease-forwarded"
_FORWARDED_MD = ((FORWARDED, "1"),)
_MAX_CHECKPOINT_BATCH = 1000
_EXPIRED_POLL = 0.05  # an expired lease whose revocation is not proposed yet: look again
_MAX_ENCODED = 1024  # forwarded keep-alive requests kept encoded, per stream to the leader

T = TypeVar("T")


class LeaseHost(Protocol):
    """What the driver needs from the member (petcd.server.node.Node provides it)."""

    member_id: int

    def propose(self, kind: str, raw: bytes, request: Message) -> asyncio.Future[Any]: ...

    def read_barrier(self) -> Awaitable[None] | None: ...

    def add_leader_listener(self, listener: Callable[[int, int], None]) -> None: ...

    def members(self) -> list[rpc.Member]: ...

    def member_channel(self, url: str) -> grpc.aio.Channel:
        """A channel to another member's client URL (TLS as this member's settings)."""
        ...

    async def call_leader(self, here: Callable[[], Awaitable[T]],
                          there: Callable[[int], Awaitable[T]], deadline: float) -> T:
        """here() if this member leads, else there(leader id); either raises
        LeaderUnreachable to be retried with whoever leads next, until `deadline`
        (loop time; then TIMEOUT)."""
        ...


class LeaseDriver:
    def __init__(self, lessor: Lessor, host: LeaseHost, *, election_timeout: float = 1.0,
                 request_timeout: float | None = None, revoke_rate: int = 1000,
                 checkpoint_interval: float | None = None) -> None:
        self.lessor = lessor
        self.host = host
        self.election_timeout = election_timeout
        # etcd's request timeout: 5 s plus two election timeouts.
        self.request_timeout = (5.0 + 2 * election_timeout if request_timeout is None
                                else request_timeout)
        self.revoke_rate = max(2, revoke_rate)
        self.checkpoint_interval = checkpoint_interval  # None: checkpoints off
        # new_id(): an ID for a grant that asked the server to choose (chosen before
        # proposing, so the log entry carries it and every member applies the same).
        self.new_id: Callable[[], int] = LeaseIdGenerator(host.member_id).next
        self.leader_id = 0
        self._term = 0
        self._promoted_term = -1
        self._link: LeaderLink | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        # revocations proposed and not yet answered
        self._revoking: dict[int, asyncio.Future[Any]] = {}
        self._clearing: set[int] = set()  # checkpoint clears proposed
        self._closing: set[asyncio.Task[None]] = set()  # links being closed
        host.add_leader_listener(self._on_leader)

    # -- lifecycle

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="lease-expiry")

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._link is not None:
            await self._link.close()
            self._link = None

    # -- leadership

    @property
    def is_leader(self) -> bool:
        return self.leader_id == self.host.member_id

    def _on_leader(self, leader_id: int, term: int) -> None:
        changed = leader_id != self.leader_id
        self.leader_id, self._term = leader_id, term
        if leader_id == self.host.member_id:
            if self._promoted_term != term:
                self._promoted_term = term
                self.lessor.promote(self.election_timeout)
                log.info("lessor promoted (term %d): %d leases renewed", term,
                         len(self.lessor))
        elif self.lessor.primary:
            self._promoted_term = -1
            self.lessor.demote()
            log.info("lessor demoted (leader now %x)", leader_id)
        if changed and self._link is not None:
            link, self._link = self._link, None
            task = asyncio.get_running_loop().create_task(link.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    # -- the API's calls

    def renew_now(self, lease_id: int) -> int | None:
        """The keep-alive fast path: the renewed TTL, 0 for a missing lease, or None
        when the answer needs waiting (call `renew`)."""
        ttl = self.lessor.renew(lease_id)
        if ttl > 0:
            if self.checkpoint_interval is not None:
                self.clear_checkpoint(lease_id)
            return ttl
        return None

    async def renew(self, lease_id: int, *, forwarded: bool = False) -> int:
        """Renew on the leader, wherever that is. Returns the TTL, 0 if the lease does
        not exist (or was revoked because it expired). Raises EtcdError."""
        deadline = asyncio.get_running_loop().time() + self.request_timeout
        link = self._link
        if link is not None and not forwarded and not self.lessor.primary and \
                link.member_id == self.leader_id:
            # A follower's renewal, the leader's stream open: straight to it. If that
            # fails, the general path below retries with whoever leads.
            try:
                async with asyncio.timeout_at(deadline):
                    return await link.renew(lease_id)
            except (grpc.RpcError, ConnectionError, TimeoutError):
                await self._drop_link(link)
        ttl = await self._renew_here(lease_id, deadline)
        if ttl is not None:
            return ttl
        if forwarded:
            raise errors.NOT_LEADER()

        async def here() -> int:
            ttl = await self._renew_here(lease_id, deadline)
            if ttl is None:  # (leading, and the promotion is on its way)
                raise LeaderUnreachable("the lessor is not promoted yet")
            return ttl

        return await self.host.call_leader(
            here, lambda leader: self._renew_at(leader, lease_id, deadline), deadline)

    async def _renew_here(self, lease_id: int, deadline: float) -> int | None:
        """Renew in this member's lessor: the TTL, 0 if the lease does not exist, None if
        this lessor is not the primary one (the leader's)."""
        loop = asyncio.get_running_loop()
        checked_applied = False
        while True:
            ttl = self.lessor.renew(lease_id)
            if ttl > 0:
                if self.checkpoint_interval is not None:
                    self.clear_checkpoint(lease_id)
                return ttl
            if ttl == NOT_FOUND:
                if checked_applied:
                    return 0
                # A new leader may not have applied the grant yet: wait until it has
                # applied everything committed, then look again (as etcd waits for the
                # applied index). Rare: only for unknown IDs.
                checked_applied = True
                barrier = self.host.read_barrier()
                if barrier is not None:
                    await barrier
                continue
            if ttl == EXPIRED:
                # Its revocation is under way: answer once it is applied (or forward,
                # if this member stops leading first).
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise errors.TIMEOUT()
                revoking = self._revoking.get(lease_id)
                if revoking is None:
                    await asyncio.sleep(min(_EXPIRED_POLL, remaining))
                else:
                    await asyncio.wait([revoking], timeout=remaining)
                continue
            assert ttl == NOT_PRIMARY
            return None

    async def _renew_at(self, leader: int, lease_id: int, deadline: float) -> int:
        """A keep-alive forwarded to the leader (over the shared stream)."""
        link = self._leader_link(leader)
        try:
            if link is None:
                raise ConnectionError(f"no client URL known for leader {leader:x}")
            async with asyncio.timeout_at(
                    max(deadline, asyncio.get_running_loop().time() + 0.01)):
                return await link.renew(lease_id)
        except (grpc.RpcError, ConnectionError, TimeoutError) as e:
            if link is not None:
                await self._drop_link(link)
            raise LeaderUnreachable(f"keep-alive of {lease_id:x}: {e}") from e

    async def _drop_link(self, link: LeaderLink) -> None:
        """A renewal over `link` failed: the next one opens a new link."""
        if self._link is link:
            self._link = None
            await link.close()

    def _leader_link(self, leader: int) -> LeaderLink | None:
        link = self._link
        if link is not None and link.member_id == leader:
            return link
        for m in self.host.members():
            if leader == m.ID and m.clientURLs:
                self._link = LeaderLink(leader, self.host.member_channel(m.clientURLs[0]))
                return self._link
        return None

    def time_to_live_now(self, lease_id: int, keys: bool) -> rpc.LeaseTimeToLiveResponse | None:
        """On the leader, its view of a lease (as `time_to_live`); None elsewhere (call
        `time_to_live`, which asks the leader)."""
        if self.lessor.primary:
            return self._local_time_to_live(lease_id, keys)
        return None

    async def time_to_live(self, lease_id: int, keys: bool, *,
                           forwarded: bool = False) -> rpc.LeaseTimeToLiveResponse:
        """The leader's view of a lease (TTL -1 if it does not exist); a follower asks
        the leader. The response has no header (the caller adds it)."""
        if self.lessor.primary:
            return self._local_time_to_live(lease_id, keys)
        if forwarded:
            raise errors.NOT_LEADER()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.request_timeout

        async def here() -> rpc.LeaseTimeToLiveResponse:
            if not self.lessor.primary:
                raise LeaderUnreachable("the lessor is not promoted yet")
            return self._local_time_to_live(lease_id, keys)

        async def there(leader: int) -> rpc.LeaseTimeToLiveResponse:
            link = self._leader_link(leader)
            try:
                if link is None:
                    raise ConnectionError(f"no client URL known for leader {leader:x}")
                return await asyncio.wait_for(link.time_to_live(lease_id, keys),
                                              max(0.01, deadline - loop.time()))
            except (grpc.RpcError, ConnectionError, TimeoutError) as e:
                raise LeaderUnreachable(f"TimeToLive of {lease_id:x}: {e}") from e

        return await self.host.call_leader(here, there, deadline)

    def _local_time_to_live(self, lease_id: int, keys: bool) -> rpc.LeaseTimeToLiveResponse:
        lease = self.lessor.get(lease_id)
        if lease is None:
            return rpc.LeaseTimeToLiveResponse(ID=lease_id, TTL=-1)
        remaining = lease.remaining(self.lessor.clock())
        # Whole seconds, truncated towards zero, as etcd reports it.
        ttl = int(remaining) if math.isfinite(remaining) else 2**63 // 10**9
        resp = rpc.LeaseTimeToLiveResponse(ID=lease_id, TTL=ttl, grantedTTL=lease.ttl)
        if keys:
            resp.keys.extend(self.lessor.keys_of(lease))
        return resp

    def leases(self) -> list[int]:
        """IDs of every lease this member knows, soonest expiry first."""
        return [le.id for le in self.lessor.leases()]

    # -- expiry (leader only)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        window_end = 0.0
        budget = 0
        next_checkpoint = loop.time() + (self.checkpoint_interval or 0)
        lessor = self.lessor
        while True:
            now = loop.time()
            if now >= window_end:
                window_end, budget = now + 0.5, self.revoke_rate // 2
            delay = 0.5
            if lessor.primary:
                try:
                    expired = lessor.expired(budget)
                    budget -= len(expired)
                    if expired:
                        log.info("revoking %d expired lease(s): %s", len(expired),
                                 " ".join(f"{le.id:x}" for le in expired[:8]))
                    for lease in expired:
                        self._propose_revoke(lease.id)
                    if self.checkpoint_interval and now >= next_checkpoint:
                        next_checkpoint = now + self.checkpoint_interval
                        self._propose_checkpoints()
                except Exception:  # keep expiring whatever one round hit
                    log.exception("lease expiry round failed")
                until_next = lessor.next_deadline() - lessor.clock()
                delay = min(0.5, max(0.01, until_next))
                if budget <= 0:
                    delay = max(delay, window_end - now)
            await asyncio.sleep(delay)

    def _propose_revoke(self, lease_id: int) -> None:
        if lease_id in self._revoking:
            return
        req = rpc.LeaseRevokeRequest(ID=lease_id)
        fut = self.host.propose(LEASE_REVOKE, req.SerializeToString(), req)
        self._revoking[lease_id] = fut

        def done(f: asyncio.Future[Any]) -> None:
            self._revoking.pop(lease_id, None)
            if f.cancelled():
                return
            result = f.result()
            if not isinstance(result, EtcdError):
                self.lessor.expired_count += 1
            elif result.kind is not errors.LEASE_NOT_FOUND:
                log.warning("revoking expired lease %x failed: %s", lease_id, result.message)

        fut.add_done_callback(done)

    def _propose_checkpoints(self) -> None:
        lessor = self.lessor
        interval = int(self.checkpoint_interval or 0)  # whole seconds, as etcd compares
        now = lessor.clock()
        cps: list[rpc.LeaseCheckpoint] = []
        for lease in lessor.leases():
            remaining = lease.expiry - now
            if not (0 < remaining < math.inf) or lease.renewal_ttl() <= interval:
                continue
            left = math.ceil(remaining)
            if left < lease.ttl:
                cps.append(rpc.LeaseCheckpoint(ID=lease.id, remaining_TTL=left))
        for i in range(0, len(cps), _MAX_CHECKPOINT_BATCH):
            req = rpc.LeaseCheckpointRequest(checkpoints=cps[i:i + _MAX_CHECKPOINT_BATCH])
            self.host.propose(LEASE_CHECKPOINT, req.SerializeToString(), req)

    def clear_checkpoint(self, lease_id: int) -> None:
        """A renewed lease no longer has a checkpointed remaining TTL (proposed once)."""
        if self.checkpoint_interval is None or lease_id in self._clearing:
            return
        lease = self.lessor.get(lease_id)
        if lease is None or lease.remaining_ttl <= 0:
            return
        req = rpc.LeaseCheckpointRequest(
            checkpoints=[rpc.LeaseCheckpoint(ID=lease_id, remaining_TTL=0)])
        self._clearing.add(lease_id)
        self.host.propose(LEASE_CHECKPOINT, req.SerializeToString(), req).add_done_callback(
            lambda _: self._clearing.discard(lease_id))


class LeaderLink:
    """One LeaseKeepAlive stream to the leader, shared by every forwarded keep-alive of
    this member. Requests go into a queue that gRPC drains as the stream's request
    iterator (a renewal never waits on a write); the leader answers a stream's
    messages one after the other, so responses resolve the waiters in order. If the
    stream fails, every waiter fails and the next renewal opens a new one."""

    def __init__(self, member_id: int, channel: grpc.aio.Channel) -> None:
        self.member_id = member_id
        self._channel = channel
        # No (de)serializers: bytes in, bytes out.
        self._keep_alive = self._channel.stream_stream(
            "/etcdserverpb.Lease/LeaseKeepAlive", None, None)
        self._ttl = self._channel.unary_unary("/etcdserverpb.Lease/LeaseTimeToLive", None, None)
        self._stream: _Stream | None = None
        self._closed = False

    def renew(self, lease_id: int) -> asyncio.Future[int]:
        """The renewed TTL (0: no such lease), when the leader answers."""
        if self._closed:
            raise ConnectionError("link closed")
        stream = self._stream
        if stream is None or stream.failed:
            stream = self._stream = _Stream(self._keep_alive)
        return stream.renew(lease_id)

    async def time_to_live(self, lease_id: int, keys: bool) -> rpc.LeaseTimeToLiveResponse:
        raw = await self._ttl(rpc.LeaseTimeToLiveRequest(ID=lease_id, keys=keys)
                              .SerializeToString(), metadata=_FORWARDED_MD)
        resp = rpc.LeaseTimeToLiveResponse.FromString(raw)
        resp.ClearField("header")
        return resp

    async def close(self) -> None:
        self._closed = True
        if self._stream is not None:
            await self._stream.close()
        await self._channel.close(None)


class _Stream:
    def __init__(self, multicallable: Any) -> None:
        self.failed = False
        self._requests: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._waiters: collections.deque[asyncio.Future[int]] = collections.deque()
        # Encoded LeaseKeepAliveRequest per lease ID: a member renews the same leases
        # over and over (bounded: emptied when full).
        self._encoded: dict[int, bytes] = {}
        self._call = multicallable(self._feed(), metadata=_FORWARDED_MD)
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _feed(self) -> AsyncIterator[bytes]:
        while True:
            data = await self._requests.get()
            if data is None:
                return
            yield data

    def renew(self, lease_id: int) -> asyncio.Future[int]:
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        data = self._encoded.get(lease_id)
        if data is None:
            if len(self._encoded) >= _MAX_ENCODED:
                self._encoded.clear()
            data = self._encoded[lease_id] = \
                rpc.LeaseKeepAliveRequest(ID=lease_id).SerializeToString()
        self._requests.put_nowait(data)
        return fut

    async def _read(self) -> None:
        err: BaseException = ConnectionError("leader ended the keep-alive stream")
        try:
            async for raw in self._call:
                resp = rpc.LeaseKeepAliveResponse.FromString(raw)
                if self._waiters:
                    fut = self._waiters.popleft()
                    if not fut.done():  # (its caller may have given up)
                        fut.set_result(resp.TTL)
        except asyncio.CancelledError:
            err = ConnectionError("link closed")
            raise
        except grpc.RpcError as e:
            err = e
        except Exception as e:
            err = ConnectionError(str(e))
        finally:
            self._fail(err)

    def _fail(self, err: BaseException) -> None:
        self.failed = True
        self._call.cancel()
        self._requests.put_nowait(None)
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_exception(err)

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader
