"""Load from worker processes, for petcdctl's check commands and petcd-benchmark. One
Python client process tops out well below a member, so the load comes from several
spawned processes (never forked: gRPC does not survive a fork of a process that used
it), each with its share of the clients and of the rate (`split`), paced with burst 1
(`Pacer`). `run` starts them, releases them together once every one is connected,
passes on their progress and gathers what each sends back; a worker talks to it
through its `Link`."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any, cast

PROGRESS_EVERY = 0.1  # seconds between a worker's progress reports
READY_TIMEOUT = 120.0  # for every worker to connect (each dial has its own, shorter)


class WorkerFailed(OSError):
    """A worker could not start its load (its reason), failed in it, or died."""


def split(n: int, parts: int) -> list[int]:
    """n shared among `parts` as evenly as can be (the first ones get one more)."""
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


class Pacer:
    """At most `rate` calls a second for its callers together (0: no limit), burst 1:
    a call that comes late is not made up for (golang.org/x/time/rate with burst 1, as
    etcd's tools pace). `start`: the earliest time of the first call."""

    def __init__(self, rate: float, start: float = 0.0) -> None:
        self.gap = 1.0 / rate if rate > 0 else 0.0
        self.next_at = start

    async def wait(self) -> float:
        """Wait for this call's turn; returns its time (time.monotonic's clock)."""
        now = time.monotonic()
        if not self.gap:
            return now
        at = max(now, self.next_at)
        self.next_at = at + self.gap
        if at > now:
            await asyncio.sleep(at - now)
        return at


class Link:
    """A worker's end of its pipe to `run`: ready() once connected (or failed(reason)),
    then `await start()` gives (start, stop) when all are released; add() counts each
    request done (reported every PROGRESS_EVERY when asked for), finish(result) ends."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self.done = 0
        self._reported = 0
        self._reporter: asyncio.Task[None] | None = None

    def ready(self) -> None:
        self._conn.send(("ready",))

    def failed(self, reason: str) -> None:
        self._conn.send(("failed", reason))

    async def start(self, progress: bool = False) -> tuple[float, float]:
        """Wait for the release (the loop keeps running meanwhile): (start, stop), on
        time.monotonic's clock, which every process of the machine shares; stop is 0
        when the load has no duration."""
        start, stop = await asyncio.to_thread(self._conn.recv)
        if progress:
            self._reporter = asyncio.get_running_loop().create_task(self._report_loop())
        return start, stop

    def add(self, n: int = 1) -> None:
        self.done += n

    def _report(self) -> None:
        if self.done > self._reported:
            self._conn.send(("progress", self.done - self._reported))
            self._reported = self.done

    async def _report_loop(self) -> None:
        while True:
            await asyncio.sleep(PROGRESS_EVERY)
            self._report()

    async def finish(self, result: Any) -> None:
        if self._reporter is not None:
            self._reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reporter
            self._report()
        self._conn.send(("done", result))


def _child(conn: Connection, target: Callable[[Link, Any], None], job: Any) -> None:
    link = Link(conn)
    try:
        target(link, job)
    except BaseException as e:  # the parent says why instead of "a worker died"
        with contextlib.suppress(OSError):
            link.failed(repr(e))
        raise


def run(target: Callable[[Link, Any], None], jobs: Sequence[Any], *, duration: float = 0.0,
        on_start: Callable[[float], None] | None = None,
        on_progress: Callable[[int], None] | None = None,
        on_idle: Callable[[], None] | None = None) -> list[Any]:
    """target(link, job) in a spawned process per job (target: a module-level function).
    Once all are ready they are released together (start = now + 50 ms, stop = start +
    duration, or 0) and on_start(start) is called; on_progress(n) for each report of n
    more requests done, on_idle() when nothing came for PROGRESS_EVERY. Returns what
    each worker finished with, in job order; raises WorkerFailed."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    conns: list[Connection] = []
    procs = []
    ended = False
    try:
        for job in jobs:
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_child, args=(child, target, job), daemon=True)
            p.start()
            child.close()
            conns.append(parent)
            procs.append(p)
        ready_by = time.monotonic() + READY_TIMEOUT
        for c in conns:
            if not c.poll(max(0.0, ready_by - time.monotonic())):
                raise WorkerFailed(f"a worker did not connect within {READY_TIMEOUT:.0f} s")
            _expect(c, "ready")
        start = time.monotonic() + 0.05
        for c in conns:
            c.send((start, start + duration if duration else 0.0))
        if on_start is not None:
            on_start(start)
        results: dict[Connection, Any] = {}
        while len(results) < len(conns):
            ready = wait([c for c in conns if c not in results], PROGRESS_EVERY)
            if not ready and on_idle is not None:
                on_idle()
            for got in ready:
                c = cast(Connection, got)
                msg = _expect(c, "progress", "done")
                if msg[0] == "progress":
                    if on_progress is not None:
                        on_progress(msg[1])
                else:
                    results[c] = msg[1]
        ended = True
        return [results[c] for c in conns]
    finally:
        for p in procs:
            p.join(10 if ended else 0)  # (after a failure the others are not waited for)
            if p.is_alive():
                p.kill()
                p.join()


def _expect(c: Connection, *kinds: str) -> Any:
    try:
        msg = c.recv()
    except EOFError:
        raise WorkerFailed("a worker died") from None
    if msg[0] == "failed":
        raise WorkerFailed(msg[1])
    assert msg[0] in kinds, msg
    return msg
