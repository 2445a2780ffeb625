"""A request body that is not a valid protobuf gets gRPC-Go's answer from every unary
method (INTERNAL, "grpc: error unmarshalling request: ..."), as etcd gives it, and
the member keeps serving. The text after the colon is the decoder's own (Go's and
Python's protobuf word it differently), so only the code and the prefix are compared."""

from __future__ import annotations

import grpc
import pytest

from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.testing import MemberProcess

UNARY_METHODS = [
    "/etcdserverpb.KV/Range", "/etcdserverpb.KV/Put", "/etcdserverpb.KV/DeleteRange",
    "/etcdserverpb.KV/Txn", "/etcdserverpb.KV/Compact",
    "/etcdserverpb.Lease/LeaseGrant", "/etcdserverpb.Lease/LeaseRevoke",
    "/etcdserverpb.Lease/LeaseTimeToLive",
    "/etcdserverpb.Cluster/MemberAdd", "/etcdserverpb.Cluster/MemberRemove",
    "/etcdserverpb.Cluster/MemberUpdate", "/etcdserverpb.Cluster/MemberPromote",
    "/etcdserverpb.Maintenance/Alarm", "/etcdserverpb.Maintenance/HashKV",
    "/etcdserverpb.Maintenance/MoveLeader",
]
GARBAGE = b"\xff\xff\xff"  # a field tag whose varint never ends
PREFIX = "grpc: error unmarshalling request: "


def _answers(member: MemberProcess) -> dict[str, tuple[grpc.StatusCode, str]]:
    out = {}
    with grpc.insecure_channel(member.address) as ch:
        for method in UNARY_METHODS:
            with pytest.raises(grpc.RpcError) as info:
                ch.unary_unary(method)(GARBAGE, timeout=10)
            err = info.value
            out[method] = (err.code(), err.details())  # type: ignore[attr-defined]
        # Still serving, nothing half applied.
        put = ch.unary_unary("/etcdserverpb.KV/Put",
                             request_serializer=rpc.PutRequest.SerializeToString,
                             response_deserializer=rpc.PutResponse.FromString)
        assert put(rpc.PutRequest(key=b"after", value=b"ok"), timeout=10).header.revision == 2
    return out


def test_undecodable_requests_get_grpc_gos_answer(petcd: MemberProcess) -> None:
    for method, (code, details) in _answers(petcd).items():
        assert code == grpc.StatusCode.INTERNAL, method
        assert details.startswith(PREFIX), (method, details)


def test_etcd_answers_undecodable_requests_the_same_way(etcd: MemberProcess) -> None:
    """The reference: what the test above expects of petcd is what etcd 3.4 does."""
    for method, (code, details) in _answers(etcd).items():
        assert code == grpc.StatusCode.INTERNAL, method
        assert details.startswith(PREFIX), (method, details)
