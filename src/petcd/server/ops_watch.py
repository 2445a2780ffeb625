"""Operator signals from the Raft driver: etcd's log lines (its words, its zap field
names) and the counters beside them, for leader changes, late heartbeats and slow or
failed ReadIndex rounds. The driver makes one call per event; the rules live here."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from petcd.raft import Role
from petcd.raft.rawnode import Status as RaftStatus
from petcd.raft.types import Message, MessageType

if TYPE_CHECKING:
    from petcd.server.metrics import Metrics

log = logging.getLogger("petcd.raft")

_HEARTBEAT = MessageType.HEARTBEAT


def _go_duration(seconds: float) -> str:
    """A duration as zap writes Go's time.Duration in etcd's JSON logs: "50ms",
    "5.083395ms", "1.5s", "2m3s"."""
    ns = round(seconds * 1e9)
    if ns == 0:
        return "0s"
    sign, ns = ("-", -ns) if ns < 0 else ("", ns)
    for unit, size in (("ns", 1), ("µs", 1_000), ("ms", 1_000_000)):
        if ns < size * 1000:
            return sign + _trim(ns / size) + unit
    minutes, rest = divmod(ns, 60 * 10**9)
    hours, minutes = divmod(minutes, 60)
    out = _trim(rest / 1e9) + "s"
    if minutes or hours:
        out = f"{minutes}m" + out
    if hours:
        out = f"{hours}h" + out
    return sign + out


def _trim(x: float) -> str:
    return f"{x:.9f}".rstrip("0").rstrip(".")


# A follower that has not moved while behind the leader's commit for this long is
# reported (then every FOLLOWER_REPEAT while it stays so), and again once caught up.
FOLLOWER_REPEAT = 5.0


class OpsWatch:
    def __init__(self, member_id: int, heartbeat_s: float, metrics: Metrics | None) -> None:
        self._id = member_id
        self._heartbeat = heartbeat_s
        self._metrics = metrics
        # etcd's timeout detector: when each follower last got a heartbeat from us.
        self._last_beat: dict[int, float] = {}
        self._snap_started = 0.0
        self._stall_after = 0.0  # set by watch_followers
        self._next_check = 0.0
        # follower -> (match index last seen, when it last moved or was caught up,
        # when it was last reported or 0.0)
        self._followers: dict[int, tuple[int, float, float]] = {}

    # -- leadership (etcd's raft.node lines)
    def leader(self, old: int, new: int, term: int) -> None:
        me = self._id
        if new and not old:
            log.info("raft.node: %x elected leader %x at term %d", me, new, term)
        elif new:
            log.info("raft.node: %x changed leader from %x to %x at term %d", me, old, new,
                     term)
        else:
            log.info("raft.node: %x lost leader %x at term %d", me, old, term)
        self._last_beat.clear()  # a new term: heartbeats are timed afresh

    # -- heartbeats: a leader that cannot send one within two intervals is overloaded
    def sent(self, messages: Iterable[Message]) -> None:
        now = 0.0
        for m in messages:
            if m.type != _HEARTBEAT:
                continue
            now = now or time.monotonic()
            last = self._last_beat.get(m.to)
            self._last_beat[m.to] = now
            if last is None:
                continue
            exceeded = now - last - 2 * self._heartbeat
            if exceeded > 0:
                self._late_heartbeat(m.to, exceeded)

    def _late_heartbeat(self, to: int, exceeded: float) -> None:
        hb = self._heartbeat
        log.warning("leader failed to send out heartbeat on time; took too long, leader is "
                    "overloaded likely from slow disk (to %x, exceeded by %.3fs)", to,
                    exceeded, extra={"fields": {
                        "to": f"{to:x}", "heartbeat-interval": _go_duration(hb),
                        "expected-duration": _go_duration(2 * hb),
                        "exceeded-duration": _go_duration(exceeded)}})
        if self._metrics is not None:
            self._metrics.heartbeat_send_failures.inc()

    # -- followers falling behind (on the leader, checked once a second from its tick)
    def watch_followers(self, now: float, status: Callable[[], RaftStatus],
                        stall_after: float) -> None:
        if now < self._next_check:
            return
        self._next_check = now + 1.0
        st = status()
        if st.role != Role.LEADER:
            self._followers.clear()
            return
        seen = self._followers
        for peer, pr in st.progress.items():
            if peer == self._id:
                continue
            match, moved, reported = seen.get(peer, (pr.match, now, 0.0))
            if pr.match >= st.commit or pr.match != match:
                if reported:
                    log.info("member %x caught up with the leader (match index %d)", peer,
                             pr.match, extra={"fields": {"remote-peer-id": f"{peer:x}",
                                                         "match-index": pr.match}})
                seen[peer] = (pr.match, now, 0.0)
                continue
            stalled = now - moved
            if stalled >= stall_after and now - reported >= FOLLOWER_REPEAT:
                reported = now
                log.warning(
                    "slow follower: member %x is %d entries behind the leader's commit "
                    "index and made no progress for %.1fs", peer, st.commit - pr.match,
                    stalled, extra={"fields": {
                        "remote-peer-id": f"{peer:x}", "match-index": pr.match,
                        "commit-index": st.commit, "recent-active": pr.recent_active,
                        "stalled-duration": _go_duration(stalled)}})
            seen[peer] = (match, moved, reported)

    # -- a follower catching up by snapshot (etcd's lines; the gauge while it runs)
    def snapshot_applying(self, index: int, applied: int) -> None:
        self._snap_started = time.monotonic()
        if self._metrics is not None:
            self._metrics.snapshot_apply_in_progress.set(1)
        log.info("applying snapshot at index %d (applied index %d)", index, applied,
                 extra={"fields": {"current-applied-index": applied,
                                   "incoming-leader-snapshot-index": index}})

    def snapshot_applied(self, index: int, applied: int) -> None:
        took = time.monotonic() - self._snap_started
        if self._metrics is not None:
            self._metrics.snapshot_apply_in_progress.set(0)
        log.info("applied snapshot (installed the snapshot at index %d, backend at index "
                 "%d) in %.3fs", index, applied, took, extra={"fields": {
                     "current-applied-index": applied, "incoming-leader-snapshot-index": index,
                     "took": _go_duration(took)}})

    # -- linearizable reads
    def read_index_slow(self, request_id: bytes, retry_s: float) -> None:
        log.warning("waiting for ReadIndex response took too long, retrying",
                    extra={"fields": {"sent-request-id": int.from_bytes(request_id, "big"),
                                      "retry-timeout": _go_duration(retry_s)}})
        if self._metrics is not None:
            self._metrics.slow_read_indexes.inc()

    def read_index_failed(self, timeout_s: float) -> None:
        log.warning("timed out waiting for read index response (local node might have slow "
                    "network)", extra={"fields": {"timeout": _go_duration(timeout_s)}})
        if self._metrics is not None:
            self._metrics.read_indexes_failed.inc()
