"""Plain data carried between the Raft core and its caller (log entries,
durable state, snapshots). The WAL persists exactly these."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum


class EntryType(IntEnum):
    NORMAL = 0
    CONF_CHANGE = 1


# Not frozen: a frozen dataclass costs ~3x more to build, and entries are built
# once per proposal on the hot path. Treat entries as immutable all the same:
# the core shares one object between its log, Ready batches and messages.
@dataclass(slots=True)
class Entry:
    term: int
    index: int
    type: EntryType = EntryType.NORMAL
    data: bytes = b""


@dataclass(slots=True, frozen=True)
class HardState:
    """What must be on disk before any message that depends on it is sent."""

    term: int = 0
    vote: int = 0  # 0: no vote cast in this term
    commit: int = 0


@dataclass(slots=True, frozen=True)
class ConfState:
    voters: tuple[int, ...] = ()
    learners: tuple[int, ...] = ()


@dataclass(slots=True, frozen=True)
class SnapshotMetadata:
    index: int = 0
    term: int = 0
    conf_state: ConfState = field(default_factory=ConfState)


@dataclass(slots=True, frozen=True)
class Snapshot:
    metadata: SnapshotMetadata = field(default_factory=SnapshotMetadata)
    data: bytes = b""

    @property
    def is_empty(self) -> bool:
        return self.metadata.index == 0


class MessageType(IntEnum):
    """Kinds of Message; the numbers match etcd's raftpb.MessageType."""

    HUP = 0  # local: start an election
    BEAT = 1  # local: leader sends heartbeats
    PROP = 2  # proposal (local, or forwarded by a follower to the leader)
    APP = 3  # append entries
    APP_RESP = 4
    VOTE = 5
    VOTE_RESP = 6
    SNAP = 7  # install snapshot
    HEARTBEAT = 8
    HEARTBEAT_RESP = 9
    UNREACHABLE = 10  # local: the transport could not reach a peer
    SNAP_STATUS = 11  # local: the transport reports a snapshot's fate
    CHECK_QUORUM = 12  # local: leader checks it still hears from a quorum
    TRANSFER_LEADER = 13
    TIMEOUT_NOW = 14  # leader tells the transfer target to campaign at once
    READ_INDEX = 15
    READ_INDEX_RESP = 16
    PRE_VOTE = 17
    PRE_VOTE_RESP = 18


@dataclass(slots=True)
class Message:
    """One Raft message between members (or a local event fed to step()).

    Treat as immutable once built: the core never changes a message it has
    sent or received, so one object may be delivered twice.
    """

    type: MessageType
    to: int = 0
    from_: int = 0
    term: int = 0
    log_term: int = 0
    index: int = 0
    entries: Sequence[Entry] = ()
    commit: int = 0
    snapshot: Snapshot | None = None
    reject: bool = False
    reject_hint: int = 0
    context: bytes = b""


class ConfChangeType(IntEnum):
    """The numbers match etcd's raftpb.ConfChangeType."""

    ADD_NODE = 0  # add a voter, or promote an existing learner to voter
    REMOVE_NODE = 1
    UPDATE_NODE = 2  # no change for Raft; lets the server update member attributes
    ADD_LEARNER_NODE = 3


@dataclass(slots=True, frozen=True)
class ConfChange:
    """A single membership change: the data of a CONF_CHANGE entry (see codec).

    `context` is opaque to Raft (the server puts member information there);
    `id` is an opaque request id the server may use to match the applied change.
    """

    type: ConfChangeType
    node_id: int
    context: bytes = b""
    id: int = 0
