"""What a leader knows about each follower's log, and how it paces appends."""

from __future__ import annotations

from collections import deque
from enum import IntEnum


class ProgressState(IntEnum):
    PROBE = 0  # next is a guess: one append in flight at a time until it is acknowledged
    REPLICATE = 1  # follower is caught up: stream appends, up to max_inflight at once
    SNAPSHOT = 2  # a snapshot is on its way: no appends until it is reported or acked


class Progress:
    __slots__ = (
        "inflights",
        "is_learner",
        "match",
        "max_inflight",
        "next",
        "pending_snapshot",
        "probe_sent",
        "recent_active",
        "state",
    )

    def __init__(
        self,
        next_index: int,
        max_inflight: int,
        *,
        match: int = 0,
        is_learner: bool = False,
        recent_active: bool = False,
    ) -> None:
        self.match = match  # highest index known to be in the follower's log
        self.next = next_index  # index of the next entry to send
        self.state = ProgressState.PROBE
        self.pending_snapshot = 0  # index of the snapshot being sent, in SNAPSHOT state
        self.recent_active = recent_active  # heard from it since the last quorum check
        self.probe_sent = False  # PROBE: an append is unanswered, wait before the next
        # REPLICATE: last index of each append in flight, oldest first.
        self.inflights: deque[int] = deque()
        self.max_inflight = max_inflight
        self.is_learner = is_learner

    def _reset_state(self, state: ProgressState) -> None:
        self.probe_sent = False
        self.pending_snapshot = 0
        self.state = state
        self.inflights.clear()

    def become_probe(self) -> None:
        if self.state == ProgressState.SNAPSHOT:
            pending = self.pending_snapshot
            self._reset_state(ProgressState.PROBE)
            self.next = max(self.match + 1, pending + 1)
        else:
            self._reset_state(ProgressState.PROBE)
            self.next = self.match + 1

    def become_replicate(self) -> None:
        self._reset_state(ProgressState.REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, snapshot_index: int) -> None:
        self._reset_state(ProgressState.SNAPSHOT)
        self.pending_snapshot = snapshot_index

    def maybe_update(self, index: int) -> bool:
        """The follower acknowledged `index`; False if that is old news."""
        updated = False
        if self.match < index:
            self.match = index
            updated = True
            self.probe_sent = False
        if self.next <= index:
            self.next = index + 1
        return updated

    def maybe_decrease_to(self, rejected: int, match_hint: int) -> bool:
        """An append with previous index `rejected` was refused; the follower's
        log can only match up to match_hint. False if the rejection is stale."""
        if self.state == ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, match_hint + 1), self.match + 1, 1)
        self.probe_sent = False
        return True

    def is_paused(self) -> bool:
        state = self.state
        if state == ProgressState.REPLICATE:
            return len(self.inflights) >= self.max_inflight
        if state == ProgressState.PROBE:
            return self.probe_sent
        return True

    def free_inflights_to(self, index: int) -> None:
        inflights = self.inflights
        while inflights and inflights[0] <= index:
            inflights.popleft()

    def free_first_inflight(self) -> None:
        if self.inflights:
            self.inflights.popleft()

    def __repr__(self) -> str:
        return (
            f"Progress({self.state.name} match={self.match} next={self.next}"
            f"{' learner' if self.is_learner else ''}"
            f"{' pending_snapshot=' + str(self.pending_snapshot) if self.pending_snapshot else ''}"
            f"{'' if self.recent_active else ' inactive'} inflight={len(self.inflights)})"
        )
