"""A thread that runs blocking jobs (fdatasync, LMDB commits) in order for the event loop.

What `loop.run_in_executor(ThreadPoolExecutor(1), ...)` does, with less work per call on
the loop thread (no concurrent.futures.Future to chain, a C queue): the Raft driver makes
two such calls per batch of writes, on its hot path.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_Job = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[..., Any], tuple[Any, ...]]


def _settle(fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if fut.cancelled():
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)


class Worker:
    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()
        self._closed = False

    def run(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Run fn(*args) on the thread after the jobs before it; await the result."""
        if self._closed:
            raise RuntimeError("worker is shut down")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._jobs.put((loop, fut, fn, args))
        return fut

    def _main(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            loop, fut, fn, args = job
            try:
                value, ok = fn(*args), True
            except BaseException as e:  # handed to the awaiting coroutine
                value, ok = e, False
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                loop.call_soon_threadsafe(_settle, fut, ok, value)

    def shutdown(self) -> None:
        """Finish the queued jobs, then end the thread."""
        if not self._closed:
            self._closed = True
            self._jobs.put(None)
            self._thread.join()
