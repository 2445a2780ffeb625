"""Imported at start-up by a petcd server that `bench/write_path.py --clients N` launches
(this directory is put on its PYTHONPATH): wraps the functions a batch of writes passes
through so that each records (event, perf_counter_ns, the thread's CPU ns, a count) when
it runs, and writes the records to $PETCD_STAGES_OUT at exit. The CPU time is the
loop thread's, with the time it waited in the run queue (/proc/thread-self/schedstat):
between two of its events, wall time minus both is time the loop was idle. Not part of
petcd."""

from __future__ import annotations

import atexit
import functools
import inspect
import json
import os
import sys
import threading
import time
from typing import Any

_OUT = os.environ.get("PETCD_STAGES_OUT")
_events: list[tuple[str, int, int, int, int, int]] = []
_now = time.perf_counter_ns
_main = threading.get_ident()
_fd = -1  # the loop thread's /proc schedstat: CPU ns, run-queue wait ns, timeslices


def _sched() -> tuple[int, int]:
    global _fd
    if _fd < 0:
        _fd = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
    # (its CPU field lags for a running thread; thread_time_ns does not)
    return time.thread_time_ns(), int(os.pread(_fd, 100, 0).split()[1])


def _rec(name: str, n: int = 0, last: int = 0) -> None:
    # (CPU and run-queue wait only on the loop thread; -1 elsewhere)
    run, wait = _sched() if threading.get_ident() == _main else (-1, -1)
    _events.append((name, _now(), run, wait, n, last))


def _wrap(cls: Any, name: str, before: str | None, after: str | None,
          count: Any = None) -> None:
    """count(*args) -> int | None, or (int, int): the event's number (and a log index);
    None: not recorded."""
    fn = getattr(cls, name)
    static = isinstance(cls.__dict__.get(name), staticmethod)
    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def traced_async(*args: Any, **kw: Any) -> Any:
            n = 0 if count is None else count(*args, **kw)
            if n is not None and before:
                _rec(before, *_pair(n))
            r = await fn(*args, **kw)
            if n is not None and after:
                _rec(after, *_pair(n))
            return r
        setattr(cls, name, traced_async)
        return

    @functools.wraps(fn)
    def traced(*args: Any, **kw: Any) -> Any:
        n = 0 if count is None else count(*args, **kw)
        if n is not None and before:
            _rec(before, *_pair(n))
        r = fn(*args, **kw)
        if n is not None and after:
            _rec(after, *_pair(n))
        return r
    setattr(cls, name, staticmethod(traced) if static else traced)


def _pair(n: int | tuple[int, int]) -> tuple[int, int]:
    return n if isinstance(n, tuple) else (n, 0)


def _last(entries: Any) -> int | tuple[int, int] | None:
    return (len(entries), entries[-1].index) if entries else None


def _install() -> None:
    from petcd.api.h2.connection import H2Protocol
    from petcd.mvcc.backend import Backend
    from petcd.server.raftnode import RaftDriver
    from petcd.server.raftnode.applying import ApplyQueue
    from petcd.server.raftnode.ready import ReadyLoop
    from petcd.server.raftnode.walwriter import LoneSave, WalWriter

    _wrap(H2Protocol, "data_received", "recv", None, lambda self, data: len(data))
    _wrap(RaftDriver, "propose", "propose", None)
    _wrap(ReadyLoop, "_flush_proposals", "flush", None,
          lambda self: len(self._d.proposals.queue) or None)
    _wrap(ReadyLoop, "_handle_ready", "ready", "ready_end", lambda self, rd: _last(rd.entries) or 0)
    _wrap(ReadyLoop, "_run_inline", "inline", "inline_end")
    _wrap(WalWriter, "save", "save", "save_end",
          lambda self, hs, entries, *a, **k: _last(entries))
    if hasattr(WalWriter, "save_piped"):  # (the pipelined lone voter)
        _wrap(WalWriter, "save_piped", "save", "save_end",
              lambda self, hs, entries, *a, **k: _last(entries))
    _wrap(WalWriter, "write_lone", "save", "save_end",
          lambda self, hs, entries, *a, **k: _last(entries))
    from petcd.wal.aio import AioSync
    reap = AioSync.reap

    def counted_reap(self: Any) -> Any:
        done = reap(self)
        if done:
            _rec("reap", len(done))  # (fdatasyncs seen completed at once)
        return done
    AioSync.reap = counted_reap  # type: ignore[method-assign]
    _wrap(LoneSave, "finish", None, "synced")
    save = WalWriter.save

    def save_inline(self: Any, *args: Any, **kw: Any) -> Any:
        # (a lone write synced inline, on the loop thread: done when save returns)
        before = self.inline_saves
        r = save(self, *args, **kw)
        if self.inline_saves != before:
            _rec("synced")
        return r
    WalWriter.save = save_inline  # type: ignore[method-assign]
    _wrap(ReadyLoop, "_hand_out", "hand_out", None, lambda self, entries: _last(entries))
    _wrap(ApplyQueue, "_apply_batch", "apply", "apply_end", lambda self, entries: _last(entries))
    _wrap(RaftDriver, "_after_apply", None, "answered",
          lambda self, entries, results, local, fwd: len(local))
    _wrap(H2Protocol, "_flush", "sent", None, lambda self: len(self.h2.out) or None)
    _wrap(ApplyQueue, "_commit_backend", "commit_soon", None)
    _wrap(ApplyQueue, "_settle", "settle", None)
    def commit_in_flight(b: Any) -> bool:
        c = getattr(b, "_committer", None)  # (mvcc/committer.py; before it, _in_flight)
        return getattr(c, "in_flight", getattr(b, "_in_flight", None)) is not None

    _wrap(Backend, "_write_txn", "txn_begin", "txn_begun",
          lambda self: None if self._txn is not None and not commit_in_flight(self) else 0)
    if hasattr(Backend, "_commit_on_thread"):
        _wrap(Backend, "_commit_on_thread", "commit_thread", "commit_thread_end")
    else:
        import petcd.mvcc.committer as committer

        class _Module:  # (_wrap wraps attributes of a class; the module's function here)
            _commit = staticmethod(committer._commit)
        _wrap(_Module, "_commit", "commit_thread", "commit_thread_end")
        committer._commit = _Module._commit  # type: ignore[assignment]


def _dump() -> None:
    if _OUT:
        with open(_OUT, "w") as f:
            json.dump(_events, f)


if os.environ.get("PETCD_SRC"):
    # Another checkout's petcd: ahead of the editable install's import hook.
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
    sys.path.insert(0, os.environ["PETCD_SRC"])
if _OUT:
    _install()
    atexit.register(_dump)
