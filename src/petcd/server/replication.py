"""The seam between the member and its log: what `Node` needs from whatever orders
proposals (the Raft driver, server/raftnode/). Whoever implements it applies committed
entries through `petcd.server.apply.Applier`, in log order, one backend write txn per
batch, and resolves each proposal's future with the apply result once its batch is
durable."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol

from google.protobuf.message import Message

from petcd.server.proposal import Result


class ReplicatedLog(Protocol):
    @property
    def term(self) -> int: ...

    @property
    def last_index(self) -> int:
        """Index of the last entry in the log."""
        ...

    @property
    def committed_index(self) -> int:
        """Index of the last entry known committed (StatusResponse.raftIndex)."""
        ...

    @property
    def applied_index(self) -> int: ...

    @property
    def stopped(self) -> bool: ...

    @property
    def leader_id(self) -> int:
        """The leader this member knows of (0: none known)."""
        ...

    @property
    def is_leader(self) -> bool: ...

    @property
    def is_learner(self) -> bool: ...

    def add_leader_listener(self, listener: Callable[[int, int], None]) -> None:
        """listener(leader_id, term) runs on the event loop whenever the known leader or
        term changes (leader 0: none), and once at start(). The lessor uses it to take
        over (and renew) leases when this member becomes leader."""
        ...

    def start(self) -> None: ...

    async def stop(self) -> None:
        """Refuse new proposals, finish what is committed, release the apply thread."""
        ...

    def propose(self, kind: str, raw: bytes, request: Message) -> asyncio.Future[Result]:
        """Resolves to the apply result (response message or EtcdError), or to
        errors.STOPPED / a leadership error when the proposal cannot be committed."""
        ...

    def read_barrier(self) -> Awaitable[None] | None:
        """None if a linearizable read may run now; else completes once this member has
        applied everything committed before the call (ReadIndex, batched), or raises the
        EtcdError to answer (timeout, leader changed, learner)."""
        ...
