"""The driver's side of the peer transport: Raft messages out (grouped per peer, snapshots
on their own connection) and in, and what the transport reports about peers."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from petcd.raft import Message, MessageType, decode_message, encode_message
from petcd.server.raftnode.appendstats import AppendStats
from petcd.transport import Status

if TYPE_CHECKING:
    from petcd.server.raftnode.driver import RaftDriver

log = logging.getLogger(__name__)

_SNAP = MessageType.SNAP
_APP = MessageType.APP


class Peers:
    def __init__(self, driver: RaftDriver) -> None:
        self._d = driver
        self._ticks_advanced = False
        self.append_stats = AppendStats()

    def send(self, messages: list[Message]) -> None:
        d = self._d
        d.ops.sent(messages)
        by_to: dict[int, list[bytes]] = {}
        for m in messages:
            if m.type == _SNAP:
                d.spawn(d.snapshots.send(m))
                continue
            payloads = by_to.get(m.to)
            if payloads is None:
                by_to[m.to] = payloads = []
            payload = encode_message(m)
            if m.type == _APP:
                self.append_stats.on_send(len(payload))
            payloads.append(payload)
        # Written at once, not in the next loop iteration: a leader's appends go out
        # before its own WAL write starts, a follower's answer right after its fdatasync.
        send = d.transport.send
        for to, payloads in by_to.items():
            send(to, payloads, True)

    def on_messages(self, payloads: list[bytes]) -> None:
        d = self._d
        if d.stopped:
            return
        for payload in payloads:
            try:
                m = decode_message(payload)
            except ValueError as e:
                log.warning("dropping an undecodable peer message: %s", e)
                continue
            if m.type == _APP:
                self.append_stats.on_receive(len(payload))
            d.step(m)
        loop = d.ready_loop
        if not loop.receive_inline():  # (a follower's lone append: handled here)
            loop.wake_if_needed()

    def on_peer_status(self, peer_id: int, active: bool) -> None:
        d = self._d
        if active and d.opts.initial_election_tick_advance and not self._ticks_advanced \
                and d.leadership.lead == 0:
            # etcd's initial election tick advance: once peers are reachable, a fresh
            # member need not sit out a whole election timeout before campaigning.
            self._ticks_advanced = True
            for _ in range(max(0, d.election_ticks - 2)):
                d.raw.tick()
            d.wake()

    def on_rejected(self, peer_id: int, status: Status, reason: str) -> None:
        d = self._d
        if status == Status.REMOVED_MEMBER and not d.stopped:
            log.warning("peer %x says: %s", peer_id, reason)
            d.removed()
