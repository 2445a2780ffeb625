"""Names the parts of the Raft engine share: the member config, roles, read states, and
short aliases of the message, entry and progress types the hot paths compare against."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING

from petcd.raft.errors import (
    ConfigError,
)
from petcd.raft.progress import ProgressState
from petcd.raft.types import (
    EntryType,
    Message,
    MessageType,
)

if TYPE_CHECKING:
    from petcd.raft.log import RaftLog
    from petcd.raft.progress import Progress

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
    # A leader's newly advanced commit index is not broadcast at once in empty appends:
    # it rides on the next append that carries entries (a stream of lone writes: each
    # follower is woken, and answers, once per write instead of twice), or goes out when
    # the caller calls RawNode.flush_commit() (petcd's driver: a few ms later).
    # Heartbeats carry it too. Not deferred: a commit of entries a follower forwarded
    # (their proposer waits for it), and a read index answered to a follower.
    # False: etcd's behaviour, broadcast at once.
    defer_commit: bool = False
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


class PendingRead:
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


class RaftFields:
    """The state Raft.__init__ sets up, declared once for the role mixins (leader.py,
    follower.py) that read and write it: annotations only, no attributes at runtime."""

    id: int
    term: int
    lead: int
    role: Role
    log: RaftLog
    msgs: list[Message]
    read_states: list[ReadState]
    prs: dict[int, Progress]
    peers: tuple[int, ...]
    voters: tuple[int, ...]
    learners: tuple[int, ...]
    voter_set: frozenset[int]
    is_learner: bool
    election_elapsed: int
    lead_transferee: int
    pending_conf_index: int
    pending_reads: dict[bytes, PendingRead]
    deferred_reads: list[Message]
    disable_proposal_forwarding: bool
    defer_commit: bool
    commit_unsent: bool  # a commit index advance not yet broadcast (defer_commit)
    forwarded_last: int  # index of the last entry a follower proposed (never deferred)
    max_msg_size: int
    max_inflight: int
    max_uncommitted_size: int
    uncommitted_size: int
