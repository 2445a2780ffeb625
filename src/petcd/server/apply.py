"""The apply path: committed log entries, in log order, applied to the store in ONE
LMDB write transaction per batch, with the index of the last entry stored in that
same transaction (so a crash never half-applies a batch, and replaying entries that
are already applied is recognised and skipped)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from petcd.errors import EtcdError
from petcd.mvcc.backend import Backend
from petcd.server import proposal as P
from petcd.server.kv_apply import KVApplier
from petcd.server.proposal import Committed, Result

log = logging.getLogger("petcd.apply")


class Applier:
    def __init__(self, backend: Backend, kv: KVApplier) -> None:
        self._backend = backend
        self._handlers: dict[str, Callable[[Any, Any], Any]] = {
            P.PUT: kv.put,
            P.DELETE_RANGE: kv.delete_range,
            P.TXN: kv.txn,
            P.COMPACTION: kv.compact,
        }
        self.applied_index, self.applied_term = backend.consistent_index()

    def apply(self, entries: Sequence[Committed]) -> list[Result]:
        """Apply a batch; one result per entry (response, EtcdError, or None when the
        entry was empty or already applied). Runs on the apply thread; the only writer."""
        results: list[Result] = [None] * len(entries)
        applied = self.applied_index
        todo = [(i, e) for i, e in enumerate(entries) if e.index > applied]
        if not todo:
            return results
        handlers = self._handlers
        with self._backend.begin_write() as batch:
            for i, entry in todo:
                kind, request = entry.decode()
                if kind is None:
                    continue
                handler = handlers.get(kind)
                if handler is None:
                    log.error("no apply handler for %s (entry %d); skipped", kind, entry.index)
                    continue
                try:
                    results[i] = handler(batch, request)
                except EtcdError as e:
                    results[i] = e
            last = todo[-1][1]
            batch.set_consistent_index(last.index, last.term)
        self.applied_index, self.applied_term = last.index, last.term
        return results
