"""The Raft loop thread's short scheduler slice (server/raftnode/slice.py)."""

from __future__ import annotations

import platform
import threading

import pytest

from petcd.server.raftnode.slice import current_slice_ns, request_short_slice


def _kernel() -> tuple[int, int]:
    try:
        major, minor = platform.release().split(".")[:2]
        return int(major), int(minor)
    except ValueError:
        return (0, 0)


@pytest.mark.skipif(platform.system() != "Linux" or _kernel() < (6, 12),
                    reason="custom slices for SCHED_OTHER: Linux 6.12+")
def test_the_calling_thread_gets_the_slice_asked_for() -> None:
    got: list[object] = []

    def thread() -> None:  # (a thread of its own: the test runner's keeps its slice)
        before = current_slice_ns()
        got.extend([request_short_slice(0), current_slice_ns() == before,
                    request_short_slice(250), current_slice_ns()])
    t = threading.Thread(target=thread)
    t.start()
    t.join()
    assert got == [False, True, True, 250_000]
