"""One exception hierarchy for everything the client can raise.

Every gRPC error is translated here (`from_rpc_error`): a caller never sees a raw
`grpc.RpcError`. Server errors keep etcd's status code and message word for word (the
message is how etcd clients recognise an error), and the common ones get their own class
so they can be caught by type:

    try:
        client.get(b"k", revision=3)
    except CompactedError as e:
        print("history before", e.compact_revision, "is gone")
"""

from __future__ import annotations

import grpc


class EtcdError(Exception):
    """Base of every client error. `code` is the gRPC status code (None for purely
    client-side errors), `message` etcd's text (e.g. "etcdserver: key not found")."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code

    def __repr__(self) -> str:
        code = self.code.name if self.code is not None else None
        return f"{type(self).__name__}({self.message!r}, code={code})"


# -- transport and availability

class ConnectionFailedError(EtcdError):
    """No endpoint could be reached (every member tried)."""


class DeadlineExceededError(EtcdError):
    """The call's deadline passed (DEADLINE_EXCEEDED, or a dial timeout)."""


class UnavailableError(EtcdError):
    """The member answered that it cannot serve now (no leader, request timed out,
    leader changed...): the request may or may not have been applied."""


class NoLeaderError(UnavailableError):
    """etcdserver: no leader."""


class ClientClosedError(EtcdError):
    """The client (or the watch / keep-alive) was closed."""


# -- request errors

class InvalidArgumentError(EtcdError):
    """The request was refused as malformed (INVALID_ARGUMENT)."""


class EmptyKeyError(InvalidArgumentError):
    """etcdserver: key is not provided."""


class KeyNotFoundError(InvalidArgumentError):
    """etcdserver: key not found (put with ignore_value/ignore_lease on a missing key)."""


class RequestTooLargeError(InvalidArgumentError):
    """etcdserver: request is too large."""


class DuplicateKeyError(InvalidArgumentError):
    """etcdserver: duplicate key given in txn request."""


class TooManyOpsError(InvalidArgumentError):
    """etcdserver: too many operations in txn request."""


class RevisionError(EtcdError):
    """A requested revision is out of range."""


class CompactedError(RevisionError):
    """The revision asked for is older than the compacted one. `compact_revision` is the
    compacted revision when the server said it (watches always do), else 0."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None,
                 compact_revision: int = 0) -> None:
        super().__init__(message, code)
        self.compact_revision = compact_revision


class FutureRevisionError(RevisionError):
    """etcdserver: mvcc: required revision is a future revision."""


class NoSpaceError(EtcdError):
    """etcdserver: mvcc: database space exceeded (the NOSPACE alarm is raised)."""


class TooManyRequestsError(EtcdError):
    """etcdserver: too many requests."""


# -- leases

class LeaseError(EtcdError):
    """A lease problem."""


class LeaseNotFoundError(LeaseError):
    """etcdserver: requested lease not found."""


class LeaseExpiredError(LeaseError):
    """A background keep-alive lost its lease (expired or revoked)."""


# -- watch

class WatchError(EtcdError):
    """A watch was canceled by the server for a reason we cannot recover from."""


# -- auth

class AuthError(EtcdError):
    """An authentication or authorization error."""


class AuthFailedError(AuthError):
    """etcdserver: authentication failed, invalid user ID or password."""


class InvalidAuthTokenError(AuthError):
    """etcdserver: invalid auth token (renewed transparently when a password is known)."""


class PermissionDeniedError(AuthError):
    """etcdserver: permission denied."""


class AuthNotEnabledError(AuthError):
    """etcdserver: authentication is not enabled."""


class UserNotFoundError(AuthError):
    """etcdserver: user name not found."""


class RoleNotFoundError(AuthError):
    """etcdserver: role name not found."""


# -- cluster

class ClusterError(EtcdError):
    """A membership error."""


class MemberNotFoundError(ClusterError):
    """etcdserver: member not found."""


class PreconditionError(EtcdError):
    """FAILED_PRECONDITION without a more specific class."""


class NotFoundError(EtcdError):
    """NOT_FOUND without a more specific class."""


class UnimplementedError(EtcdError):
    """The server does not implement this call."""


_P = "etcdserver: "
_BY_MESSAGE: dict[str, type[EtcdError]] = {
    _P + "key is not provided": EmptyKeyError,
    _P + "key not found": KeyNotFoundError,
    _P + "request is too large": RequestTooLargeError,
    _P + "duplicate key given in txn request": DuplicateKeyError,
    _P + "too many operations in txn request": TooManyOpsError,
    _P + "mvcc: required revision has been compacted": CompactedError,
    _P + "mvcc: required revision is a future revision": FutureRevisionError,
    _P + "mvcc: database space exceeded": NoSpaceError,
    _P + "too many requests": TooManyRequestsError,
    _P + "requested lease not found": LeaseNotFoundError,
    _P + "authentication failed, invalid user ID or password": AuthFailedError,
    _P + "invalid auth token": InvalidAuthTokenError,
    _P + "permission denied": PermissionDeniedError,
    _P + "authentication is not enabled": AuthNotEnabledError,
    _P + "user name not found": UserNotFoundError,
    _P + "role name not found": RoleNotFoundError,
    _P + "member not found": MemberNotFoundError,
    _P + "no leader": NoLeaderError,
}

_BY_CODE: dict[grpc.StatusCode, type[EtcdError]] = {
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.OUT_OF_RANGE: RevisionError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.UNAUTHENTICATED: AuthError,
    grpc.StatusCode.FAILED_PRECONDITION: PreconditionError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.UNIMPLEMENTED: UnimplementedError,
    grpc.StatusCode.CANCELLED: ClientClosedError,
}


def error_for(code: grpc.StatusCode | None, message: str) -> EtcdError:
    """The exception for a status code and message (etcd's words pick the class)."""
    cls = _BY_MESSAGE.get(message)
    if cls is None and code is not None:
        if code == grpc.StatusCode.UNAVAILABLE and _is_transport_failure(message):
            cls = ConnectionFailedError
        else:
            cls = _BY_CODE.get(code, EtcdError)
    return (cls or EtcdError)(message, code)


def from_rpc_error(e: grpc.RpcError) -> EtcdError:
    """Translate a grpc error (sync or aio) into our hierarchy."""
    code = e.code() if hasattr(e, "code") else None
    details = e.details() if hasattr(e, "details") else None
    return error_for(code, details or str(e))


def _is_transport_failure(details: str) -> bool:
    d = details.lower()
    return not d.startswith(_P) and any(w in d for w in _TRANSPORT_WORDS)


_TRANSPORT_WORDS = ("failed to connect", "connection refused", "socket closed",
                    "connection reset", "broken pipe", "goaway", "connection attempt",
                    "unavailable", "end of stream", "keepalive", "transport")


def surely_not_sent(e: grpc.RpcError) -> bool:
    """True when gRPC failed before the request could reach a server: no connection was
    ever made for this call. Only then may a write be retried on another member."""
    if not hasattr(e, "code") or e.code() != grpc.StatusCode.UNAVAILABLE:
        return False
    d = (e.details() or "").lower()
    return "failed to connect to all addresses" in d or "dns resolution failed" in d
