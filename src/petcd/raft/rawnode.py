"""RawNode: the driving API of the Raft core, and the contract of its Ready loop.

The core never does IO. Its caller (the server's Raft driver) feeds it inputs
and carries out its outputs:

Inputs (any time, any order, all on one thread):
  tick()                          every tick interval (e.g. 100 ms)
  step(msg)                       every Message received from a peer
  propose(data) / propose_batch(datas) / propose_conf_change(cc)
  read_index(ctx)                 one linearizable-read request (batch reads under one ctx)
  transfer_leader(id), campaign(), report_unreachable(id), report_snapshot(id, ok)

Outputs: while has_ready(), take rd = ready() and handle it, IN THIS ORDER:

  1. rd.soft_state, if not None: the leader id or this member's role changed.
     (A server fails its pending proposals/reads when it loses leadership.)
  2. PERSIST, then make it durable (fsync) if rd.must_sync:
       a. rd.snapshot, if not None: save it, then storage.apply_snapshot(rd.snapshot)
       b. rd.entries, if any: append to the WAL, then storage.append(rd.entries)
          (entries may overwrite a suffix of earlier ones: drop the old suffix)
       c. rd.hard_state, if not None: save it, then storage.set_hard_state(rd.hard_state)
     Writing a, b, c as one WAL batch with one fsync satisfies this.
  3. SEND rd.messages, only after step 2 is durable. Exception: when
     rd.send_before_persist is True (a leader that kept its term and vote) the
     messages may be sent before or while persisting. Sending may fail or be
     lost: the core retries by itself. For each message of type SNAP, later
     call report_snapshot(msg.to, ok) once the transport knows whether the
     peer received it; report_unreachable(peer) when a peer cannot be reached.
  4. APPLY, only after step 2 is durable:
       a. rd.snapshot, if not None: restore the state machine from rd.snapshot.data.
       b. rd.committed_entries, in order. NORMAL entries with empty data are
          the leader's no-ops: skip them. For a CONF_CHANGE entry call
          apply_conf_change(decode_conf_change(entry.data)) and keep the
          returned ConfState (it goes into the next snapshot you create).
          Every entry handed out is committed: apply it, never skip it.
  5. rd.read_states: for each, the reads batched under rs.request_ctx may be
     served once the state machine's applied index is >= rs.index.
  6. advance(rd). Only then may ready() be called again (it raises otherwise;
     has_ready() is False meanwhile). Inputs may be fed between ready() and
     advance(): their effects come out in the next Ready.

Proposals and reads can be lost without an error (a leader change, a lost
message): the caller needs timeouts and retries. Errors the caller can see are
ProposalDropped / ReadIndexDropped, raised at once, with a DropReason.

Compaction: after applying up to index i, the caller may call
storage.create_snapshot(i, conf_state, data) and storage.compact(i') for some
i' <= i (keeping a few entries lets slow followers catch up without a snapshot).

Restart: seed a MemoryStorage from the WAL (apply_snapshot, append the
entries after it, set_hard_state), then RawNode(Config(..., applied=<index the
state machine has applied>), storage). `applied` must not be below the
snapshot's index (restore the state machine from the snapshot first if it is);
it may be above the saved commit index, which is not fsynced on its own.
Membership changes between the snapshot and `applied` are replayed from the
log; committed entries after `applied` come out again in committed_entries.
A brand-new cluster member calls bootstrap(peers) once, on empty storage; a
member joining an existing cluster starts with empty storage and no bootstrap
and waits for the leader to send it the log or a snapshot.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from petcd.raft.basics import NONE, Config, ReadState, Role
from petcd.raft.codec import encode_conf_change
from petcd.raft.errors import ConfigError, RequestDropped
from petcd.raft.progress import ProgressState
from petcd.raft.raft import Raft
from petcd.raft.storage import Storage
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

_LOCAL_ONLY = frozenset(
    {
        MessageType.HUP,
        MessageType.BEAT,
        MessageType.UNREACHABLE,
        MessageType.SNAP_STATUS,
        MessageType.CHECK_QUORUM,
    }
)
_RESPONSES = frozenset(
    {
        MessageType.APP_RESP,
        MessageType.VOTE_RESP,
        MessageType.HEARTBEAT_RESP,
        MessageType.PRE_VOTE_RESP,
    }
)


@dataclass(slots=True, frozen=True)
class SoftState:
    """Volatile state worth telling the caller about; never persisted."""

    lead: int  # 0: no leader known
    role: Role


@dataclass(slots=True, frozen=True)
class Peer:
    """A member of a new cluster (see RawNode.bootstrap)."""

    id: int
    context: bytes = b""  # carried in the bootstrap CONF_CHANGE entry (member info)


@dataclass(slots=True)
class Ready:
    """One batch of work for the caller; see the module docstring for the contract."""

    soft_state: SoftState | None
    hard_state: HardState | None  # None: unchanged since the previous Ready
    entries: list[Entry]  # to persist
    snapshot: Snapshot | None  # to persist and to restore the state machine from
    committed_entries: list[Entry]  # to apply, after persisting
    messages: list[Message]  # to send, after persisting (see send_before_persist)
    read_states: list[ReadState]
    must_sync: bool  # fsync the persisted data before sending / applying
    # The messages do not depend on this Ready's persistence (a leader whose
    # term and vote are already durable): they may be sent first.
    send_before_persist: bool


@dataclass(slots=True, frozen=True)
class ProgressStatus:
    """The leader's view of one member."""

    match: int
    next: int
    state: ProgressState
    paused: bool
    recent_active: bool
    is_learner: bool
    inflight: int
    pending_snapshot: int


