"""Linearizable reads (etcd's ReadIndex): every read that arrives while no ReadIndex
request is out joins the next one, so one round trip to the leader serves a burst.

A round asks Raft for the commit index as of now (confirmed by a heartbeat quorum on the
leader); its readers may go once this member has applied up to that index. A round that
gets no answer is asked again every READ_INDEX_RETRY seconds until the request timeout;
a leader change ends it with LEADER_CHANGED (etcd's answer), unless it was asked while
there was no leader, in which case it is asked again of the new one.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import Callable

from petcd import errors
from petcd.errors import EtcdError
from petcd.raft import RawNode, ReadIndexDropped, ReadState
from petcd.server.ops_watch import OpsWatch

READ_INDEX_RETRY = 0.5  # seconds before an unanswered ReadIndex is asked again, as etcd


class _ReadRound:
    """One ReadIndex request shared by every read that arrived before it was sent."""

    __slots__ = ("ctx", "deadline", "index", "retry_at", "waiters")

    def __init__(self, ctx: bytes, waiters: list[asyncio.Future[None]], now: float,
                 timeout: float) -> None:
        self.ctx = ctx
        self.waiters = waiters
        self.deadline = now + timeout
        self.retry_at = now + READ_INDEX_RETRY
        self.index = -1  # set once the leader answered


class LinearizableReads:
    def __init__(self, raw: RawNode, applied_index: Callable[[], int],
                 wake: Callable[[], None], stopping: Callable[[], bool],
                 timeout: float, ops: OpsWatch | None = None) -> None:
        self._ops = ops  # etcd's warnings and counters for slow and failed rounds
        self._raw = raw
        self._applied_index = applied_index
        self._wake = wake
        self._stopping = stopping
        self._timeout = timeout
        self._waiters: list[asyncio.Future[None]] = []  # for the next round
        self._round: _ReadRound | None = None
        self._seq = 0
        # (read index, round, readers) waiting for this member to apply that far
        self._applied_waiters: list[tuple[int, int, list[asyncio.Future[None]]]] = []

    def wait(self, fut: asyncio.Future[None]) -> None:
        """Resolve `fut` once a read may see everything committed before this call."""
        self._waiters.append(fut)
        if self._round is None:
            self._start_round()

    def _start_round(self) -> None:
        self._seq += 1
        rnd = _ReadRound(self._seq.to_bytes(8, "big"), self._waiters, time.monotonic(),
                         self._timeout)
        self._waiters = []
        self._round = rnd
        self._ask(rnd)

    def _ask(self, rnd: _ReadRound) -> None:
        try:
            self._raw.read_index(rnd.ctx)
        except ReadIndexDropped:
            return  # no leader yet: the tick retries
        self._wake()

    def on_read_states(self, states: list[ReadState]) -> None:
        rnd = self._round
        for rs in states:
            if rnd is None or rs.request_ctx != rnd.ctx or rnd.index >= 0:
                continue  # an answer to a round that already ended
            rnd.index = rs.index
            if self._applied_index() >= rs.index:
                self._finish_round(None)
            else:
                bisect.insort(self._applied_waiters, (rs.index, self._seq, rnd.waiters))
                self._round = None
                if self._waiters:
                    self._start_round()

    def _finish_round(self, err: EtcdError | None) -> None:
        rnd = self._round
        assert rnd is not None
        self._round = None
        resolve(rnd.waiters, err)
        if self._waiters and not self._stopping():
            self._start_round()

    def on_tick(self, now: float) -> None:
        rnd = self._round
        if rnd is not None and rnd.index < 0:
            if now >= rnd.deadline:
                if self._ops is not None:
                    self._ops.read_index_failed(self._timeout)
                self._finish_round(errors.TIMEOUT())
            elif now >= rnd.retry_at:
                if self._ops is not None:
                    self._ops.read_index_slow(rnd.ctx, READ_INDEX_RETRY)
                rnd.retry_at = now + READ_INDEX_RETRY
                self._ask(rnd)

    def on_leader_change(self, old: int, new: int) -> None:
        rnd = self._round
        if rnd is not None and rnd.index < 0:
            if old == 0 and new:
                self._ask(rnd)  # asked while there was no leader: ask now
            else:
                self._finish_round(errors.LEADER_CHANGED())

    def release(self, applied: int) -> None:
        """This member applied up to `applied`: readers waiting for that may go."""
        waiting = self._applied_waiters
        while waiting and waiting[0][0] <= applied:
            resolve(waiting.pop(0)[2], None)

    def fail(self, err: EtcdError) -> None:
        rnd = self._round
        if rnd is not None:
            resolve(rnd.waiters, err)
            self._round = None
        resolve(self._waiters, err)
        self._waiters = []
        for _, _, waiters in self._applied_waiters:
            resolve(waiters, err)
        self._applied_waiters = []


def resolve(waiters: list[asyncio.Future[None]], err: EtcdError | None) -> None:
    for fut in waiters:
        if fut.done():
            continue
        if err is None:
            fut.set_result(None)
        else:
            fut.set_exception(err)
