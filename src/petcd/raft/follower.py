"""The candidate's and the follower's side of the Raft engine: votes, appends and heartbeats
from the leader, and installing a snapshot it sends."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from petcd.raft.basics import (
    _APP,
    _APP_RESP,
    _HEARTBEAT,
    _HEARTBEAT_RESP,
    _LOST,
    _PRE_VOTE_RESP,
    _PROP,
    _READ_INDEX,
    _READ_INDEX_RESP,
    _SNAP,
    _TIMEOUT_NOW,
    _TRANSFER_LEADER,
    _VOTE,
    _VOTE_RESP,
    _WON,
    NONE,
    RaftFields,
    ReadState,
    Role,
)
from petcd.raft.errors import (
    DropReason,
    InvariantViolation,
    ProposalDropped,
)
from petcd.raft.types import (
    Entry,
    Message,
    MessageType,
    Snapshot,
)


class FollowerRole(RaftFields):
    """Mixed into Raft: the methods candidates and followers step messages with."""

    if TYPE_CHECKING:  # methods of Raft and LeaderRole it calls

        def become_follower(self, term: int, lead: int) -> None: ...
        def hup(self, transfer: bool = False) -> None: ...
        def _become_leader(self) -> None: ...
        def _campaign(self, vote_type: MessageType, context: bytes) -> None: ...
        def _poll(self, node_id: int, granted: bool) -> int: ...
        def _set_conf(self, voters: Sequence[int], learners: Sequence[int]) -> None: ...
        def _bcast_append(self) -> None: ...
        def _forward_proposal(self, entries: list[Entry]) -> None: ...

    # ------------------------------------------------------------- candidate

    def _step_candidate(self, m: Message) -> None:
        mtype = m.type
        if mtype == _PROP:
            raise ProposalDropped(DropReason.NO_LEADER)
        if mtype == _APP:
            self.become_follower(m.term, m.from_)  # m.term == our term: a leader won
            self._handle_append(m)
        elif mtype == _HEARTBEAT:
            self.become_follower(m.term, m.from_)
            self._handle_heartbeat(m)
        elif mtype == _SNAP:
            self.become_follower(m.term, m.from_)
            self._handle_snapshot(m)
        elif mtype == (_PRE_VOTE_RESP if self.role == Role.PRE_CANDIDATE else _VOTE_RESP):
            result = self._poll(m.from_, not m.reject)
            if result == _WON:
                if self.role == Role.PRE_CANDIDATE:
                    self._campaign(_VOTE, b"")
                else:
                    self._become_leader()
                    self._bcast_append()
            elif result == _LOST:
                self.become_follower(self.term, NONE)

    # -------------------------------------------------------------- follower

    def _step_follower(self, m: Message) -> None:
        mtype = m.type
        if mtype == _APP:
            self.election_elapsed = 0
            self.lead = m.from_
            self._handle_append(m)
        elif mtype == _HEARTBEAT:
            self.election_elapsed = 0
            self.lead = m.from_
            self._handle_heartbeat(m)
        elif mtype == _SNAP:
            self.election_elapsed = 0
            self.lead = m.from_
            self._handle_snapshot(m)
        elif mtype == _PROP:
            self._forward_proposal(list(m.entries))
        elif mtype == _TRANSFER_LEADER:
            if self.lead != NONE:
                # from_ names the transfer target; keep it when forwarding.
                self.msgs.append(Message(_TRANSFER_LEADER, to=self.lead, from_=m.from_))
        elif mtype == _TIMEOUT_NOW:
            # The leader asked us to take over: skip pre-vote, and ask voters
            # to ignore their lease.
            self.hup(transfer=True)
        elif mtype == _READ_INDEX:
            if self.lead != NONE:
                self.msgs.append(
                    Message(_READ_INDEX, to=self.lead, from_=m.from_, entries=m.entries)
                )
        elif mtype == _READ_INDEX_RESP and len(m.entries) == 1:
            self.read_states.append(ReadState(m.index, m.entries[0].data))

    def _handle_append(self, m: Message) -> None:
        log = self.log
        if m.index < log.committed:
            # Everything up to our commit index is known to match.
            self.msgs.append(
                Message(_APP_RESP, to=m.from_, from_=self.id, term=self.term, index=log.committed)
            )
            return
        last_new = log.maybe_append(m.index, m.log_term, m.commit, m.entries)
        if last_new is not None:
            self.msgs.append(
                Message(_APP_RESP, to=m.from_, from_=self.id, term=self.term, index=last_new)
            )
            return
        # Tell the leader where our log might match: the last index at or
        # below the one it tried whose term is not above the term it sent.
        hint, hint_term = log.find_conflict_by_term(min(m.index, log.last_index()), m.log_term)
        self.msgs.append(
            Message(
                _APP_RESP,
                to=m.from_,
                from_=self.id,
                term=self.term,
                index=m.index,
                reject=True,
                reject_hint=hint,
                log_term=hint_term,
            )
        )

    def _handle_heartbeat(self, m: Message) -> None:
        self.log.commit_to(m.commit)
        self.msgs.append(
            Message(_HEARTBEAT_RESP, to=m.from_, from_=self.id, term=self.term, context=m.context)
        )

    def _handle_snapshot(self, m: Message) -> None:
        assert m.snapshot is not None
        index = self.log.last_index() if self._restore(m.snapshot) else self.log.committed
        self.msgs.append(Message(_APP_RESP, to=m.from_, from_=self.id, term=self.term, index=index))

    def _restore(self, snapshot: Snapshot) -> bool:
        """Install a leader's snapshot; False if it brings nothing new."""
        meta = snapshot.metadata
        log = self.log
        if meta.index <= log.committed:
            return False
        if self.role != Role.FOLLOWER:
            raise InvariantViolation("only a follower may restore a snapshot")
        # The snapshot's membership may not include us yet: a member added after
        # the leader's last snapshot gets that snapshot, then the log that adds it.
        cs = meta.conf_state
        if log.match_term(meta.index, meta.term):
            # We already have the log up to the snapshot: just commit it.
            log.commit_to(meta.index)
            return False
        log.restore(snapshot)
        self.prs = {}
        self._set_conf(cs.voters, cs.learners)
        return True
