"""Typed results. Each is a frozen dataclass built from the wire message by its
`from_pb`; keys and values stay `bytes` (etcd keys are bytes, not text)."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field

from petcd.pb.authpb import auth_pb2
from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.pb.mvccpb import kv_pb2


@dataclass(frozen=True, slots=True)
class Header:
    cluster_id: int = 0
    member_id: int = 0
    revision: int = 0
    raft_term: int = 0

    @classmethod
    def from_pb(cls, h: rpc.ResponseHeader) -> Header:
        return cls(h.cluster_id, h.member_id, h.revision, h.raft_term)


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: bytes
    value: bytes = b""
    create_revision: int = 0
    mod_revision: int = 0
    version: int = 0
    lease: int = 0

    @classmethod
    def from_pb(cls, kv: kv_pb2.KeyValue) -> KeyValue:
        return cls(kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version,
                   kv.lease)


def _kv_or_none(msg: object, name: str) -> KeyValue | None:
    if msg.HasField(name):  # type: ignore[attr-defined]
        return KeyValue.from_pb(getattr(msg, name))
    return None


@dataclass(frozen=True, slots=True)
class GetResult:
    header: Header
    kvs: list[KeyValue]
    more: bool = False
    count: int = 0

    @classmethod
    def from_pb(cls, r: rpc.RangeResponse) -> GetResult:
        return cls(Header.from_pb(r.header), [KeyValue.from_pb(kv) for kv in r.kvs],
                   r.more, r.count)

    @property
    def value(self) -> bytes | None:
        """The first key's value, or None when nothing matched."""
        return self.kvs[0].value if self.kvs else None


@dataclass(frozen=True, slots=True)
class PutResult:
    header: Header
    prev_kv: KeyValue | None = None

    @classmethod
    def from_pb(cls, r: rpc.PutResponse) -> PutResult:
        return cls(Header.from_pb(r.header), _kv_or_none(r, "prev_kv"))


@dataclass(frozen=True, slots=True)
class DeleteResult:
    header: Header
    deleted: int = 0
    prev_kvs: list[KeyValue] = field(default_factory=list)

    @classmethod
    def from_pb(cls, r: rpc.DeleteRangeResponse) -> DeleteResult:
        return cls(Header.from_pb(r.header), r.deleted,
                   [KeyValue.from_pb(kv) for kv in r.prev_kvs])


@dataclass(frozen=True, slots=True)
class TxnResult:
    header: Header
    succeeded: bool
    responses: list[GetResult | PutResult | DeleteResult | TxnResult]

    @classmethod
    def from_pb(cls, r: rpc.TxnResponse) -> TxnResult:
        out: list[GetResult | PutResult | DeleteResult | TxnResult] = []
        for op in r.responses:
            kind = op.WhichOneof("response")
            if kind == "response_range":
                out.append(GetResult.from_pb(op.response_range))
            elif kind == "response_put":
                out.append(PutResult.from_pb(op.response_put))
            elif kind == "response_delete_range":
                out.append(DeleteResult.from_pb(op.response_delete_range))
            else:
                out.append(TxnResult.from_pb(op.response_txn))
        return cls(Header.from_pb(r.header), r.succeeded, out)


class EventType(enum.Enum):
    PUT = 0
    DELETE = 1


@dataclass(frozen=True, slots=True)
class Event:
    type: EventType
    kv: KeyValue
    prev_kv: KeyValue | None = None

    @classmethod
    def from_pb(cls, e: kv_pb2.Event) -> Event:
        return cls(EventType(e.type), KeyValue.from_pb(e.kv), _kv_or_none(e, "prev_kv"))


@dataclass(frozen=True, slots=True)
class WatchResponse:
    """One batch of a watch: the events of one or more whole revisions, or a progress
    notification (no events; every event up to `header.revision` was delivered)."""

    header: Header
    events: list[Event]
    progress_notify: bool = False


@dataclass(frozen=True, slots=True)
class LeaseGrant:
    header: Header
    id: int
    ttl: int

    @classmethod
    def from_pb(cls, r: rpc.LeaseGrantResponse) -> LeaseGrant:
        return cls(Header.from_pb(r.header), r.ID, r.TTL)


