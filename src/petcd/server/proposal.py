"""A proposal: one client mutation on its way into the log. The API layer builds it
from the raw request bytes (no re-encoding); a log entry carries `data`, a
serialized petcdinternal.InternalRequest; the proposing member also keeps the
parsed request so that applying its own entries needs no second parse."""

from __future__ import annotations

from typing import Any

from google.protobuf.message import Message

from petcd.pb.internalpb.internal_pb2 import InternalRequest
from petcd.pb.wire import varint as varint  # re-exported: callers import it from here
from petcd.pb.wire import varint_len as varint_len

# The oneof field of InternalRequest that carries each kind of proposal.
PUT = "put"
DELETE_RANGE = "delete_range"
TXN = "txn"
COMPACTION = "compaction"


# What the caller of a proposal receives: the response message, or the EtcdError the
# apply raised (returned, not raised, so that the hot path has no exception machinery).
Result = Any  # Message | EtcdError


def entry_size(raw_len: int) -> int:
    """Size of the log entry a request of raw_len bytes becomes in etcd (its marshaled
    InternalRaftRequest: the request plus a header with a ~9 byte request ID).
    --max-request-bytes is checked against this, as etcd does, not the raw size."""
    return raw_len + varint_len(raw_len) + 14


# Who made a client request and the auth revision it was checked at (InternalRequest
# .auth); None for a member's own requests (lease expiry, alarms).
Stamp = tuple[str, int] | None
# A client request made while auth was disabled: refused if it applies after auth
# got enabled ("user name is empty", as etcd).
ANON: Stamp = ("", 0)
_ANON_BYTES = b"\x1a\x00"


def encode_stamp(stamp: Stamp) -> bytes:
    """InternalRequest field 3 (AuthStamp), b"" for None."""
    if stamp is None:
        return b""
    if stamp is ANON:
        return _ANON_BYTES
    cached = _STAMPS.get(stamp)
    if cached is not None:
        return cached
    if len(_STAMPS) >= 1024:
        _STAMPS.clear()
    _STAMPS[stamp] = encoded = _encode_stamp(*stamp)
    return encoded


_STAMPS: dict[tuple[str, int], bytes] = {}  # (user, revision) -> bytes: few distinct


def _encode_stamp(user: str, rev: int) -> bytes:
    body = b""
    if user:
        name = user.encode()
        body += b"\x0a" + varint(len(name)) + name
    if rev:
        body += b"\x10" + varint(rev)
    return b"\x1a" + varint(len(body)) + body


class Committed:
    """A log entry ready to apply. `request` is set when this member proposed it (or
    decoded it already; a raft ConfChange for membership changes)."""

    __slots__ = ("data", "index", "kind", "request", "stamp", "term")

    def __init__(self, index: int, term: int, kind: str | None, request: Any,
                 data: bytes = b"", stamp: Stamp = None) -> None:
        self.index = index
        self.term = term
        self.kind = kind
        self.request = request
        self.data = data
        self.stamp = stamp

    def decode(self) -> tuple[str | None, Message | None]:
        if self.request is not None:
            return self.kind, self.request
        if not self.data:
            return None, None  # an empty entry (e.g. a new leader's no-op)
        ir = InternalRequest.FromString(self.data)
        kind = ir.WhichOneof("request")
        if ir.HasField("auth"):
            self.stamp = (ir.auth.username, ir.auth.revision)
        return kind, (getattr(ir, kind) if kind else None)
