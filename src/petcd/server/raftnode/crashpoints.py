"""Crash points for the crash tests: PETCD_CRASHPOINT=<name>:<n> makes the member SIGKILL
itself the n-th time it reaches the named point, so a test lands in a window a few
microseconds wide (say, between an apply and the WAL's commit record) every run, not by
luck. Unset (always, outside tests) `armed` is False and a call site costs one global
read. The points (tests/e2e/test_crash_windows.py):

    inline-synced     propose_inline: the entry is fdatasynced, not yet applied
    inline-applied    propose_inline: applied and its caller's future resolved, the
                      answer not yet sent, the backend committed
    commit-unrecorded a Ready without new entries: its committed entries applied and
                      answered, the backend committed, the commit index not yet in the WAL
                      (only where it answers callers of its own: a leader; a follower's
                      apply waits for the next loop turn, after the record)
    applied-syncing   a Ready with new entries: committed entries already durable applied
                      (the backend committed) while the WAL syncs the new ones
    held-unsynced     a lone voter's lone write (ReadyLoop._finish_overlapped): its WAL
                      frame written and write-back started, the entry applied and held
                      (ApplyQueue.apply_held: nothing of it visible, nothing committed to
                      the backend), its fdatasync not returned

kill -9 keeps what was written to the page cache: these windows are about what a member
had written (and applied) when it died, not about a power cut.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

_NAME, _, _COUNT = os.environ.get("PETCD_CRASHPOINT", "").partition(":")
armed = bool(_NAME)
_left = int(_COUNT or "1") if armed else 0


def reached(name: str, before: Callable[[], object] | None = None) -> None:
    """At point `name`: on its n-th time, run `before` (e.g. commit the backend, a state
    the timer could have produced here) and die as kill -9 would."""
    global _left
    if name != _NAME:
        return
    _left -= 1
    if _left > 0:
        return
    if before is not None:
        before()
    os.kill(os.getpid(), signal.SIGKILL)
