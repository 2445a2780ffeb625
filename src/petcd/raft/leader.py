"""The leader's side of the Raft engine: proposals, replication to each follower, commit,
heartbeats, linearizable reads (ReadIndex) and leadership transfer."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import count
from typing import TYPE_CHECKING

from petcd.raft.basics import (
    _APP,
    _APP_RESP,
    _CONF_CHANGE,
    _HEARTBEAT,
    _HEARTBEAT_RESP,
    _NORMAL,
    _PROBE,
    _PROP,
    _READ_INDEX,
    _READ_INDEX_RESP,
    _REPLICATE,
    _SNAP,
    _SNAPSHOT,
    _TIMEOUT_NOW,
    _TRANSFER_LEADER,
    NONE,
    PendingRead,
    RaftFields,
    ReadState,
    Role,
)
from petcd.raft.codec import CodecError, decode_conf_change
from petcd.raft.errors import (
    DropReason,
    InvariantViolation,
    ProposalDropped,
    ReadIndexDropped,
    SnapshotTemporarilyUnavailable,
)
from petcd.raft.progress import Progress
from petcd.raft.storage import entries_size
from petcd.raft.types import (
    ConfChangeType,
    Entry,
    Message,
    MessageType,
)


class LeaderRole(RaftFields):
    """Mixed into Raft: the methods a leader steps messages with."""

    if TYPE_CHECKING:  # methods of Raft and FollowerRole it calls

        def _check_quorum(self) -> None: ...

    # ---------------------------------------------------------------- leader

    def _step_leader(self, m: Message) -> None:
        mtype = m.type
        if mtype == _PROP:
            self._leader_propose(m.entries, local=m.from_ in (NONE, self.id))
            return
        if mtype == MessageType.BEAT:
            self._bcast_heartbeat()
            return
        if mtype == MessageType.CHECK_QUORUM:
            self._check_quorum()
            return
        if mtype == _READ_INDEX:
            self._leader_read_index(m)
            return
        pr = self.prs.get(m.from_)
        if pr is None:
            return
        if mtype == _APP_RESP:
            self._handle_append_response(m, pr)
        elif mtype == _HEARTBEAT_RESP:
            self._handle_heartbeat_response(m, pr)
        elif mtype == MessageType.SNAP_STATUS:
            if pr.state != _SNAPSHOT:
                return
            if m.reject:
                pr.pending_snapshot = 0  # probe from match, not from the lost snapshot
            pr.become_probe()
            # Wait for the follower's answer (success) or a heartbeat round
            # (failure) before sending again.
            pr.probe_sent = True
        elif mtype == MessageType.UNREACHABLE:
            # An append was probably lost: stop streaming, probe instead.
            if pr.state == _REPLICATE:
                pr.become_probe()
        elif mtype == _TRANSFER_LEADER:
            self._start_transfer(m.from_, pr)

    def _leader_propose(self, entries: Sequence[Entry], local: bool) -> None:
        if self.id not in self.prs:
            raise ProposalDropped(DropReason.NOT_IN_CONFIG)
        if self.lead_transferee != NONE:
            raise ProposalDropped(DropReason.TRANSFER_PENDING)
        index = self.log.last_index() + 1
        term = self.term
        accepted: list[Entry] = []
        conf_index = 0
        for e in entries:
            if e.type == _CONF_CHANGE:
                if conf_index:
                    refusal: DropReason | None = DropReason.CONF_CHANGE_PENDING
                else:
                    refusal = self._conf_change_refusal(e.data)
                if refusal is not None:
                    if local and len(entries) == 1:
                        raise ProposalDropped(refusal)
                    continue  # forwarded: drop just this entry, the proposer will time out
                conf_index = index
            accepted.append(Entry(term, index, e.type, e.data))
            index += 1
        if accepted:
            if not local:  # (its member answers once it learns the commit: not deferred)
                self.forwarded_last = accepted[-1].index
            self._append_as_leader(accepted)
            if conf_index:
                self.pending_conf_index = conf_index
            self._bcast_append()

    def flush_commit(self) -> None:
        """Broadcast a commit index advance held back by defer_commit."""
        if self.commit_unsent and self.role == Role.LEADER:
            self._bcast_append()

    def propose_batch(self, datas: Sequence[bytes]) -> None:
        """Propose many normal entries at once (the fast path for local proposals)."""
        if not datas:
            return
        if self.role != Role.LEADER:
            self._forward_proposal([Entry(0, 0, _NORMAL, d) for d in datas])
            return
        if self.lead_transferee != NONE:
            raise ProposalDropped(DropReason.TRANSFER_PENDING)
        term = self.term
        entries = [
            Entry(term, i, _NORMAL, d) for i, d in zip(count(self.log.last_index() + 1), datas)
        ]
        self._append_as_leader(entries)
        self._bcast_append()

    def _forward_proposal(self, entries: list[Entry]) -> None:
        if self.role != Role.FOLLOWER or self.lead == NONE:
            raise ProposalDropped(DropReason.NO_LEADER)
        if self.disable_proposal_forwarding:
            raise ProposalDropped(DropReason.FORWARDING_DISABLED)
        self.msgs.append(Message(_PROP, to=self.lead, from_=self.id, entries=entries))

    def _conf_change_refusal(self, data: bytes) -> DropReason | None:
        if self.pending_conf_index > self.log.applied:
            return DropReason.CONF_CHANGE_PENDING
        try:
            cc = decode_conf_change(data)
        except CodecError:
            return DropReason.INVALID_CONF_CHANGE
        voters = set(self.voters)
        if cc.type == ConfChangeType.REMOVE_NODE or cc.type == ConfChangeType.ADD_LEARNER_NODE:
            voters.discard(cc.node_id)
        if not voters:
            return DropReason.INVALID_CONF_CHANGE
        return None

    def _append_as_leader(self, entries: list[Entry], count_size: bool = True) -> None:
        if count_size and self.max_uncommitted_size:
            size = entries_size(entries)
            if (
                self.uncommitted_size > 0
                and self.uncommitted_size + size > self.max_uncommitted_size
            ):
                raise ProposalDropped(DropReason.UNCOMMITTED_LIMIT)
            self.uncommitted_size += size
        self.log.append(entries)
        self.prs[self.id].maybe_update(entries[-1].index)
        # A lone voter commits on its own; otherwise this is a no-op.
        self._maybe_commit()

    def reduce_uncommitted_size(self, committed: Sequence[Entry]) -> None:
        if self.uncommitted_size:
            self.uncommitted_size = max(0, self.uncommitted_size - entries_size(committed))

    def _maybe_commit(self) -> bool:
        voters = self.voters
        prs = self.prs
        n = len(voters)
        if n == 1:
            index = prs[voters[0]].match
        elif n == 0:
            return False
        else:
            matches = sorted([prs[v].match for v in voters])
            # The highest index a majority has: the (n//2 + 1)-th largest match.
            index = matches[(n - 1) - n // 2]
        return self.log.maybe_commit(index, self.term)

    def _bcast_append(self, send_if_empty: bool = True) -> None:
        """Send every peer what it is missing (send_if_empty: an empty append to a peer
        missing nothing, which carries the commit index)."""
        self.commit_unsent = False  # (paused peers learn it later, as in etcd)
        for peer in self.peers:
            # Fill the in-flight window: one message each time would leave
            # size-limited batches waiting for a round trip.
            if self._maybe_send_append(peer, send_if_empty):
                while self._maybe_send_append(peer, False):
                    pass

    def _maybe_send_append(self, to: int, send_if_empty: bool) -> bool:
        """Send `to` the entries it is missing (or a snapshot); False if nothing sent."""
        pr = self.prs[to]
        if pr.is_paused():
            return False
        log = self.log
        next_index = pr.next
        # (offset >= first index: the cheap test settles the common case)
        if next_index < log.offset and next_index < log.first_index():
            return self._send_snapshot(to, pr)
        entries = log.entries_from(next_index, self.max_msg_size)
        if not entries and not send_if_empty:
            return False
        self.msgs.append(
            Message(
                _APP,
                to=to,
                from_=self.id,
                term=self.term,
                log_term=log.term(next_index - 1),
                index=next_index - 1,
                entries=entries,
                commit=log.committed,
            )
        )
        if entries:
            if pr.state == _REPLICATE:
                last = entries[-1].index
                pr.next = last + 1
                pr.inflights.append(last)
            else:
                pr.probe_sent = True
        return True

    def _send_snapshot(self, to: int, pr: Progress) -> bool:
        if not pr.recent_active:
            return False  # it may be down; wait until it answers a heartbeat
        try:
            snapshot = self.log.snapshot()
        except SnapshotTemporarilyUnavailable:
            return False
        if snapshot.is_empty:
            raise InvariantViolation("log is compacted but storage has no snapshot")
        pr.become_snapshot(snapshot.metadata.index)
        self.msgs.append(Message(_SNAP, to=to, from_=self.id, term=self.term, snapshot=snapshot))
        return True

    def _bcast_heartbeat(self, context: bytes | None = None) -> None:
        if context is None:
            # Piggy-back the newest pending read so a lost round is retried.
            context = next(reversed(self.pending_reads), b"") if self.pending_reads else b""
        committed = self.log.committed
        for peer in self.peers:
            # Never tell a follower to commit past what it is known to hold.
            commit = min(self.prs[peer].match, committed)
            self.msgs.append(
                Message(
                    _HEARTBEAT,
                    to=peer,
                    from_=self.id,
                    term=self.term,
                    commit=commit,
                    context=context,
                )
            )

    def _handle_append_response(self, m: Message, pr: Progress) -> None:
        pr.recent_active = True
        if m.reject:
            hint = m.reject_hint
            if m.log_term > 0:
                # Skip every entry of ours whose term is above the follower's
                # term at `hint`: none of them can match.
                hint = self.log.find_conflict_by_term(hint, m.log_term)[0]
            if pr.maybe_decrease_to(m.index, hint):
                if pr.state == _REPLICATE:
                    pr.become_probe()
                self._maybe_send_append(m.from_, True)
            return
        was_paused = pr.is_paused()
        if not pr.maybe_update(m.index):
            return
        state = pr.state
        if state == _REPLICATE:
            pr.free_inflights_to(m.index)
        elif state == _PROBE:
            pr.become_replicate()
        elif pr.match >= pr.pending_snapshot or pr.match + 1 >= self.log.first_index():
            # The snapshot (or something as good) arrived: stream the log again.
            pr.become_probe()
            pr.become_replicate()
        committed = self.log.committed
        if self._maybe_commit():
            self._release_deferred_reads()
            if self.defer_commit and self.forwarded_last <= committed and \
                    not committed < self.pending_conf_index <= self.log.committed:
                # Only appends with entries now (they carry the commit index too); the
                # empty ones wait for the next proposal or flush_commit(). (Not for a
                # membership change: every member applies it as soon as etcd's would.)
                self._bcast_append(send_if_empty=False)
                self.commit_unsent = True
            else:
                self._bcast_append()
        elif was_paused:
            self._maybe_send_append(m.from_, True)  # it may be missing the commit index
        while self._maybe_send_append(m.from_, False):
            pass
        if m.from_ == self.lead_transferee and pr.match == self.log.last_index():
            self._send_timeout_now(m.from_)

    def _handle_heartbeat_response(self, m: Message, pr: Progress) -> None:
        pr.recent_active = True
        pr.probe_sent = False
        if pr.state == _REPLICATE and len(pr.inflights) >= pr.max_inflight:
            # Let one append through so a lost window cannot stall us forever.
            pr.free_first_inflight()
        if pr.match < self.log.last_index():
            self._maybe_send_append(m.from_, True)
        if m.context:
            self._ack_read(m.from_, m.context)

    # ---------------------------------------------------------- leader reads

    def _leader_read_index(self, m: Message) -> None:
        if len(self.voters) == 1 and self.voters[0] == self.id:
            self._answer_read(m, self.log.committed)
            return
        if self.log.term(self.log.committed) != self.term:
            # Until an entry of our term commits we do not know the true
            # commit index: hold the read until then.
            self.deferred_reads.append(m)
            return
        self._start_read_round(m)

    def _start_read_round(self, m: Message) -> None:
        ctx = m.entries[0].data
        if ctx not in self.pending_reads:  # else a retry: just ask again
            self.pending_reads[ctx] = PendingRead(self.log.committed, m, self.id)
        self._bcast_heartbeat(ctx)

    def _release_deferred_reads(self) -> None:
        if not self.deferred_reads or self.log.term(self.log.committed) != self.term:
            return
        deferred = self.deferred_reads
        self.deferred_reads = []
        for m in deferred:
            self._start_read_round(m)

    def _ack_read(self, node_id: int, ctx: bytes) -> None:
        pending = self.pending_reads.get(ctx)
        if pending is None:
            return
        pending.acks.add(node_id)
        voter_set = self.voter_set
        if sum(1 for a in pending.acks if a in voter_set) < len(self.voters) // 2 + 1:
            return
        # Leadership is confirmed for this read and every read queued before it.
        while self.pending_reads:
            key = next(iter(self.pending_reads))
            done = self.pending_reads.pop(key)
            self._answer_read(done.request, done.index)
            if key == ctx:
                break

    def _answer_read(self, req: Message, index: int) -> None:
        if req.from_ in (NONE, self.id):
            self.read_states.append(ReadState(index, req.entries[0].data))
        else:
            if self.commit_unsent and req.from_ in self.prs:
                # The reader serves once it applied up to index: tell it the commit.
                self._maybe_send_append(req.from_, True)
            self.msgs.append(
                Message(
                    _READ_INDEX_RESP,
                    to=req.from_,
                    from_=self.id,
                    term=self.term,
                    index=index,
                    entries=req.entries,
                )
            )

    def read_index(self, ctx: bytes) -> None:
        m = Message(_READ_INDEX, from_=self.id, entries=(Entry(0, 0, _NORMAL, ctx),))
        if self.role == Role.LEADER:
            self._leader_read_index(m)
        elif self.role == Role.FOLLOWER and self.lead != NONE:
            self.msgs.append(Message(_READ_INDEX, to=self.lead, from_=self.id, entries=m.entries))
        else:
            raise ReadIndexDropped(DropReason.NO_LEADER)

    # ------------------------------------------------------- leader transfer

    def _start_transfer(self, target: int, pr: Progress) -> None:
        if pr.is_learner or target == self.id or target not in self.voter_set:
            return
        if self.lead_transferee == target:
            return  # already under way
        self.election_elapsed = 0  # the transfer must finish within an election timeout
        self.lead_transferee = target
        if pr.match == self.log.last_index():
            self._send_timeout_now(target)
        else:
            self._maybe_send_append(target, True)

    def _send_timeout_now(self, to: int) -> None:
        self.msgs.append(Message(_TIMEOUT_NOW, to=to, from_=self.id, term=self.term))
