"""Who leads: the soft state Raft reports, the listeners told of each (leader, term), waiting
for a leader (LeaderWatch) and the one helper that runs a call on the leader, wherever it
is (Cluster RPCs, lease keep-alives and TimeToLive), etcd's words for a timed-out request,
and handing leadership over (MoveLeader, and on a clean stop of a leader)."""

from __future__ import annotations

import asyncio
import logging
import operator
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, TypeVar

from petcd import errors
from petcd.errors import EtcdError, LeaderUnreachable
from petcd.raft import Role, SoftState

if TYPE_CHECKING:
    from petcd.server.raftnode.driver import RaftDriver

log = logging.getLogger(__name__)

T = TypeVar("T")


class LeaderWatch:
    """The leader as the leader listeners were last told (0: none), and waiting for it.
    Deadlines are event-loop times (loop.time())."""

    def __init__(self, member_id: int) -> None:
        self.member_id = member_id
        self.lead = 0
        self.closed = False
        self._waiters: list[asyncio.Future[None]] = []

    def set(self, lead: int) -> None:
        self.lead = lead
        self._wake_all()

    def close(self) -> None:
        """The member stops: every wait ends (unsatisfied)."""
        self.closed = True
        self._wake_all()

    def _wake_all(self) -> None:
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def wait_for(self, ok: Callable[[int], bool], deadline: float) -> bool:
        """Until ok(leader) holds (True), or the deadline passes or the watch closes
        (False, unless ok(leader) holds by then)."""
        loop = asyncio.get_running_loop()
        while not ok(self.lead):
            if self.closed or loop.time() >= deadline:
                return False
            fut = loop.create_future()
            self._waiters.append(fut)
            try:
                async with asyncio.timeout_at(deadline):
                    await fut
            except TimeoutError:
                break
        return ok(self.lead)

    async def call_leader(self, here: Callable[[], Awaitable[T]],
                          there: Callable[[int], Awaitable[T]], deadline: float, *,
                          pause: float = 0.1) -> T:
        """Run here() if this member leads, else there(leader). Either may raise
        LeaderUnreachable: then, after the next leader change (or `pause` seconds, if
        none comes), ask whoever leads. Raises STOPPED, or TIMEOUT at the deadline;
        other errors of here()/there() go to the caller."""
        loop = asyncio.get_running_loop()
        while True:
            if self.closed:
                raise errors.STOPPED()
            if not await self.wait_for(bool, deadline):
                raise errors.STOPPED() if self.closed else errors.TIMEOUT()
            lead = self.lead
            try:
                return await (here() if lead == self.member_id else there(lead))
            except LeaderUnreachable as e:
                log.debug("asking leader %x failed: %s", lead, e)
                now = loop.time()
                if now >= deadline:
                    raise errors.TIMEOUT() from None
                await self.wait_for(partial(operator.ne, lead), min(deadline, now + pause))


class Leadership:
    def __init__(self, driver: RaftDriver) -> None:
        self._d = driver
        self.lead = 0
        self.role = Role.FOLLOWER
        self.elected_at = 0.0  # wall clock when the current leader became known
        self._listeners: list[Callable[[int, int], None]] = []
        self._notified: tuple[int, int] = (-1, -1)
        self.watch = LeaderWatch(driver.id)

    def add_listener(self, listener: Callable[[int, int], None]) -> None:
        self._listeners.append(listener)

    def on_soft_state(self, ss: SoftState) -> None:
        d = self._d
        was_leader = self.role == Role.LEADER
        self.role = ss.role
        metrics = d.metrics
        if ss.lead != self.lead:
            if ss.lead:
                self.elected_at = time.time()
                if metrics is not None:
                    metrics.leader_changes.inc()
                d.members.maybe_publish(time.monotonic())
            d.ops.leader(self.lead, ss.lead, d.raw.term)
            old, self.lead = self.lead, ss.lead
            d.reads.on_leader_change(old, ss.lead)
        if metrics is not None:
            metrics.has_leader.set(1 if ss.lead else 0)
            metrics.is_leader.set(1 if ss.role == Role.LEADER else 0)
        if was_leader and ss.role != Role.LEADER:
            log.info("member %x lost leadership (term %d)", d.id, d.raw.term)

    def notify(self, term: int) -> None:
        """Tell the listeners (once per change of leader or term)."""
        if self._notified == (self.lead, term):
            return
        self._notified = (self.lead, term)
        for listener in self._listeners:
            try:
                listener(self.lead, term)
            except Exception:
                log.exception("leader listener failed")
        self.watch.set(self.lead)  # (waiters resume after every listener ran)

    def timeout_error(self, started: float) -> EtcdError:
        """etcd's choice of words for a proposal that timed out."""
        d = self._d
        elected = self.elected_at
        window = 2 * d.opts.election_ms / 1000.0
        if elected - window < started < elected:
            return errors.TIMEOUT_DUE_TO_LEADER_FAIL()
        lead = self.lead
        if lead == d.id:
            voters = d.raw.voters
            ok = sum(1 for v in voters if v == d.id or self.connected_since(v, started))
            if ok < len(voters) // 2 + 1:
                return errors.TIMEOUT_DUE_TO_CONNECTION_LOST()
        elif lead and not self.connected_since(lead, started):
            return errors.TIMEOUT_DUE_TO_CONNECTION_LOST()
        return errors.TIMEOUT()

    def connected_since(self, peer_id: int, when: float) -> bool:
        since = self._d.transport.active_since(peer_id)
        return since is not None and since <= when

    async def move_leader(self, target: int) -> None:
        """Maintenance.MoveLeader on the leader. Raises EtcdError."""
        d = self._d
        if self.role != Role.LEADER:
            raise errors.NOT_LEADER()
        m = d.membership.members.get(target)
        if m is None or m.is_learner:
            raise errors.BAD_LEADER_TRANSFEREE()
        deadline = asyncio.get_running_loop().time() + d.request_timeout
        log.info("leadership transfer from %x to %x starting", d.id, target)
        d.raw.transfer_leader(target)
        d.wake()
        if not await self.watch.wait_for(lambda lead: lead == target, deadline):
            raise errors.TIMEOUT_LEADER_TRANSFER()
        log.info("leadership transfer from %x to %x finished", d.id, target)

    async def transfer_on_shutdown(self) -> None:
        """As etcd does on a clean stop: give leadership to the most caught-up voter so
        that the cluster does not wait out an election timeout."""
        d = self._d
        raw = d.raw
        voters = [v for v in raw.voters if v != d.id]
        if not voters:
            return
        target = max(voters, key=lambda v: raw.match_index(v) or 0)
        log.info("transferring leadership to %x before stopping", target)
        raw.transfer_leader(target)
        d.wake()
        deadline = asyncio.get_running_loop().time() + d.opts.election_ms / 1000.0
        await self.watch.wait_for(lambda lead: lead == target, deadline)
