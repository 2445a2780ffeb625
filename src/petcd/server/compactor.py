"""Auto-compaction (--auto-compaction-mode / --auto-compaction-retention), with etcd 3.4's
schedule, run by the leader through the log like any Compact request.

- periodic, retention P: every P/10 (P capped at 1 h for the interval) the current
  revision is sampled into a window of the last P/interval + 1 samples; once P has passed
  since the last success (then every min(P, 1 h)), the oldest sample, the revision of
  about P ago, is compacted. A failure is retried at the next sample.
- revision, retention N: every 5 minutes, current revision - N is compacted unless it
  is not positive or was already compacted.

Only the leader compacts: on other members the schedule keeps sampling but skips the
compaction (etcd pauses it). The policies are plain classes driven by `now`, so tests
step them with a scripted clock; `AutoCompactor` runs one on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from petcd import errors
from petcd.errors import EtcdError
from petcd.server.background import Background

log = logging.getLogger("petcd.compactor")

REVISION_INTERVAL = 300.0  # etcd's fixed 5 minutes between revision-mode attempts
_MAX_INTERVAL = 3600.0


class PeriodicPolicy:
    def __init__(self, period: float, now: float) -> None:
        self.period = period
        self.retry_interval = min(period, _MAX_INTERVAL) / 10
        self.compact_interval = min(period, _MAX_INTERVAL)
        self.window = int(period / self.retry_interval) + 1
        self._revs: list[int] = []
        self._last_success = now
        self._base = period  # the first compaction waits a whole period

    def describe(self) -> dict[str, object]:
        return {"compact-period": f"{self.period:g}s"}

    def sample(self, rev: int) -> None:
        self._revs.append(rev)
        if len(self._revs) > self.window:
            del self._revs[0]

    def due(self, now: float) -> int | None:
        """The revision to compact now, or None (called one retry interval after sample)."""
        if now - self._last_success < self._base:
            return None
        self._base = self.compact_interval
        return self._revs[0]

    def succeeded(self, now: float) -> None:
        self._last_success = now


class RevisionPolicy:
    retry_interval = REVISION_INTERVAL

    def __init__(self, retention: int) -> None:
        self.retention = retention
        self._prev = 0
        self._current = 0
        self._pending = 0

    def describe(self) -> dict[str, object]:
        return {"revision-compaction-retention": self.retention}

    def sample(self, rev: int) -> None:
        self._current = rev

    def due(self, now: float) -> int | None:
        rev = self._current - self.retention
        if rev <= 0 or rev == self._prev:
            return None
        self._pending = rev
        return rev

    def succeeded(self, now: float) -> None:
        self._prev = self._pending


Policy = PeriodicPolicy | RevisionPolicy


def make_policy(mode: str, retention: float, now: float) -> Policy | None:
    """The policy for the parsed flags (retention: seconds for periodic, revisions for
    revision mode); None when auto-compaction is off (retention 0)."""
    if retention <= 0:
        return None
    if mode == "revision":
        return RevisionPolicy(int(retention))
    return PeriodicPolicy(retention, now)


class AutoCompactor(Background):
    """Runs a policy: sample, wait one interval, compact through `compact` if due and this
    member leads. `compact(rev)` proposes a CompactionRequest and raises EtcdError."""

    name = "auto-compactor"

    def __init__(self, policy: Policy, *, current_revision: Callable[[], int],
                 is_leader: Callable[[], bool],
                 compact: Callable[[int], Awaitable[None]],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self._rev = current_revision
        self._is_leader = is_leader
        self._compact = compact
        self._clock = clock
        self.compactions = 0  # successful (or already compacted) runs, for metrics/tests
        self.failures = 0

    async def _run(self) -> None:
        policy = self.policy
        while True:
            policy.sample(self._rev())
            await asyncio.sleep(policy.retry_interval)
            if not self._is_leader():
                continue  # etcd pauses the compactor on followers
            await self.step(self._clock())

    async def step(self, now: float) -> None:
        policy = self.policy
        rev = policy.due(now)
        if rev is None:
            return
        fields = {"fields": {"revision": rev, **policy.describe()}}
        log.info("starting auto compaction at revision %d", rev, extra=fields)
        started = time.monotonic()
        try:
            await self._compact(rev)
        except EtcdError as e:
            if e.kind is not errors.COMPACTED:  # already compacted counts as done
                log.warning("failed auto compaction at revision %d: %s (retrying in %gs)",
                            rev, e.message, policy.retry_interval,
                            extra={"fields": {**fields["fields"], "error": e.message}})
                self.failures += 1
                return
        self.compactions += 1
        policy.succeeded(now)
        took = time.monotonic() - started
        log.info("completed auto compaction at revision %d (took %.3fs)", rev, took,
                 extra={"fields": {**fields["fields"], "took": f"{took:.6f}s"}})
