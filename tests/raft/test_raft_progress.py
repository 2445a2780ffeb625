"""The leader's per-follower progress: states, back-off and the in-flight window."""

from __future__ import annotations

from petcd.raft.progress import Progress, ProgressState


def test_probe_replicate_snapshot_transitions() -> None:
    pr = Progress(6, 4, match=3)
    pr.become_replicate()
    assert (pr.state, pr.next) == (ProgressState.REPLICATE, 4)
    pr.become_snapshot(10)
    assert pr.is_paused() and pr.pending_snapshot == 10
    pr.become_probe()  # after a snapshot: resume past it
    assert (pr.state, pr.next, pr.pending_snapshot) == (ProgressState.PROBE, 11, 0)


def test_maybe_update() -> None:
    pr = Progress(5, 4, match=2)
    pr.probe_sent = True
    assert pr.maybe_update(4) and (pr.match, pr.next, pr.probe_sent) == (4, 5, False)
    assert not pr.maybe_update(3)
    assert pr.maybe_update(9) and pr.next == 10


def test_maybe_decrease_to_in_probe_uses_the_hint_and_ignores_stale_rejections() -> None:
    pr = Progress(10, 4, match=2)
    assert not pr.maybe_decrease_to(5, 3)  # not the index we probed
    assert pr.maybe_decrease_to(9, 4) and pr.next == 5
    assert pr.maybe_decrease_to(4, 0) and pr.next == 3  # never below match + 1


def test_maybe_decrease_to_in_replicate_falls_back_to_match() -> None:
    pr = Progress(1, 4, match=5)
    pr.become_replicate()
    pr.next = 9
    assert not pr.maybe_decrease_to(5, 0)  # at or below match: stale
    assert pr.maybe_decrease_to(7, 0) and pr.next == 6


def test_inflight_window() -> None:
    pr = Progress(1, 3)
    pr.become_replicate()
    for last in (2, 4, 6):
        assert not pr.is_paused()
        pr.inflights.append(last)
    assert pr.is_paused()
    pr.free_inflights_to(4)
    assert list(pr.inflights) == [6] and not pr.is_paused()
    pr.free_first_inflight()
    pr.free_first_inflight()  # empty: no-op
    assert not pr.inflights


def test_probe_pauses_after_one_send() -> None:
    pr = Progress(1, 3)
    assert not pr.is_paused()
    pr.probe_sent = True
    assert pr.is_paused()
