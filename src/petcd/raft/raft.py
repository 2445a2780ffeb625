"""The Raft state machine itself. Callers use petcd.raft.rawnode.RawNode; this
module is its engine: state, terms, ticks, elections, the step dispatch and membership.
What each role does with a message is in leader.py (replication, commit, reads,
transfer) and follower.py (votes, appends, snapshots), mixed into `Raft`.

Every input is a method call (tick, step, propose...) and every output is
queued on the object (msgs, read_states, the unstable log) for RawNode.ready().
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from petcd.raft.basics import (
    _APP,
    _APP_RESP,
    _CONF_CHANGE,
    _HEARTBEAT,
    _LOST,
    _PENDING,
    _PRE_VOTE,
    _PRE_VOTE_RESP,
    _SNAP,
    _VOTE,
    _VOTE_RESP,
    _WON,
    CAMPAIGN_TRANSFER,
    NONE,
    Config,
    PendingRead,
    ReadState,
    Role,
)
from petcd.raft.codec import decode_conf_change
from petcd.raft.errors import (
    ConfigError,
    InvariantViolation,
)
from petcd.raft.follower import FollowerRole
from petcd.raft.leader import LeaderRole
from petcd.raft.log import RaftLog
from petcd.raft.progress import Progress
from petcd.raft.storage import Storage
from petcd.raft.types import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    HardState,
    Message,
    MessageType,
)


class Raft(LeaderRole, FollowerRole):
    """One member's Raft state; all of it lives here (the role mixins only add methods)."""

    def __init__(self, config: Config, storage: Storage) -> None:
        config.validate()
        self.id = config.id
        self.log = RaftLog(storage, config.max_committed_size_per_ready or None)
        self.term = 0
        self.vote = NONE
        self.lead = NONE
        self.role = Role.FOLLOWER
        self.msgs: list[Message] = []
        self.read_states: list[ReadState] = []

        self.election_timeout = config.election_tick
        self.heartbeat_timeout = config.heartbeat_tick
        self.randomized_election_timeout = config.election_tick
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.check_quorum = config.check_quorum
        self.pre_vote = config.pre_vote
        self.disable_proposal_forwarding = config.disable_proposal_forwarding
        self.defer_commit = config.defer_commit
        self.commit_unsent = False
        self.forwarded_last = 0
        self.max_msg_size = config.max_size_per_msg
        self.max_inflight = config.max_inflight_msgs
        self.max_uncommitted_size = config.max_uncommitted_size
        self.uncommitted_size = 0
        self.rng = random.Random(config.seed)

        # Membership and per-member progress (the leader's view of followers).
        self.voters: tuple[int, ...] = ()
        self.learners: tuple[int, ...] = ()
        self.voter_set: frozenset[int] = frozenset()
        self.peers: tuple[int, ...] = ()  # every member but ourselves, sorted
        self.prs: dict[int, Progress] = {}
        self.is_learner = False
        self.votes: dict[int, bool] = {}

        self.lead_transferee = NONE
        # Conf changes may only be proposed once the leader applied past this.
        self.pending_conf_index = 0
        self.pending_reads: dict[bytes, PendingRead] = {}  # in arrival order
        # Reads that arrived before the leader committed an entry of its term.
        self.deferred_reads: list[Message] = []

        self._tick: Callable[[], None] = self._tick_election
        self._step_role: Callable[[Message], None] = self._step_follower

        hard_state, conf_state = storage.initial_state()
        self._set_conf(conf_state.voters, conf_state.learners)
        if hard_state != HardState():
            self._load_hard_state(hard_state)
        if config.applied:
            if config.applied < self.log.first_index() - 1:
                raise ConfigError(
                    f"applied index {config.applied} is behind the storage snapshot "
                    f"{self.log.first_index() - 1}: restore the state machine from it first"
                )
            if config.applied > self.log.committed:
                # The commit index is not fsynced on its own, so the state
                # machine may be ahead of it; anything applied was committed.
                if config.applied > self.log.last_index():
                    raise ConfigError(
                        f"applied index {config.applied} is past the last log index "
                        f"{self.log.last_index()}: the log lost entries that were applied"
                    )
                self.log.committed = config.applied
            self.log.applied_to(config.applied)
            # Storage knows the membership as of its snapshot; conf changes
            # applied after it will not be handed out again, so replay them.
            first = self.log.first_index()
            if config.applied >= first:
                for e in self.log.slice(first, config.applied + 1):
                    if e.type == _CONF_CHANGE:
                        self.apply_conf_change(decode_conf_change(e.data))
        self.become_follower(self.term, NONE)

    # ------------------------------------------------------------------ state

    def hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.committed)

    def _load_hard_state(self, hs: HardState) -> None:
        log = self.log
        if hs.commit > log.last_index():
            raise ConfigError(
                f"hard state commit {hs.commit} is past the last log index {log.last_index()}"
            )
        # The commit index is not fsynced on its own: it may lag behind a
        # snapshot, which is committed by definition.
        log.committed = max(log.committed, hs.commit)
        self.term = hs.term
        self.vote = hs.vote

    def promotable(self) -> bool:
        """May this member campaign? (it is a voter in its configuration)"""
        return self.id in self.voter_set

    def conf_state(self) -> ConfState:
        return ConfState(self.voters, self.learners)

    # ------------------------------------------------------------- transitions

    def _reset(self, term: int) -> None:
        if self.term != term:
            self.term = term
            self.vote = NONE
        self.lead = NONE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = self.election_timeout + self.rng.randrange(
            self.election_timeout
        )
        self.lead_transferee = NONE
        self.commit_unsent = False
        self.forwarded_last = 0
        self.votes = {}
        last = self.log.last_index()
        max_inflight = self.max_inflight
        for node_id, pr in self.prs.items():
            if node_id == self.id:
                self.prs[node_id] = Progress(
                    last + 1, max_inflight, match=last, is_learner=pr.is_learner, recent_active=True
                )
            else:
                self.prs[node_id] = Progress(last + 1, max_inflight, is_learner=pr.is_learner)
        self.pending_conf_index = 0
        self.uncommitted_size = 0
        self.pending_reads = {}
        self.deferred_reads = []

    def become_follower(self, term: int, lead: int) -> None:
        self._reset(term)
        self._step_role = self._step_follower
        self._tick = self._tick_election
        self.lead = lead
        self.role = Role.FOLLOWER

    def _become_candidate(self) -> None:
        if self.role == Role.LEADER:
            raise InvariantViolation("leader cannot become candidate")
        self._reset(self.term + 1)
        self._step_role = self._step_candidate
        self._tick = self._tick_election
        self.vote = self.id
        self.role = Role.CANDIDATE

    def _become_pre_candidate(self) -> None:
        if self.role == Role.LEADER:
            raise InvariantViolation("leader cannot become pre-candidate")
        # A pre-candidate keeps its term and vote: nothing durable changes.
        self._step_role = self._step_candidate
        self._tick = self._tick_election
        self.votes = {}
        self.lead = NONE
        self.role = Role.PRE_CANDIDATE

    def _become_leader(self) -> None:
        if self.role == Role.FOLLOWER:
            raise InvariantViolation("follower cannot become leader directly")
        self._reset(self.term)
        self._step_role = self._step_leader
        self._tick = self._tick_heartbeat
        self.lead = self.id
        self.role = Role.LEADER
        self.prs[self.id].become_replicate()
        # An empty entry of the new term: committing it commits everything
        # before it, and is a precondition for reads and conf changes.
        index = self.log.last_index() + 1
        self._append_as_leader([Entry(self.term, index)], count_size=False)
        # No conf change may be proposed until this entry is applied (which
        # also means every earlier conf change in the log is applied).
        self.pending_conf_index = index

    # ------------------------------------------------------------------ ticks

    def tick(self) -> None:
        self._tick()

    def _tick_election(self) -> None:
        self.election_elapsed += 1
        if self.id not in self.voter_set:
            return
        # A lone voter has nobody to wait for: campaign on the first tick.
        timeout = 1 if len(self.voters) == 1 else self.randomized_election_timeout
        if self.election_elapsed >= timeout:
            self.election_elapsed = 0
            self.hup()

    def _tick_heartbeat(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.election_timeout:
            self.election_elapsed = 0
            if self.check_quorum:
                self._check_quorum()
            if self.role == Role.LEADER and self.lead_transferee != NONE:
                self.lead_transferee = NONE  # the transfer did not finish in time
        if self.role != Role.LEADER:
            return
        if self.heartbeat_elapsed >= self.heartbeat_timeout:
            self.heartbeat_elapsed = 0
            self._bcast_heartbeat()

    def _check_quorum(self) -> None:
        prs = self.prs
        active = sum(1 for v in self.voters if v == self.id or (v in prs and prs[v].recent_active))
        for node_id, pr in prs.items():
            if node_id != self.id:
                pr.recent_active = False
        if active < len(self.voters) // 2 + 1:
            self.become_follower(self.term, NONE)

    # -------------------------------------------------------------- elections

    def hup(self, transfer: bool = False) -> None:
        """Start an election (with a pre-vote round first, unless transferring)."""
        if self.role == Role.LEADER or not self.promotable():
            return
        if self._has_unapplied_conf_changes():
            # The outcome of the election could depend on them: apply first.
            return
        if transfer:
            self._campaign(_VOTE, CAMPAIGN_TRANSFER)
        elif self.pre_vote:
            self._campaign(_PRE_VOTE, b"")
        else:
            self._campaign(_VOTE, b"")

    def _has_unapplied_conf_changes(self) -> bool:
        log = self.log
        lo = max(log.applied + 1, log.first_index())
        if log.committed < lo:
            return False
        return any(e.type == _CONF_CHANGE for e in log.slice(lo, log.committed + 1))

    def _campaign(self, vote_type: MessageType, context: bytes) -> None:
        if vote_type == _PRE_VOTE:
            self._become_pre_candidate()
            term = self.term + 1  # the term we would campaign for; ours is unchanged
        else:
            self._become_candidate()
            term = self.term
        if self._poll(self.id, True) == _WON:
            # Only possible when we are the sole voter.
            if vote_type == _PRE_VOTE:
                self._campaign(_VOTE, context)
            else:
                self._become_leader()
            return
        last_index = self.log.last_index()
        last_term = self.log.last_term()
        for voter in self.voters:
            if voter != self.id:
                self.msgs.append(
                    Message(
                        vote_type,
                        to=voter,
                        from_=self.id,
                        term=term,
                        index=last_index,
                        log_term=last_term,
                        context=context,
                    )
                )

    def _poll(self, node_id: int, granted: bool) -> int:
        self.votes.setdefault(node_id, granted)
        votes = self.votes
        yes = no = 0
        for voter in self.voters:
            v = votes.get(voter)
            if v is True:
                yes += 1
            elif v is False:
                no += 1
        quorum = len(self.voters) // 2 + 1
        if yes >= quorum:
            return _WON
        if len(self.voters) - no < quorum:
            return _LOST
        return _PENDING

    def _handle_vote_request(self, m: Message) -> None:
        resp_type = _VOTE_RESP if m.type == _VOTE else _PRE_VOTE_RESP
        can_vote = (
            self.vote == m.from_  # a repeat of the vote we already cast
            or (self.vote == NONE and self.lead == NONE)  # free, and no leader this term
            or (m.type == _PRE_VOTE and m.term > self.term)  # a pre-vote for a future term
        )
        if can_vote and self.log.is_up_to_date(m.index, m.log_term):
            # Answer with the request's term: for a pre-vote ours may be lower
            # and the candidate would ignore an answer from the past.
            self.msgs.append(Message(resp_type, to=m.from_, from_=self.id, term=m.term))
            if m.type == _VOTE:
                self.election_elapsed = 0
                self.vote = m.from_
        else:
            self.msgs.append(
                Message(resp_type, to=m.from_, from_=self.id, term=self.term, reject=True)
            )

    # ------------------------------------------------------------------- step

    def step(self, m: Message) -> None:
        """Feed one message. Raises ProposalDropped / ReadIndexDropped only for
        proposals / reads that cannot be accepted or forwarded."""
        mtype = m.type
        term = m.term
        if term == 0:
            pass  # local message, proposal or forwarded read
        elif term > self.term:
            if mtype in (_VOTE, _PRE_VOTE):
                in_lease = (
                    self.check_quorum
                    and self.lead != NONE
                    and self.election_elapsed < self.election_timeout
                )
                if in_lease and m.context != CAMPAIGN_TRANSFER:
                    # We heard from a live leader less than an election timeout
                    # ago: ignore a disruptive candidate (and keep our term).
                    return
            if mtype == _PRE_VOTE or (mtype == _PRE_VOTE_RESP and not m.reject):
                pass  # pre-votes never change terms; a granted one carries a future term
            elif mtype in (_APP, _HEARTBEAT, _SNAP):
                self.become_follower(term, m.from_)
            else:
                self.become_follower(term, NONE)
        elif term < self.term:
            if (self.check_quorum or self.pre_vote) and (mtype in (_HEARTBEAT, _APP)):
                # A leader of a past term (perhaps cut off while we moved on):
                # tell it our term so it steps down instead of staying stuck.
                self.msgs.append(Message(_APP_RESP, to=m.from_, from_=self.id, term=self.term))
            elif mtype == _PRE_VOTE:
                self.msgs.append(
                    Message(_PRE_VOTE_RESP, to=m.from_, from_=self.id, term=self.term, reject=True)
                )
            return

        if mtype == MessageType.HUP:
            self.hup()
        elif mtype in (_VOTE, _PRE_VOTE):
            self._handle_vote_request(m)
        else:
            self._step_role(m)

    # ------------------------------------------------------------ membership

    def apply_conf_change(self, cc: ConfChange) -> ConfState:
        voters = set(self.voters)
        learners = set(self.learners)
        node = cc.node_id
        kind = cc.type
        if node == NONE or kind == ConfChangeType.UPDATE_NODE:
            return self.conf_state()
        if kind == ConfChangeType.ADD_NODE:
            learners.discard(node)  # promotes a learner
            voters.add(node)
        elif kind == ConfChangeType.ADD_LEARNER_NODE:
            voters.discard(node)
            learners.add(node)
        elif kind == ConfChangeType.REMOVE_NODE:
            voters.discard(node)
            learners.discard(node)
        if not voters:
            # Refused when proposed; ignored the same way by every member.
            return self.conf_state()
        self._set_conf(voters, learners)
        self._after_conf_change()
        return self.conf_state()

    def _set_conf(
        self, voters: Sequence[int] | set[int], learners: Sequence[int] | set[int]
    ) -> None:
        self.voters = tuple(sorted(voters))
        self.learners = tuple(sorted(set(learners) - set(voters)))
        self.voter_set = frozenset(self.voters)
        members = set(self.voters) | set(self.learners)
        self.peers = tuple(sorted(members - {self.id}))
        last = self.log.last_index()
        old = self.prs
        prs: dict[int, Progress] = {}
        for node_id in sorted(members):
            pr = old.get(node_id)
            if pr is None:
                # Start one entry back so the first probe carries an entry and
                # goes out at once; new members count as active.
                pr = Progress(max(last, 1), self.max_inflight, recent_active=True)
                if node_id == self.id:
                    pr.match = last
                    pr.next = last + 1
            pr.is_learner = node_id not in self.voter_set
            prs[node_id] = pr
        self.prs = prs
        self.is_learner = self.id in self.learners

    def _after_conf_change(self) -> None:
        if self.role != Role.LEADER:
            return
        if self.id not in self.voter_set:
            # Removed (or demoted): let the others learn the commit index, hand
            # leadership to a caught-up voter, and step down.
            self._bcast_append()
            last = self.log.last_index()
            for v in self.voters:
                if self.prs[v].match == last:
                    self._send_timeout_now(v)
                    break
            self.become_follower(self.term, NONE)
            return
        if self._maybe_commit():
            self._bcast_append()
        else:
            for peer in self.peers:
                self._maybe_send_append(peer, False)
        if self.lead_transferee != NONE and self.lead_transferee not in self.voter_set:
            self.lead_transferee = NONE