@dataclass(frozen=True, slots=True)
class LeaseKeepAlive:
    header: Header
    id: int
    ttl: int  # 0 or less: the lease is gone

    @classmethod
    def from_pb(cls, r: rpc.LeaseKeepAliveResponse) -> LeaseKeepAlive:
        return cls(Header.from_pb(r.header), r.ID, r.TTL)


@dataclass(frozen=True, slots=True)
class LeaseTTL:
    header: Header
    id: int
    ttl: int  # -1: no such lease
    granted_ttl: int
    keys: list[bytes]

    @classmethod
    def from_pb(cls, r: rpc.LeaseTimeToLiveResponse) -> LeaseTTL:
        return cls(Header.from_pb(r.header), r.ID, r.TTL, r.grantedTTL, list(r.keys))


@dataclass(frozen=True, slots=True)
class Member:
    id: int
    name: str
    peer_urls: list[str]
    client_urls: list[str]
    is_learner: bool = False

    @classmethod
    def from_pb(cls, m: rpc.Member) -> Member:
        return cls(m.ID, m.name, list(m.peerURLs), list(m.clientURLs), m.isLearner)


def _members(ms: Sequence[rpc.Member]) -> list[Member]:
    return [Member.from_pb(m) for m in ms]


@dataclass(frozen=True, slots=True)
class MemberListResult:
    header: Header
    members: list[Member]

    @classmethod
    def from_pb(cls, r: rpc.MemberListResponse | rpc.MemberRemoveResponse
                | rpc.MemberUpdateResponse | rpc.MemberPromoteResponse) -> MemberListResult:
        return cls(Header.from_pb(r.header), _members(r.members))


@dataclass(frozen=True, slots=True)
class MemberAddResult:
    header: Header
    member: Member
    members: list[Member]

    @classmethod
    def from_pb(cls, r: rpc.MemberAddResponse) -> MemberAddResult:
        return cls(Header.from_pb(r.header), Member.from_pb(r.member), _members(r.members))


@dataclass(frozen=True, slots=True)
class Status:
    header: Header
    version: str
    db_size: int
    leader: int
    raft_index: int
    raft_term: int
    raft_applied_index: int
    errors: list[str]
    db_size_in_use: int
    is_learner: bool

    @classmethod
    def from_pb(cls, r: rpc.StatusResponse) -> Status:
        return cls(Header.from_pb(r.header), r.version, r.dbSize, r.leader, r.raftIndex,
                   r.raftTerm, r.raftAppliedIndex, list(r.errors), r.dbSizeInUse,
                   r.isLearner)


class AlarmType(enum.Enum):
    NONE = 0
    NOSPACE = 1
    CORRUPT = 2


@dataclass(frozen=True, slots=True)
class Alarm:
    member_id: int
    alarm: AlarmType


def alarms_from_pb(r: rpc.AlarmResponse) -> list[Alarm]:
    return [Alarm(a.memberID, AlarmType(a.alarm)) for a in r.alarms]


@dataclass(frozen=True, slots=True)
class HashKV:
    header: Header
    hash: int
    compact_revision: int

    @classmethod
    def from_pb(cls, r: rpc.HashKVResponse) -> HashKV:
        return cls(Header.from_pb(r.header), r.hash, r.compact_revision)


class PermissionType(enum.Enum):
    READ = 0
    WRITE = 1
    READWRITE = 2


@dataclass(frozen=True, slots=True)
class Permission:
    type: PermissionType
    key: bytes
    range_end: bytes = b""

    @classmethod
    def from_pb(cls, p: auth_pb2.Permission) -> Permission:
        return cls(PermissionType(p.permType), p.key, p.range_end)


@dataclass(frozen=True, slots=True)
class AuthStatus:
    header: Header
    enabled: bool
    auth_revision: int

    @classmethod
    def from_pb(cls, r: rpc.AuthStatusResponse) -> AuthStatus:
        return cls(Header.from_pb(r.header), r.enabled, r.authRevision)
