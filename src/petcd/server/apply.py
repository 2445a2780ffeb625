"""The apply path: committed log entries, in log order, applied to the store in ONE
LMDB write transaction per batch, with the index of the last entry stored in that
same transaction (so a crash never half-applies a batch, and replaying entries that
are already applied is recognised and skipped)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Protocol

from petcd.errors import EtcdError
from petcd.mvcc.backend import Backend
from petcd.mvcc.types import KVEvent
from petcd.server import proposal as P
from petcd.server.kv_apply import KVApplier
from petcd.server.metrics import Metrics
from petcd.server.proposal import Committed, Result, Stamp

log = logging.getLogger("petcd.apply")


class WaitPhysical:
    """The result of a `physical` compaction whose removal of old records continues in
    later batches: its caller is answered once the store is physically compacted."""

    __slots__ = ("response",)

    def __init__(self, response: Any) -> None:
        self.response = response


# Called on the apply thread right after a batch commits, with the batch's events (in
# revision order) and the store revision after it. Listeners must be quick and must not
# touch asyncio objects directly (use loop.call_soon_threadsafe).
CommitListener = Callable[[list[KVEvent], int], None]
Handler = Callable[[Any, Any], Any]


class _AuthStore(Protocol):
    enabled: bool


class AuthGate(Protocol):
    """petcd.auth.apply.AuthApplier as the apply path sees it."""

    @property
    def store(self) -> _AuthStore: ...

    def gate(self, kind: str, request: Any, stamp: Stamp) -> EtcdError | None: ...


class Applier:
    def __init__(self, backend: Backend, kv: KVApplier, metrics: Metrics | None = None) -> None:
        self._backend = backend
        self._kv = kv
        self.metrics = metrics
        self._handlers: dict[str, Callable[[Any, Any], Any]] = {
            P.PUT: kv.put,
            P.DELETE_RANGE: kv.delete_range,
            P.TXN: kv.txn,
            P.COMPACTION: kv.compact,
        }
        self.applied_index, self.applied_term = backend.consistent_index()
        self._commit_listeners: list[CommitListener] = []
        self._wrappers: dict[str, list[Callable[[Handler], Handler]]] = {}
        # Held for every write batch; whoever needs the backend without a batch open
        # (defragment) takes it to pause the apply path between batches.
        self.exclusive = threading.Lock()
        # Log index of the entry being applied (for handlers that need it).
        self.index = 0
        # The permission gate of applied client requests while auth is enabled.
        self.auth: AuthGate | None = None

    def register(self, kind: str, handler: Callable[[Any, Any], Any]) -> None:
        """Route committed InternalRequests of `kind` (a oneof field name) to
        handler(batch, request) -> response; it raises EtcdError with no effect."""
        assert kind not in self._handlers, f"two apply handlers for {kind}"
        for wrapper in self._wrappers.get(kind, ()):
            handler = wrapper(handler)
        self._handlers[kind] = handler

    @contextlib.asynccontextmanager
    async def paused(self) -> AsyncIterator[None]:
        """From the event loop: hold the apply path (`exclusive`) for the block, once the
        batch being applied is done (waited for off the loop). Whoever replaces or
        rewrites the backend file (defragment, a snapshot from the leader) holds it, so
        the two never overlap and no batch is open meanwhile."""
        acquired = asyncio.get_running_loop().run_in_executor(None, self.exclusive.acquire)
        try:
            await asyncio.shield(acquired)
        except asyncio.CancelledError:
            acquired.add_done_callback(lambda _: self.exclusive.release())
            raise
        try:
            yield
        finally:
            self.exclusive.release()

    def wrap(self, kind: str, wrapper: Callable[[Handler], Handler]) -> None:
        """Put wrapper(handler) in place of the handler of `kind` (a gate in front of
        it, as alarms refuse requests), now or when `kind` gets registered."""
        self._wrappers.setdefault(kind, []).append(wrapper)
        if kind in self._handlers:
            self._handlers[kind] = wrapper(self._handlers[kind])

    def add_commit_listener(self, listener: CommitListener) -> None:
        self._commit_listeners.append(listener)

    def apply(self, entries: Sequence[Committed]) -> list[Result]:
        """Apply a batch; one result per entry (response, EtcdError, or None when the
        entry was empty or already applied). Runs on the apply thread; the only writer."""
        results: list[Result] = [None] * len(entries)
        applied = self.applied_index
        todo = [(i, e) for i, e in enumerate(entries) if e.index > applied]
        if not todo:
            return results
        with self.exclusive:
            return self._apply(todo, results)

    def _apply(self, todo: list[tuple[int, Committed]], results: list[Result]) -> list[Result]:
        handlers = self._handlers
        auth = self.auth
        batch = self._backend.begin_write()
        try:
            for i, entry in todo:
                kind, request = entry.decode()
                if kind is None:
                    continue
                handler = handlers.get(kind)
                if handler is None:
                    log.error("no apply handler for %s (entry %d); skipped", kind, entry.index)
                    continue
                self.index = entry.index
                if auth is not None and auth.store.enabled:
                    refused = auth.gate(kind, request, entry.stamp)
                    if refused is not None:
                        results[i] = refused
                        continue
                try:
                    results[i] = handler(batch, request)
                except EtcdError as e:
                    results[i] = e
                else:
                    if kind == P.COMPACTION and getattr(request, "physical", False) and \
                            self._kv.store.compaction_pending:
                        results[i] = WaitPhysical(results[i])
            # A compaction's physical part advances by one budget per batch.
            self._kv.store.compact_step(batch, self._kv.compact_budget)
            last = todo[-1][1]
            batch.set_consistent_index(last.index, last.term)
            started = time.perf_counter()
            batch.commit()  # synced: the durability point of every entry in the batch
        except BaseException:
            batch.abort()  # a no-op after a failed commit (the batch is finished)
            raise
        metrics = self.metrics
        if metrics is not None:
            metrics.backend_commit.observe(time.perf_counter() - started)
            metrics.apply_batch_size.observe(len(todo))
        self.applied_index, self.applied_term = last.index, last.term
        if self._commit_listeners and batch.events:
            revision = self._kv.store.current_revision
            for listener in self._commit_listeners:
                listener(batch.events, revision)
        return results

    @property
    def compaction_pending(self) -> bool:
        """Old records of a compaction are still to be removed (committed state)."""
        return not self._kv.store.physically_compacted

    def compaction_step(self) -> None:
        """One batch of physical compaction only, for when no writes come to carry it."""
        with self.exclusive, self._backend.begin_write() as batch:
            self._kv.store.compact_step(batch, self._kv.compact_budget)
