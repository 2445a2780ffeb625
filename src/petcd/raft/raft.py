"""The Raft state machine itself. Callers use petcd.raft.rawnode.RawNode; this
module is its engine: roles, terms, elections, replication, reads, membership.

Every input is a method call (tick, step, propose...) and every output is
queued on the object (msgs, read_states, the unstable log) for RawNode.ready().
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from itertools import count

from petcd.raft.codec import CodecError, decode_conf_change
from petcd.raft.errors import (
    ConfigError,
    DropReason,
    InvariantViolation,
    ProposalDropped,
    ReadIndexDropped,
    SnapshotTemporarilyUnavailable,
)
from petcd.raft.log import RaftLog
from petcd.raft.progress import Progress, ProgressState
from petcd.raft.storage import Storage, entries_size
from petcd.raft.types import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    Snapshot,
)

NONE = 0  # "no node": no leader known, no vote cast

# Context of vote requests sent on a leader's request (leadership transfer):
# they may interrupt a follower's leader lease.
CAMPAIGN_TRANSFER = b"CampaignTransfer"


class Role(IntEnum):
    """The numbers match etcd's raft.StateType."""

    FOLLOWER = 0
    CANDIDATE = 1
    LEADER = 2
    PRE_CANDIDATE = 3


@dataclass(slots=True)
class Config:
    """Parameters of one Raft member. Times are in ticks (calls to tick())."""

    id: int
    election_tick: int = 10
    heartbeat_tick: int = 1
    # Index of the last entry the caller's state machine has applied (on a
    # restart): committed entries up to it are not handed out again.
    applied: int = 0
    # Byte limit of the entries in one append message (at least one entry is sent).
    max_size_per_msg: int = 1 << 20
    # Byte limit of committed_entries in one Ready; 0: no limit.
    max_committed_size_per_ready: int = 0
    # Byte limit of uncommitted data a leader accepts; 0: no limit.
    max_uncommitted_size: int = 0
    # Append messages in flight to one follower in the replicate state.
    max_inflight_msgs: int = 256
    pre_vote: bool = True
    check_quorum: bool = True
    disable_proposal_forwarding: bool = False
    # Seeds the randomized election timeouts; None: seeded from the OS.
    seed: int | None = None

    def validate(self) -> None:
        if self.id <= 0:
            raise ConfigError("id must be a positive integer")
        if self.heartbeat_tick <= 0:
            raise ConfigError("heartbeat_tick must be > 0")
        if self.election_tick <= self.heartbeat_tick:
            raise ConfigError("election_tick must be greater than heartbeat_tick")
        if self.max_inflight_msgs <= 0:
            raise ConfigError("max_inflight_msgs must be > 0")
        if self.max_size_per_msg <= 0:
            raise ConfigError("max_size_per_msg must be > 0")
        if self.applied < 0 or self.max_committed_size_per_ready < 0:
            raise ConfigError("applied and max_committed_size_per_ready must be >= 0")
        if self.max_uncommitted_size < 0:
            raise ConfigError("max_uncommitted_size must be >= 0")


@dataclass(slots=True, frozen=True)
class ReadState:
    """A read_index(ctx) answer: serve the reads batched under request_ctx once
    the local applied index reaches `index`."""

    index: int
    request_ctx: bytes


class _PendingRead:
    __slots__ = ("acks", "index", "request")

    def __init__(self, index: int, request: Message, self_id: int) -> None:
        self.index = index
        self.request = request
        self.acks = {self_id}


_PROP = MessageType.PROP
_APP = MessageType.APP
_APP_RESP = MessageType.APP_RESP
_HEARTBEAT = MessageType.HEARTBEAT
_HEARTBEAT_RESP = MessageType.HEARTBEAT_RESP
_SNAP = MessageType.SNAP
_VOTE = MessageType.VOTE
_VOTE_RESP = MessageType.VOTE_RESP
_PRE_VOTE = MessageType.PRE_VOTE
_PRE_VOTE_RESP = MessageType.PRE_VOTE_RESP
_READ_INDEX = MessageType.READ_INDEX
_READ_INDEX_RESP = MessageType.READ_INDEX_RESP
_TIMEOUT_NOW = MessageType.TIMEOUT_NOW
_TRANSFER_LEADER = MessageType.TRANSFER_LEADER
_NORMAL = EntryType.NORMAL
_CONF_CHANGE = EntryType.CONF_CHANGE
_REPLICATE = ProgressState.REPLICATE
_PROBE = ProgressState.PROBE
_SNAPSHOT = ProgressState.SNAPSHOT

_WON, _LOST, _PENDING = 1, 2, 3


class Raft:
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
        self.pending_reads: dict[bytes, _PendingRead] = {}  # in arrival order
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
            self._append_as_leader(accepted)
            if conf_index:
                self.pending_conf_index = conf_index
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

    def _bcast_append(self) -> None:
        for peer in self.peers:
            # Fill the in-flight window: one message each time would leave
            # size-limited batches waiting for a round trip.
            if self._maybe_send_append(peer, True):
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
        if self._maybe_commit():
            self._release_deferred_reads()
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
            self.pending_reads[ctx] = _PendingRead(self.log.committed, m, self.id)
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
