"""Every unary etcd call as a value: the gRPC method, the request, how to parse the
answer and whether it may be retried on another member. The sync and asyncio clients
are thin layers that execute these (`Client._unary`, `AsyncClient._unary`), so the two
flavours share all request building and parsing."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from google.protobuf.message import Message

from petcd.client import types as t
from petcd.client.ops import Bytes, Delete, Get, Put, Txn, key_range, to_bytes
from petcd.pb.authpb import auth_pb2
from petcd.pb.etcdserverpb import rpc_pb2 as rpc

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    method: str
    request: Message
    response_type: type[Message]
    parse: Callable[[Any], T]
    # May run again on another member after an error that leaves its fate unknown.
    idempotent: bool = False


def _header(r: Any) -> t.Header:
    return t.Header.from_pb(r.header)


# -- KV

def get(op: Get) -> Call[t.GetResult]:
    return Call("/etcdserverpb.KV/Range", op.to_pb(), rpc.RangeResponse, t.GetResult.from_pb,
                True)


def put(op: Put) -> Call[t.PutResult]:
    return Call("/etcdserverpb.KV/Put", op.to_pb(), rpc.PutResponse, t.PutResult.from_pb)


def delete(op: Delete) -> Call[t.DeleteResult]:
    return Call("/etcdserverpb.KV/DeleteRange", op.to_pb(), rpc.DeleteRangeResponse,
                t.DeleteResult.from_pb)


def txn(op: Txn) -> Call[t.TxnResult]:
    return Call("/etcdserverpb.KV/Txn", op.to_pb(), rpc.TxnResponse, t.TxnResult.from_pb,
                op.read_only)


def compact(revision: int, physical: bool) -> Call[t.Header]:
    # Compacting twice to the same revision is harmless (the second answers "compacted").
    return Call("/etcdserverpb.KV/Compact",
                rpc.CompactionRequest(revision=revision, physical=physical),
                rpc.CompactionResponse, _header)


# -- Lease

def lease_grant(ttl: int, lease_id: int) -> Call[t.LeaseGrant]:
    return Call("/etcdserverpb.Lease/LeaseGrant", rpc.LeaseGrantRequest(TTL=ttl, ID=lease_id),
                rpc.LeaseGrantResponse, t.LeaseGrant.from_pb)


def lease_revoke(lease_id: int) -> Call[t.Header]:
    return Call("/etcdserverpb.Lease/LeaseRevoke", rpc.LeaseRevokeRequest(ID=lease_id),
                rpc.LeaseRevokeResponse, _header)


def lease_time_to_live(lease_id: int, keys: bool) -> Call[t.LeaseTTL]:
    return Call("/etcdserverpb.Lease/LeaseTimeToLive",
                rpc.LeaseTimeToLiveRequest(ID=lease_id, keys=keys),
                rpc.LeaseTimeToLiveResponse, t.LeaseTTL.from_pb, True)


def lease_leases() -> Call[list[int]]:
    return Call("/etcdserverpb.Lease/LeaseLeases", rpc.LeaseLeasesRequest(),
                rpc.LeaseLeasesResponse, lambda r: [s.ID for s in r.leases], True)


# -- Cluster

def member_list(linearizable: bool) -> Call[t.MemberListResult]:
    return Call("/etcdserverpb.Cluster/MemberList",
                rpc.MemberListRequest(linearizable=linearizable), rpc.MemberListResponse,
                t.MemberListResult.from_pb, True)


def member_add(peer_urls: Iterable[str], learner: bool) -> Call[t.MemberAddResult]:
    return Call("/etcdserverpb.Cluster/MemberAdd",
                rpc.MemberAddRequest(peerURLs=list(peer_urls), isLearner=learner),
                rpc.MemberAddResponse, t.MemberAddResult.from_pb)


def member_remove(member_id: int) -> Call[t.MemberListResult]:
    return Call("/etcdserverpb.Cluster/MemberRemove", rpc.MemberRemoveRequest(ID=member_id),
                rpc.MemberRemoveResponse, t.MemberListResult.from_pb)


def member_update(member_id: int, peer_urls: Iterable[str]) -> Call[t.MemberListResult]:
    return Call("/etcdserverpb.Cluster/MemberUpdate",
                rpc.MemberUpdateRequest(ID=member_id, peerURLs=list(peer_urls)),
                rpc.MemberUpdateResponse, t.MemberListResult.from_pb)


def member_promote(member_id: int) -> Call[t.MemberListResult]:
    return Call("/etcdserverpb.Cluster/MemberPromote", rpc.MemberPromoteRequest(ID=member_id),
                rpc.MemberPromoteResponse, t.MemberListResult.from_pb)


# -- Maintenance (answered by the member the client is connected to)

def status() -> Call[t.Status]:
    return Call("/etcdserverpb.Maintenance/Status", rpc.StatusRequest(), rpc.StatusResponse,
                t.Status.from_pb, True)


def alarm(action: int, member_id: int = 0, alarm_type: int = 0) -> Call[list[t.Alarm]]:
    return Call("/etcdserverpb.Maintenance/Alarm",
                rpc.AlarmRequest(action=action, memberID=member_id,  # type: ignore[arg-type]
                                 alarm=alarm_type),  # type: ignore[arg-type]
                rpc.AlarmResponse, t.alarms_from_pb, action == rpc.AlarmRequest.GET)


def defragment() -> Call[t.Header]:
    return Call("/etcdserverpb.Maintenance/Defragment", rpc.DefragmentRequest(),
                rpc.DefragmentResponse, _header)


def hash_() -> Call[int]:
    return Call("/etcdserverpb.Maintenance/Hash", rpc.HashRequest(), rpc.HashResponse,
                lambda r: r.hash, True)


def hash_kv(revision: int) -> Call[t.HashKV]:
    return Call("/etcdserverpb.Maintenance/HashKV", rpc.HashKVRequest(revision=revision),
                rpc.HashKVResponse, t.HashKV.from_pb, True)


def move_leader(target_id: int) -> Call[t.Header]:
    return Call("/etcdserverpb.Maintenance/MoveLeader",
                rpc.MoveLeaderRequest(targetID=target_id), rpc.MoveLeaderResponse, _header)


SNAPSHOT = "/etcdserverpb.Maintenance/Snapshot"


# -- Auth

def _auth(name: str, request: Message, parse: Callable[[Any], T] = _header,  # type: ignore[assignment]
          idempotent: bool = False) -> Call[T]:
    resp = getattr(rpc, type(request).__name__.replace("Request", "Response"))
    return Call(f"/etcdserverpb.Auth/{name}", request, resp, parse, idempotent)


def authenticate(name: str, password: str) -> Call[str]:
    return _auth("Authenticate", rpc.AuthenticateRequest(name=name, password=password),
                 lambda r: r.token, True)


def auth_enable() -> Call[t.Header]:
    return _auth("AuthEnable", rpc.AuthEnableRequest())


def auth_disable() -> Call[t.Header]:
    return _auth("AuthDisable", rpc.AuthDisableRequest())


def auth_status() -> Call[t.AuthStatus]:
    return _auth("AuthStatus", rpc.AuthStatusRequest(), t.AuthStatus.from_pb, True)


def user_add(name: str, password: str | None) -> Call[t.Header]:
    opts = auth_pb2.UserAddOptions(no_password=password is None)
    return _auth("UserAdd", rpc.AuthUserAddRequest(name=name, password=password or "",
                                                    options=opts))


def user_get(name: str) -> Call[list[str]]:
    return _auth("UserGet", rpc.AuthUserGetRequest(name=name), lambda r: list(r.roles), True)


def user_list() -> Call[list[str]]:
    return _auth("UserList", rpc.AuthUserListRequest(), lambda r: list(r.users), True)


def user_delete(name: str) -> Call[t.Header]:
    return _auth("UserDelete", rpc.AuthUserDeleteRequest(name=name))


def user_change_password(name: str, password: str) -> Call[t.Header]:
    return _auth("UserChangePassword",
                 rpc.AuthUserChangePasswordRequest(name=name, password=password))


def user_grant_role(user: str, role: str) -> Call[t.Header]:
    return _auth("UserGrantRole", rpc.AuthUserGrantRoleRequest(user=user, role=role))


def user_revoke_role(user: str, role: str) -> Call[t.Header]:
    return _auth("UserRevokeRole", rpc.AuthUserRevokeRoleRequest(name=user, role=role))


def role_add(name: str) -> Call[t.Header]:
    return _auth("RoleAdd", rpc.AuthRoleAddRequest(name=name))


def role_get(name: str) -> Call[list[t.Permission]]:
    return _auth("RoleGet", rpc.AuthRoleGetRequest(role=name),
                 lambda r: [t.Permission.from_pb(p) for p in r.perm], True)


def role_list() -> Call[list[str]]:
    return _auth("RoleList", rpc.AuthRoleListRequest(), lambda r: list(r.roles), True)


def role_delete(name: str) -> Call[t.Header]:
    return _auth("RoleDelete", rpc.AuthRoleDeleteRequest(role=name))


def role_grant_permission(name: str, perm: t.PermissionType, key: Bytes,
                          range_end: Bytes | None = None, *, prefix: bool = False
                          ) -> Call[t.Header]:
    k, end = key_range(key, range_end, prefix=prefix)
    p = auth_pb2.Permission(permType=perm.value, key=k, range_end=end)  # type: ignore[arg-type]
    return _auth("RoleGrantPermission", rpc.AuthRoleGrantPermissionRequest(name=name, perm=p))


def role_revoke_permission(name: str, key: Bytes, range_end: Bytes | None = None, *,
                           prefix: bool = False) -> Call[t.Header]:
    k, end = key_range(key, range_end, prefix=prefix)
    return _auth("RoleRevokePermission",
                 rpc.AuthRoleRevokePermissionRequest(role=name, key=k, range_end=end))


__all__ = ["SNAPSHOT", "Call", "to_bytes"]
