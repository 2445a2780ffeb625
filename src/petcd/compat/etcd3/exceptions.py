"""python-etcd3's exceptions, and the translation from petcd.client's."""

from __future__ import annotations

from typing import Any

import grpc

from petcd.client import errors as e


class Etcd3Exception(Exception):
    pass


class WatchTimedOut(Etcd3Exception):
    pass


class InternalServerError(Etcd3Exception):
    pass


class ConnectionFailedError(Etcd3Exception):
    def __str__(self) -> str:
        return "etcd connection failed"


class ConnectionTimeoutError(Etcd3Exception):
    def __str__(self) -> str:
        return "etcd connection timeout"


class PreconditionFailedError(Etcd3Exception):
    pass


class RevisionCompactedError(Etcd3Exception):
    def __init__(self, compacted_revision: int) -> None:
        self.compacted_revision = compacted_revision
        super().__init__()


class NoServerAvailableError(Etcd3Exception):
    pass


class RpcError(Etcd3Exception, grpc.RpcError):
    """Any other server error. python-etcd3 let these through as grpc.RpcError; this one
    is both, with the same code() and details()."""

    def __init__(self, err: e.EtcdError) -> None:
        super().__init__(err.message)
        self._err = err

    def code(self) -> Any:
        return self._err.code

    def details(self) -> str:
        return self._err.message


def translate(err: e.EtcdError) -> Exception:
    """python-etcd3's exception for a petcd.client error."""
    if isinstance(err, e.CompactedError):
        return RevisionCompactedError(err.compact_revision)
    if isinstance(err, (e.ConnectionFailedError, e.UnavailableError)):
        return ConnectionFailedError(err.message)
    if isinstance(err, e.DeadlineExceededError):
        return ConnectionTimeoutError(err.message)
    if err.code == grpc.StatusCode.FAILED_PRECONDITION:
        return PreconditionFailedError(err.message)
    if err.code == grpc.StatusCode.INTERNAL:
        return InternalServerError(err.message)
    return RpcError(err)
