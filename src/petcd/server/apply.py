"""The apply path: committed log entries, in log order, applied to the store as one
backend batch, with the index of the last entry stored with them (so a crash never
half-applies a batch, and replaying entries that are already applied is recognised
and skipped). Runs on the event loop thread, where reads of the applied state run
too; the backend commits its write transaction in batches (see mvcc/backend.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Protocol

from petcd.errors import EtcdError
from petcd.mvcc.backend import Backend
from petcd.mvcc.types import KVEvent
from petcd.server import proposal as P
from petcd.server.kv_requests import KVRequests
from petcd.server.metrics import Metrics
from petcd.server.proposal import Committed, Result, Stamp

log = logging.getLogger("petcd.apply")


class WaitPhysical:
    """The result of a `physical` compaction whose removal of old records continues in
    later batches: its caller is answered once the store is physically compacted."""

    __slots__ = ("response",)

    def __init__(self, response: Any) -> None:
        self.response = response


# Called on the event loop right after a batch is applied, with the batch's events (in
# revision order) and the store revision after it. Listeners must be quick.
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
    def __init__(self, backend: Backend, kv: KVRequests, metrics: Metrics | None = None,
                 warn_after: float = 0.1) -> None:
        self._backend = backend
        # --experimental-warning-apply-duration: a batch applied slower than this is logged.
        self.warn_after = warn_after
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
        # A list while what is applied must not be seen yet (its WAL entry not synced):
        # the batches' events wait here for notify_held().
        self.held: list[tuple[list[KVEvent], int]] | None = None
        self._wrappers: dict[str, list[Callable[[Handler], Handler]]] = {}
        # Held by whoever needs the backend with nothing applied meanwhile (defragment,
        # a snapshot install); the apply loop takes it around each batch.
        self.exclusive = asyncio.Lock()
        if metrics is not None:
            backend.commit_hooks.append(metrics.backend_commit.observe)
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
        """Hold the apply path (`exclusive`) for the block, with everything applied so
        far committed. Whoever replaces or rewrites the backend file (defragment, a
        snapshot from the leader) holds it, so the two never overlap and nothing is
        applied or committed meanwhile."""
        async with self.exclusive:
            self._backend.commit()
            yield

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
        entry was empty or already applied). The only writer; not while `exclusive` is
        held by someone else (the apply loop takes it)."""
        results: list[Result] = [None] * len(entries)
        applied = self.applied_index
        if entries and entries[0].index > applied:  # (the usual case: all of them new)
            todo = list(enumerate(entries))
        else:
            todo = [(i, e) for i, e in enumerate(entries) if e.index > applied]
        if not todo:
            return results
        return self._apply(todo, results)

    def _apply(self, todo: list[tuple[int, Committed]], results: list[Result]) -> list[Result]:
        started = time.perf_counter()
        handlers = self._handlers
        auth = self.auth
        batch = self._backend.begin_write()
        batch.ops = len(todo)
        try:
            for i, entry in todo:
                request = entry.request  # (this member's own: parsed already)
                if request is not None:
                    kind = entry.kind
                else:
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
                            self._kv.store.compaction_left_in_batch:
                        results[i] = WaitPhysical(results[i])
            last = todo[-1][1]
            batch.set_consistent_index(last.index, last.term)
            batch.commit()  # applied: what reads see from now on (on disk: when batched)
        except BaseException:
            batch.abort()  # a no-op after a failed commit (the batch is finished)
            raise
        metrics = self.metrics
        if metrics is not None:
            metrics.apply_batch_size.observe(len(todo))
        took = time.perf_counter() - started
        if took > self.warn_after > 0:
            if metrics is not None:
                metrics.slow_apply.inc()
            log.warning("apply request took too long: %d entries up to index %d in %.3fs "
                        "(expected %gs)", len(todo), last.index, took, self.warn_after,
                        extra={"fields": {"took": f"{took:.6f}s", "entries": len(todo),
                                          "expected-duration": f"{self.warn_after:g}s"}})
        self.applied_index, self.applied_term = last.index, last.term
        if self._commit_listeners and batch.events:
            revision = self._kv.store.current_revision
            if self.held is not None:
                self.held.append((batch.events, revision))
                return results
            for listener in self._commit_listeners:
                listener(batch.events, revision)
        return results

    def notify_held(self) -> None:
        """Tell the commit listeners what was applied while `held` (and stop holding)."""
        held, self.held = self.held, None
        for events, revision in held or ():
            for listener in self._commit_listeners:
                listener(events, revision)

    @property
    def compaction_pending(self) -> bool:
        """Old records of a compaction are still to be removed (committed state; the
        store's compaction_left_in_batch is the open batch's view)."""
        return not self._kv.store.physically_compacted

    def compaction_step(self) -> None:
        """One batch of a compaction's physical part: at most
        --experimental-compaction-batch-limit index keys and a few milliseconds (the
        apply loop runs these between write batches, a sleep interval apart)."""
        kv = self._kv
        with self._backend.begin_write() as batch:
            kv.store.compact_step(batch, kv.compact_budget,
                                  deadline=time.perf_counter() + kv.compact_step_time)
