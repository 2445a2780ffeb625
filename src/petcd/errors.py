"""The errors etcd clients can receive, with etcd's exact gRPC status code and
message. Clients match on the message text (clientv3 maps it back to typed
errors), so both must stay byte-for-byte as etcd sends them.

The constants below are error *kinds*. Raise a fresh error of a kind by calling it,
`raise errors.NO_LEADER()`, never the constant itself (a raised exception carries its
traceback, cause and context: a shared one would carry the last raiser's); test a
caught error with `e.kind is errors.NO_LEADER`.

One convention for where errors go: below the API layer a function raises EtcdError,
and a future carries it with set_exception. Two hot paths hand it over as a value
instead, to keep exception machinery off every write: a proposal's result (the
response or the EtcdError its apply raised) and a permission or membership check
(`EtcdError | None`). The API layer turns an EtcdError into the gRPC status.
"""

from __future__ import annotations

from grpc import StatusCode


class EtcdError(Exception):
    """An error with the gRPC status code and message etcd would answer."""

    __slots__ = ("code", "kind", "message")

    def __init__(self, code: StatusCode, message: str, kind: EtcdError | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.kind: EtcdError = self if kind is None else kind

    def __call__(self) -> EtcdError:
        """A fresh error of this one's kind, to raise or return."""
        return EtcdError(self.code, self.message, self.kind)

    def __eq__(self, other: object) -> bool:
        """Errors are equal when a client could not tell them apart: same code and words."""
        if not isinstance(other, EtcdError):
            return NotImplemented
        return self.code == other.code and self.message == other.message

    def __hash__(self) -> int:
        return hash((self.code, self.message))

    def __repr__(self) -> str:
        return f"EtcdError({self.code.name}, {self.message!r})"


def _e(code: StatusCode, text: str) -> EtcdError:
    return EtcdError(code, "etcdserver: " + text)


_INVALID = StatusCode.INVALID_ARGUMENT
_PRECONDITION = StatusCode.FAILED_PRECONDITION
_UNAVAILABLE = StatusCode.UNAVAILABLE

# KV
EMPTY_KEY = _e(_INVALID, "key is not provided")
KEY_NOT_FOUND = _e(_INVALID, "key not found")
VALUE_PROVIDED = _e(_INVALID, "value is provided")
LEASE_PROVIDED = _e(_INVALID, "lease is provided")
TOO_MANY_OPS = _e(_INVALID, "too many operations in txn request")
DUPLICATE_KEY = _e(_INVALID, "duplicate key given in txn request")
COMPACTED = _e(StatusCode.OUT_OF_RANGE, "mvcc: required revision has been compacted")
FUTURE_REV = _e(StatusCode.OUT_OF_RANGE, "mvcc: required revision is a future revision")
NO_SPACE = _e(StatusCode.RESOURCE_EXHAUSTED, "mvcc: database space exceeded")

# Lease
LEASE_NOT_FOUND = _e(StatusCode.NOT_FOUND, "requested lease not found")
LEASE_EXIST = _e(_PRECONDITION, "lease already exists")
LEASE_TTL_TOO_LARGE = _e(StatusCode.OUT_OF_RANGE, "too large lease TTL")

# Watch
WATCH_CANCELED = _e(StatusCode.CANCELLED, "watch canceled")

# Cluster membership
MEMBER_EXIST = _e(_PRECONDITION, "member ID already exist")
PEER_URL_EXIST = _e(_PRECONDITION, "Peer URLs already exists")
MEMBER_NOT_ENOUGH_STARTED = _e(
    _PRECONDITION, "re-configuration failed due to not enough started members"
)
MEMBER_BAD_URLS = _e(_INVALID, "given member URLs are invalid")
MEMBER_NOT_FOUND = _e(StatusCode.NOT_FOUND, "member not found")
MEMBER_NOT_LEARNER = _e(_PRECONDITION, "can only promote a learner member")
LEARNER_NOT_READY = _e(
    _PRECONDITION, "can only promote a learner member which is in sync with leader"
)
TOO_MANY_LEARNERS = _e(_PRECONDITION, "too many learner members in cluster")

# Request limits
REQUEST_TOO_LARGE = _e(_INVALID, "request is too large")
TOO_MANY_REQUESTS = _e(StatusCode.RESOURCE_EXHAUSTED, "too many requests")

# Auth
ROOT_USER_NOT_EXIST = _e(_PRECONDITION, "root user does not exist")
ROOT_ROLE_NOT_EXIST = _e(_PRECONDITION, "root user does not have root role")
USER_ALREADY_EXIST = _e(_PRECONDITION, "user name already exists")
USER_EMPTY = _e(_INVALID, "user name is empty")
USER_NOT_FOUND = _e(_PRECONDITION, "user name not found")
ROLE_ALREADY_EXIST = _e(_PRECONDITION, "role name already exists")
ROLE_NOT_FOUND = _e(_PRECONDITION, "role name not found")
ROLE_EMPTY = _e(_INVALID, "role name is empty")
AUTH_FAILED = _e(_INVALID, "authentication failed, invalid user ID or password")
PERMISSION_DENIED = _e(StatusCode.PERMISSION_DENIED, "permission denied")
ROLE_NOT_GRANTED = _e(_PRECONDITION, "role is not granted to the user")
PERMISSION_NOT_GRANTED = _e(_PRECONDITION, "permission is not granted to the role")
AUTH_NOT_ENABLED = _e(_PRECONDITION, "authentication is not enabled")
INVALID_AUTH_TOKEN = _e(StatusCode.UNAUTHENTICATED, "invalid auth token")
INVALID_AUTH_MGMT = _e(_INVALID, "invalid auth management")
AUTH_OLD_REVISION = _e(_INVALID, "revision of auth store is old")

# Server and cluster state
NO_LEADER = _e(_UNAVAILABLE, "no leader")
NOT_LEADER = _e(_PRECONDITION, "not leader")
LEADER_CHANGED = _e(_UNAVAILABLE, "leader changed")
NOT_CAPABLE = _e(_UNAVAILABLE, "not capable")
STOPPED = _e(_UNAVAILABLE, "server stopped")
TIMEOUT = _e(_UNAVAILABLE, "request timed out")
TIMEOUT_DUE_TO_LEADER_FAIL = _e(
    _UNAVAILABLE, "request timed out, possibly due to previous leader failure"
)
TIMEOUT_DUE_TO_CONNECTION_LOST = _e(
    _UNAVAILABLE, "request timed out, possibly due to connection lost"
)
TIMEOUT_WAIT_APPLIED_INDEX = _e(
    _UNAVAILABLE, "request timed out, waiting for the applied index took too long"
)
UNHEALTHY = _e(_UNAVAILABLE, "unhealthy cluster")
CORRUPT = _e(StatusCode.DATA_LOSS, "corrupt cluster")
NOT_SUPPORTED_FOR_LEARNER = _e(_UNAVAILABLE, "rpc not supported for learner")
BAD_LEADER_TRANSFEREE = _e(_PRECONDITION, "bad leader transferee")
# Not in etcd's gRPC error table: it reaches clients with code Unknown.
TIMEOUT_LEADER_TRANSFER = _e(
    StatusCode.UNKNOWN, "request timed out, leader transfer took too long"
)


class LeaderUnreachable(Exception):
    """Raised by a call made on the leader's behalf (petcd.server.raftnode.leadership
    LeaderWatch.call_leader): the leader could not be asked, or the member asked no longer
    leads. The helper asks again, of whoever leads then, until the request's deadline."""
