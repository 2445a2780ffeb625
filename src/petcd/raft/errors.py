"""Errors raised by the Raft core to its caller."""

from __future__ import annotations

from enum import Enum


class RaftError(Exception):
    """Base class of every error the Raft core raises on purpose."""


class DropReason(Enum):
    """Why a proposal or a read request was not accepted."""

    NO_LEADER = "no leader is known"
    TRANSFER_PENDING = "a leadership transfer is in progress"
    NOT_IN_CONFIG = "this member is not in the configuration"
    CONF_CHANGE_PENDING = "a configuration change is still waiting to be applied"
    UNCOMMITTED_LIMIT = "too much uncommitted data in the log"
    FORWARDING_DISABLED = "proposal forwarding to the leader is disabled"
    INVALID_CONF_CHANGE = "the configuration change is malformed or would leave no voter"


class RequestDropped(RaftError):
    """A request was refused; the caller may retry later (e.g. once a leader is known)."""

    def __init__(self, reason: DropReason) -> None:
        super().__init__(reason.value)
        self.reason = reason


class ProposalDropped(RequestDropped):
    """propose / propose_batch / propose_conf_change was refused."""


class ReadIndexDropped(RequestDropped):
    """read_index was refused (no leader known to serve it)."""


class StorageError(RaftError):
    """Base class of errors a Storage raises for the core to interpret."""


class CompactedError(StorageError):
    """The requested index is below the first index kept (compacted away)."""


class UnavailableError(StorageError):
    """The requested index is above the last index stored."""


class SnapshotOutOfDateError(StorageError):
    """A snapshot older than (or as old as) the current one was offered."""


class SnapshotTemporarilyUnavailable(StorageError):
    """Storage cannot produce a snapshot right now; the leader retries later."""


class ConfigError(RaftError, ValueError):
    """Invalid Config, bootstrap request, or storage contents at start-up."""


class InvariantViolation(RaftError, AssertionError):
    """The core detected state that a correct caller and a correct core never produce
    (e.g. a conflict with a committed entry). Not retryable: stop the member."""
