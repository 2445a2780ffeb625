"""A sans-IO Raft core: a pure, deterministic state machine.

No sockets, threads, clocks or files: the caller ticks it, steps messages
into it, proposes data, and takes back Ready batches to persist, send and
apply (the exact contract is in petcd.raft.rawnode). Knows nothing of the
rest of petcd.
"""

from petcd.raft.basics import NONE, Config, ReadState, Role
from petcd.raft.codec import (
    CodecError,
    decode_conf_change,
    decode_message,
    encode_conf_change,
    encode_message,
)
from petcd.raft.errors import (
    CompactedError,
    ConfigError,
    DropReason,
    InvariantViolation,
    ProposalDropped,
    RaftError,
    ReadIndexDropped,
    RequestDropped,
    SnapshotOutOfDateError,
    SnapshotTemporarilyUnavailable,
    StorageError,
    UnavailableError,
)
from petcd.raft.progress import ProgressState
from petcd.raft.rawnode import Peer, ProgressStatus, RawNode, Ready, SoftState, Status
from petcd.raft.storage import MemoryStorage, Storage
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
    SnapshotMetadata,
)

__all__ = [
    "NONE",
    "CodecError",
    "CompactedError",
    "ConfChange",
    "ConfChangeType",
    "ConfState",
    "Config",
    "ConfigError",
    "DropReason",
    "Entry",
    "EntryType",
    "HardState",
    "InvariantViolation",
    "MemoryStorage",
    "Message",
    "MessageType",
    "Peer",
    "ProgressState",
    "ProgressStatus",
    "ProposalDropped",
    "RaftError",
    "RawNode",
    "ReadIndexDropped",
    "ReadState",
    "Ready",
    "RequestDropped",
    "Role",
    "Snapshot",
    "SnapshotMetadata",
    "SnapshotOutOfDateError",
    "SnapshotTemporarilyUnavailable",
    "SoftState",
    "Status",
    "Storage",
    "StorageError",
    "UnavailableError",
    "decode_conf_change",
    "decode_message",
    "encode_conf_change",
    "encode_message",
]
