"""`Committer`: the thread that begins and ends every top-level LMDB write transaction of
the backend (`petcd-backend`), or, without a thread of its own, the caller's thread.

LMDB ties a write transaction's lock to the thread that began it, so with a thread of its
own every begin, commit and abort runs there; the applying thread only writes and reads
through the transaction in between. A commit can be started there without waiting for it
(`start()`); the backend takes its outcome with `settle()` before it next touches the
applied state. What was applied, and what is committed, is the backend's business.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import lmdb

_T = TypeVar("_T")


class Committer:
    def __init__(self, background: bool) -> None:
        self._pool: ThreadPoolExecutor | None = (
            ThreadPoolExecutor(1, thread_name_prefix="petcd-backend") if background else None)
        # The commit start() handed to the thread (its duration in seconds), until
        # settle() takes its outcome.
        self.in_flight: Future[float] | None = None

    @property
    def background(self) -> bool:
        """Commits run on a thread of their own (else they block the caller)."""
        return self._pool is not None

    def submit(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> Future[_T]:
        """Queue `fn` on the thread (tests use it to hold commits back)."""
        if self._pool is None:
            raise RuntimeError("the backend has no commit thread")
        return self._pool.submit(fn, *args, **kwargs)

    def begin(self, env: lmdb.Environment) -> lmdb.Transaction[bytes]:
        """A new top-level write transaction, begun on the thread."""
        if self._pool is None:
            return env.begin(write=True)
        return self._pool.submit(env.begin, write=True).result()

    def end(self, txn: lmdb.Transaction[bytes], *, commit: bool) -> None:
        """Commit (synced) or abort a top-level write transaction on the thread that
        began it, and wait for it."""
        end = txn.commit if commit else txn.abort
        if self._pool is None:
            end()
        else:
            self._pool.submit(end).result()

    def start(self, txn: lmdb.Transaction[bytes], done: Callable[[], object] | None) -> None:
        """Commit `txn` on the thread without waiting; `done()` is called there when the
        commit ended. One at a time: settle() the previous one first."""
        if self._pool is None or self.in_flight is not None:
            raise RuntimeError("no commit thread, or a commit in flight")
        self.in_flight = self._pool.submit(_commit, txn, done)

    def settle(self) -> float | None:
        """Wait for the commit in flight, if any: its duration in seconds (None: there
        was none), or the exception it raised. Either way it is no longer in flight."""
        fut = self.in_flight
        if fut is None:
            return None
        try:
            return fut.result()
        finally:
            self.in_flight = None

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()


def _commit(txn: lmdb.Transaction[bytes], done: Callable[[], object] | None) -> float:
    started = time.perf_counter()
    try:
        txn.commit()
        return time.perf_counter() - started
    finally:
        if done is not None:
            with contextlib.suppress(RuntimeError):  # (its event loop has closed)
                done()
