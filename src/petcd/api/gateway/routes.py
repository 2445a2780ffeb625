"""Every HTTP path etcd 3.4's grpc-gateway serves, and the gRPC method behind it
(from the `google.api.http` options of etcd's rpc.proto, v3lock.proto and
v3election.proto). Message types and streaming come from our own descriptors."""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from petcd.pb.etcdserverpb import rpc_pb2
from petcd.pb.v3electionpb import v3election_pb2
from petcd.pb.v3lockpb import v3lock_pb2

# path under /v3/ -> (package, service, method)
_TABLE: tuple[tuple[str, str, str, str], ...] = (
    ("kv/range", "etcdserverpb", "KV", "Range"),
    ("kv/put", "etcdserverpb", "KV", "Put"),
    ("kv/deleterange", "etcdserverpb", "KV", "DeleteRange"),
    ("kv/txn", "etcdserverpb", "KV", "Txn"),
    ("kv/compaction", "etcdserverpb", "KV", "Compact"),
    ("watch", "etcdserverpb", "Watch", "Watch"),
    ("lease/grant", "etcdserverpb", "Lease", "LeaseGrant"),
    ("lease/revoke", "etcdserverpb", "Lease", "LeaseRevoke"),
    ("kv/lease/revoke", "etcdserverpb", "Lease", "LeaseRevoke"),
    ("lease/keepalive", "etcdserverpb", "Lease", "LeaseKeepAlive"),
    ("lease/timetolive", "etcdserverpb", "Lease", "LeaseTimeToLive"),
    ("kv/lease/timetolive", "etcdserverpb", "Lease", "LeaseTimeToLive"),
    ("lease/leases", "etcdserverpb", "Lease", "LeaseLeases"),
    ("kv/lease/leases", "etcdserverpb", "Lease", "LeaseLeases"),
    ("cluster/member/add", "etcdserverpb", "Cluster", "MemberAdd"),
    ("cluster/member/remove", "etcdserverpb", "Cluster", "MemberRemove"),
    ("cluster/member/update", "etcdserverpb", "Cluster", "MemberUpdate"),
    ("cluster/member/list", "etcdserverpb", "Cluster", "MemberList"),
    ("cluster/member/promote", "etcdserverpb", "Cluster", "MemberPromote"),
    ("maintenance/alarm", "etcdserverpb", "Maintenance", "Alarm"),
    ("maintenance/status", "etcdserverpb", "Maintenance", "Status"),
    ("maintenance/defragment", "etcdserverpb", "Maintenance", "Defragment"),
    # rpc.proto maps Hash and HashKV to the same path; etcd's mux serves the first: Hash.
    ("maintenance/hash", "etcdserverpb", "Maintenance", "Hash"),
    ("maintenance/snapshot", "etcdserverpb", "Maintenance", "Snapshot"),
    ("maintenance/transfer-leadership", "etcdserverpb", "Maintenance", "MoveLeader"),
    ("auth/enable", "etcdserverpb", "Auth", "AuthEnable"),
    ("auth/disable", "etcdserverpb", "Auth", "AuthDisable"),
    ("auth/authenticate", "etcdserverpb", "Auth", "Authenticate"),
    ("auth/user/add", "etcdserverpb", "Auth", "UserAdd"),
    ("auth/user/get", "etcdserverpb", "Auth", "UserGet"),
    ("auth/user/list", "etcdserverpb", "Auth", "UserList"),
    ("auth/user/delete", "etcdserverpb", "Auth", "UserDelete"),
    ("auth/user/changepw", "etcdserverpb", "Auth", "UserChangePassword"),
    ("auth/user/grant", "etcdserverpb", "Auth", "UserGrantRole"),
    ("auth/user/revoke", "etcdserverpb", "Auth", "UserRevokeRole"),
    ("auth/role/add", "etcdserverpb", "Auth", "RoleAdd"),
    ("auth/role/get", "etcdserverpb", "Auth", "RoleGet"),
    ("auth/role/list", "etcdserverpb", "Auth", "RoleList"),
    ("auth/role/delete", "etcdserverpb", "Auth", "RoleDelete"),
    ("auth/role/grant", "etcdserverpb", "Auth", "RoleGrantPermission"),
    ("auth/role/revoke", "etcdserverpb", "Auth", "RoleRevokePermission"),
    ("lock/lock", "v3lockpb", "Lock", "Lock"),
    ("lock/unlock", "v3lockpb", "Lock", "Unlock"),
    ("election/campaign", "v3electionpb", "Election", "Campaign"),
    ("election/proclaim", "v3electionpb", "Election", "Proclaim"),
    ("election/leader", "v3electionpb", "Election", "Leader"),
    ("election/observe", "v3electionpb", "Election", "Observe"),
    ("election/resign", "v3electionpb", "Election", "Resign"),
)

_FILES = {"etcdserverpb": rpc_pb2.DESCRIPTOR, "v3lockpb": v3lock_pb2.DESCRIPTOR,
          "v3electionpb": v3election_pb2.DESCRIPTOR}

# etcd 3.4 rewrites /v3beta/ to /v3/; /v3alpha/ is etcd 3.2's prefix, kept for old clients.
PREFIXES = ("/v3/", "/v3beta/", "/v3alpha/")


@dataclass(frozen=True, slots=True)
class Route:
    http_path: str  # under /v3/, e.g. "/v3/kv/range"
    grpc_path: str  # e.g. "/etcdserverpb.KV/Range"
    request: type[Message]
    response: type[Message]
    client_streaming: bool
    server_streaming: bool


def _build() -> dict[str, Route]:
    routes = {}
    for sub, package, service, method in _TABLE:
        md = _FILES[package].services_by_name[service].methods_by_name[method]
        path = "/v3/" + sub
        routes[path] = Route(path, f"/{package}.{service}/{method}",
                             GetMessageClass(md.input_type), GetMessageClass(md.output_type),
                             md.client_streaming, md.server_streaming)
    return routes


ROUTES: dict[str, Route] = _build()


def canonical(path: str) -> str | None:
    """The /v3/ form of a gateway path, or None if it is not under a gateway prefix."""
    for prefix in PREFIXES:
        if path.startswith(prefix):
            return "/v3/" + path[len(prefix):]
    return None