@dataclass(slots=True, frozen=True)
class Status:
    id: int
    term: int
    vote: int
    commit: int
    applied: int
    first_index: int
    last_index: int
    lead: int
    role: Role
    conf_state: ConfState
    lead_transferee: int
    progress: dict[int, ProgressStatus]  # empty unless this member is the leader


class RawNode:
    """One Raft member, driven by its caller. Not thread-safe: call from one thread."""

    def __init__(self, config: Config, storage: Storage) -> None:
        self._raft = Raft(config, storage)
        self._prev_soft = SoftState(self._raft.lead, self._raft.role)
        self._prev_hard = self._raft.hard_state()
        self._outstanding = False

    # -- bootstrap --

    def bootstrap(self, peers: Sequence[Peer]) -> None:
        """Start a brand-new cluster whose initial voters are `peers` (self included).

        Every initial member calls this once, on empty storage, with the same
        list: the log starts with one committed CONF_CHANGE (ADD_NODE, context =
        peer.context) entry per peer at indexes 1..n, term 1. They come out of
        the first Ready as entries to persist and committed entries to apply.
        """
        r = self._raft
        storage = r.log.storage
        if not peers:
            raise ConfigError("bootstrap needs at least one peer")
        if storage.last_index() != 0 or storage.initial_state()[0] != HardState():
            raise ConfigError("bootstrap needs empty storage")
        if len({p.id for p in peers}) != len(peers) or any(p.id <= 0 for p in peers):
            raise ConfigError("peer ids must be distinct positive integers")
        r.become_follower(1, NONE)
        entries = [
            Entry(
                1,
                i,
                EntryType.CONF_CHANGE,
                encode_conf_change(ConfChange(ConfChangeType.ADD_NODE, p.id, p.context)),
            )
            for i, p in enumerate(peers, 1)
        ]
        r.log.append(entries)
        r.log.committed = len(entries)
        for p in peers:
            r.apply_conf_change(ConfChange(ConfChangeType.ADD_NODE, p.id))
        self._prev_hard = HardState()  # so the first Ready carries the hard state

    # -- inputs --

    def tick(self) -> None:
        self._raft.tick()

    def campaign(self) -> None:
        """Start an election now (no-op for a leader, a learner or a non-member)."""
        self._raft.hup()

    def propose(self, data: bytes) -> None:
        """Propose one entry. On a follower it is forwarded to the leader.
        Raises ProposalDropped if it cannot be accepted or forwarded."""
        self._raft.propose_batch((data,))

    def propose_batch(self, datas: Sequence[bytes]) -> None:
        """Propose many entries at once, in order (one append message per peer)."""
        self._raft.propose_batch(datas)

    def flush_commit(self) -> None:
        """With Config.defer_commit: send the followers the commit index now (empty
        appends), if an advance is held back (commit_unsent)."""
        self._raft.flush_commit()

    @property
    def commit_unsent(self) -> bool:
        """With Config.defer_commit: a leader's commit index advance the followers
        have not been sent yet; call flush_commit() soon."""
        return self._raft.commit_unsent

    def propose_conf_change(self, cc: ConfChange) -> None:
        """Propose a membership change. One at a time: refused (ProposalDropped
        CONF_CHANGE_PENDING) while the leader has an earlier one not yet applied."""
        entry = Entry(0, 0, EntryType.CONF_CHANGE, encode_conf_change(cc))
        self._raft.step(Message(MessageType.PROP, from_=self._raft.id, entries=(entry,)))

    def apply_conf_change(self, cc: ConfChange) -> ConfState:
        """Apply a committed CONF_CHANGE entry's change; returns the new ConfState."""
        return self._raft.apply_conf_change(cc)

    def step(self, msg: Message) -> None:
        """Feed a message received from a peer."""
        if msg.type in _LOCAL_ONLY:
            raise ValueError(f"{msg.type.name} is a local message and cannot come from a peer")
        if msg.type in _RESPONSES and msg.from_ not in self._raft.prs:
            return  # an answer from a node that is no longer a member
        try:  # noqa: SIM105 (contextlib.suppress costs ~1 us on this hot path)
            self._raft.step(msg)
        except RequestDropped:
            pass  # a dropped forwarded proposal or read has nobody to tell: its proposer retries

    def read_index(self, ctx: bytes) -> None:
        """Request a read index; it comes back as a ReadState with the same ctx
        in a later Ready. Raises ReadIndexDropped when no leader is known."""
        self._raft.read_index(ctx)

    def transfer_leader(self, target: int) -> None:
        """Ask the leader to hand leadership to `target` (a voter). Proposals are
        refused while the transfer is pending; it is abandoned after an
        election timeout."""
        self._raft.step(Message(MessageType.TRANSFER_LEADER, from_=target))

    def report_unreachable(self, node_id: int) -> None:
        self._raft.step(Message(MessageType.UNREACHABLE, from_=node_id))

    def report_snapshot(self, node_id: int, ok: bool) -> None:
        self._raft.step(Message(MessageType.SNAP_STATUS, from_=node_id, reject=not ok))

    # -- outputs --

    def has_ready(self) -> bool:
        """Is there a Ready to handle? Always False while one is outstanding
        (between ready() and advance())."""
        if self._outstanding:
            return False
        r = self._raft
        log = r.log
        return bool(
            r.msgs
            or r.read_states
            or log.unstable
            or log.pending_snapshot is not None
            or log.has_next_committed()
            or r.lead != self._prev_soft.lead
            or r.role != self._prev_soft.role
            or r.term != self._prev_hard.term
            or r.vote != self._prev_hard.vote
            or log.committed != self._prev_hard.commit
        )

    def ready(self) -> Ready:
        if self._outstanding:
            raise RuntimeError("ready() called again before advance()")
        r = self._raft
        log = r.log
        soft: SoftState | None = None
        if r.lead != self._prev_soft.lead or r.role != self._prev_soft.role:
            soft = self._prev_soft = SoftState(r.lead, r.role)
        prev = self._prev_hard
        hard: HardState | None = None
        term_or_vote_changed = r.term != prev.term or r.vote != prev.vote
        if term_or_vote_changed or log.committed != prev.commit:
            hard = self._prev_hard = HardState(r.term, r.vote, log.committed)
        entries = log.unstable[:]
        snapshot = log.pending_snapshot
        messages = r.msgs
        r.msgs = []
        read_states = r.read_states
        r.read_states = []
        self._outstanding = True
        return Ready(
            soft_state=soft,
            hard_state=hard,
            entries=entries,
            snapshot=snapshot,
            committed_entries=log.next_committed(),
            messages=messages,
            read_states=read_states,
            must_sync=bool(entries) or term_or_vote_changed or snapshot is not None,
            send_before_persist=r.role == Role.LEADER and not term_or_vote_changed,
        )

    def advance(self, rd: Ready) -> None:
        """Everything in rd is persisted, sent and applied (see the contract)."""
        if not self._outstanding:
            raise RuntimeError("advance() without an outstanding ready()")
        self._outstanding = False
        r = self._raft
        log = r.log
        if rd.committed_entries:
            log.applied_to(rd.committed_entries[-1].index)
            r.reduce_uncommitted_size(rd.committed_entries)
        elif rd.snapshot is not None and rd.snapshot.metadata.index > log.applied:
            log.applied_to(rd.snapshot.metadata.index)
        if rd.entries:
            last = rd.entries[-1]
            log.stable_to(last.index, last.term)
        if rd.snapshot is not None:
            log.stable_snap_to(rd.snapshot.metadata.index)

    # -- inspection --

    @property
    def id(self) -> int:
        return self._raft.id

    @property
    def lead(self) -> int:
        return self._raft.lead

    @property
    def role(self) -> Role:
        return self._raft.role

    @property
    def term(self) -> int:
        return self._raft.term

    @property
    def is_leader(self) -> bool:
        return self._raft.role == Role.LEADER

    @property
    def is_learner(self) -> bool:
        return self._raft.is_learner

    @property
    def voters(self) -> tuple[int, ...]:
        return self._raft.voters

    @property
    def commit_index(self) -> int:
        return self._raft.log.committed

    @property
    def last_index(self) -> int:
        return self._raft.log.last_index()

    @property
    def lead_transferee(self) -> int:
        return self._raft.lead_transferee

    def match_index(self, node_id: int) -> int | None:
        """The leader's view of how far `node_id`'s log matches ours (None: not leader or
        not a member). Cheaper than status() for one member."""
        r = self._raft
        if r.role != Role.LEADER:
            return None
        pr = r.prs.get(node_id)
        return None if pr is None else pr.match

    def status(self) -> Status:
        r = self._raft
        progress: dict[int, ProgressStatus] = {}
        if r.role == Role.LEADER:
            for node_id, pr in r.prs.items():
                progress[node_id] = ProgressStatus(
                    match=pr.match,
                    next=pr.next,
                    state=pr.state,
                    paused=pr.is_paused(),
                    recent_active=pr.recent_active,
                    is_learner=pr.is_learner,
                    inflight=len(pr.inflights),
                    pending_snapshot=pr.pending_snapshot,
                )
        return Status(
            id=r.id,
            term=r.term,
            vote=r.vote,
            commit=r.log.committed,
            applied=r.log.applied,
            first_index=r.log.first_index(),
            last_index=r.log.last_index(),
            lead=r.lead,
            role=r.role,
            conf_state=r.conf_state(),
            lead_transferee=r.lead_transferee,
            progress=progress,
        )
