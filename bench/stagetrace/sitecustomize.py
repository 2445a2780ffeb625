"""Imported at start-up by a petcd server that bench/write_path.py launches (this
directory is put on its PYTHONPATH): wraps the functions a lone write passes through so
that each records (stage, perf_counter_ns) when it runs, and writes the records to
$PETCD_STAGES_OUT at exit. Not part of petcd."""

from __future__ import annotations

import atexit
import functools
import json
import os
import sys
import time
from typing import Any

_OUT = os.environ.get("PETCD_STAGES_OUT")
_events: list[tuple[str, int]] = []
_now = time.perf_counter_ns


def _wrap(cls: Any, name: str, before: str | None, after: str | None,
          when: Any = None) -> None:
    fn = getattr(cls, name)
    if getattr(fn, "__code__", None) is not None and fn.__code__.co_flags & 0x80:  # async
        raise TypeError(f"{name} is a coroutine function")

    @functools.wraps(fn)
    def traced(*args: Any, **kw: Any) -> Any:
        on = when is None or when(*args, **kw)
        if on and before:
            _events.append((before, _now()))
        r = fn(*args, **kw)
        if on and after:
            _events.append((after, _now()))
        return r
    setattr(cls, name, traced)


def _install() -> None:
    from petcd.api.h2.connection import H2Protocol
    from petcd.server.raftnode import RaftDriver
    from petcd.server.raftnode.applying import ApplyQueue
    from petcd.server.raftnode.ready import ReadyLoop
    from petcd.wal.storage import MemberStorage

    _wrap(H2Protocol, "data_received", "recv", None)
    _wrap(RaftDriver, "propose", "propose", None)
    _wrap(ReadyLoop, "_flush_proposals", "flush", None,
          lambda self: bool(self._d.proposals.queue))
    _wrap(MemberStorage, "save", "wal_start", "wal_end",
          lambda self, hs, entries, *a, **k: bool(entries))
    try:  # the AIO path: written on the loop thread, completion seen by _reap
        from petcd.server.raftnode.walwriter import WalWriter
        _wrap(WalWriter, "save", "wal_start", None,
              lambda self, hs, entries, *a, **k: bool(entries))
        _wrap(WalWriter, "_reap", "wal_end", None)
        save = WalWriter.save

        def save_inline(self: Any, *args: Any, **kw: Any) -> Any:
            # (a lone write synced inline, on the loop thread: done when save returns)
            before = getattr(self, "inline_saves", 0)
            r = save(self, *args, **kw)
            if getattr(self, "inline_saves", 0) != before:
                _events.append(("wal_end", _now()))
            return r
        WalWriter.save = save_inline
    except ImportError:
        pass  # (before it)
    try:  # a lone write applied while its WAL frame goes to the disk (write_lone)
        from petcd.server.raftnode.walwriter import LoneSave
        _wrap(WalWriter, "write_lone", "wal_start", None,
              lambda self, hs, entries, *a, **k: bool(entries))
        _wrap(LoneSave, "finish", None, "wal_end")
    except ImportError:
        pass  # (before it)
    _wrap(ReadyLoop, "_hand_out", "hand_out", None)
    _wrap(ApplyQueue, "_apply_batch", "apply_start", "apply_end")
    _wrap(RaftDriver, "_after_apply", None, "answered")
    _wrap(H2Protocol, "_flush", "sent", None, lambda self: bool(self.h2.out))
    try:
        from petcd.mvcc.backend import Backend
        _wrap(Backend, "commit", "commit_start", "commit_end",
              lambda self: self._txn is not None)
    except AttributeError:
        pass  # (before batching: commits happen inside _apply_batch)


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
