"""Learner auto-promotion (--experimental-learner-auto-promote, petcd's own opt-in; etcd
#15107): the leader promotes a learner through the log once it has caught up, by etcd's
own readiness rule for `member promote` (its match index at least 90% of the leader's
commit index, and the leader hearing from it). One promotion at a time; a refused one is
tried again at the next check."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from petcd.errors import EtcdError
from petcd.raft import Status
from petcd.server.background import Background

log = logging.getLogger("petcd.server")

READY_FRACTION = 0.9  # etcd's learner readiness for `member promote`


def ready_learners(status: Status) -> list[int]:
    """Learners the leader may promote now (none unless `status` is a leader's)."""
    return sorted(mid for mid, pr in status.progress.items()
                  if pr.is_learner and pr.recent_active
                  and pr.match >= READY_FRACTION * status.commit)


class LearnerPromoter(Background):
    name = "promoter"

    def __init__(self, *, status: Callable[[], Status], is_leader: Callable[[], bool],
                 promote: Callable[[int], Awaitable[object]], interval: float = 1.0) -> None:
        self._status = status
        self._is_leader = is_leader
        self._promote = promote
        self._interval = interval
        self.promoted: list[int] = []

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            if not self._is_leader():
                continue
            for member_id in ready_learners(self._status())[:1]:
                try:
                    await self._promote(member_id)
                except EtcdError as e:
                    log.info("auto-promotion of learner %x refused: %s", member_id, e.message)
                    continue
                log.info("promoted learner %x to voter (caught up with the leader)",
                         member_id, extra={"fields": {"member-id": f"{member_id:x}"}})
                self.promoted.append(member_id)
