"""Connections and requests for petcd-benchmark workers: grpc.aio channels to the
endpoints (TLS, --user token), requests encoded straight to protobuf bytes (no message
objects per call), errors worded as gRPC-Go words them ("rpc error: code = ... desc =")."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Any

import grpc

from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.pb.wire import varint

PUT = "/etcdserverpb.KV/Put"
RANGE = "/etcdserverpb.KV/Range"
TXN = "/etcdserverpb.KV/Txn"
WATCH = "/etcdserverpb.Watch/Watch"
LEASE_GRANT = "/etcdserverpb.Lease/LeaseGrant"
LEASE_KEEPALIVE = "/etcdserverpb.Lease/LeaseKeepAlive"
STATUS = "/etcdserverpb.Maintenance/Status"
AUTHENTICATE = "/etcdserverpb.Auth/Authenticate"


@dataclass(frozen=True)
class ConnSpec:
    """How to reach the cluster (picklable: handed to worker processes)."""
    endpoints: tuple[str, ...]
    cacert: str = ""
    cert: str = ""
    key: str = ""
    user: str = ""  # name:password (the password already asked for)
    dial_timeout: float = 0.0

    @property
    def tls(self) -> bool:
        return bool(self.cacert or self.cert) or any(e.startswith("https://")
                                                     for e in self.endpoints)


def target(endpoint: str) -> str:
    """host:port of an endpoint given with or without a scheme."""
    for scheme in ("http://", "https://", "unix://"):
        if endpoint.startswith(scheme):
            return endpoint[len(scheme):].rstrip("/")
    return endpoint.rstrip("/")


def _read(path: str) -> bytes | None:
    if not path:
        return None
    with open(path, "rb") as f:
        return f.read()


def channel(spec: ConnSpec, endpoint: str) -> Any:
    options = [("grpc.use_local_subchannel_pool", 1),
               ("grpc.max_receive_message_length", 2**31 - 1)]
    if spec.tls:
        creds = grpc.ssl_channel_credentials(_read(spec.cacert), _read(spec.key),
                                             _read(spec.cert))
        return grpc.aio.secure_channel(target(endpoint), creds, options=options)
    return grpc.aio.insecure_channel(target(endpoint), options=options)


async def connect(spec: ConnSpec, endpoint: str) -> Any:
    ch = channel(spec, endpoint)
    await asyncio.wait_for(ch.channel_ready(), spec.dial_timeout or None)
    return ch


async def auth_metadata(spec: ConnSpec, ch: Any) -> tuple[tuple[str, str], ...]:
    """(("token", T),) for --user, else ()."""
    if not spec.user:
        return ()
    name, _, password = spec.user.partition(":")
    call = ch.unary_unary(AUTHENTICATE,
                          request_serializer=rpc.AuthenticateRequest.SerializeToString,
                          response_deserializer=rpc.AuthenticateResponse.FromString)
    resp = await call(rpc.AuthenticateRequest(name=name, password=password), timeout=30)
    return (("token", resp.token),)


def go_error(e: grpc.aio.AioRpcError) -> str:
    """gRPC-Go's words for a failed call, as etcd's benchmark counts them."""
    code = "".join(w.capitalize() for w in e.code().name.split("_"))
    if code == "Ok":
        code = "OK"
    return f"rpc error: code = {code} desc = {e.details()}"



def field(tag: int, data: bytes) -> bytes:
    """A length-delimited protobuf field (tag = field number << 3 | 2)."""
    return bytes((tag,)) + varint(len(data)) + data


def put_request(key: bytes, value: bytes) -> bytes:
    return field(0x0A, key) + field(0x12, value)


def range_request(key: bytes, end: bytes, serializable: bool, limit: int = 0) -> bytes:
    out = field(0x0A, key)
    if end:
        out += field(0x12, end)
    if limit:
        out += b"\x18" + varint(limit)
    if serializable:
        out += b"\x38\x01"  # serializable = 7
    return out


def txn_request(ops: list[bytes]) -> bytes:
    """A Txn with no compares whose success branch holds `ops` (RequestOp bytes)."""
    return b"".join(field(0x12, op) for op in ops)  # success = 2


def op_put(put: bytes) -> bytes:
    return field(0x12, put)  # RequestOp.request_put = 2


def op_range(rng: bytes) -> bytes:
    return field(0x0A, rng)  # RequestOp.request_range = 1


def key_of(n: int, size: int) -> bytes:
    """Key number n in `size` bytes (as etcd: a varint in a zeroed key-size buffer)."""
    raw = varint(n)[:size]
    return raw + b"\x00" * (size - len(raw))


def random_bytes(n: int, rng: random.Random) -> bytes:
    return bytes(rng.getrandbits(8) for _ in range(n))


async def leader_endpoint(spec: ConnSpec) -> str:
    """--target-leader: the endpoint whose member leads (asked by Status)."""
    found: dict[int, str] = {}
    leader = 0
    for ep in spec.endpoints:
        ch = await connect(spec, ep)
        try:
            call = ch.unary_unary(STATUS, request_serializer=rpc.StatusRequest.SerializeToString,
                                  response_deserializer=rpc.StatusResponse.FromString)
            md = await auth_metadata(spec, ch)
            st = await call(rpc.StatusRequest(), timeout=10, metadata=md)
        finally:
            await ch.close()
        found[st.header.member_id] = ep
        leader = st.leader or leader
    if leader not in found:
        raise SystemExit("benchmark: no endpoint is the leader")
    return found[leader]

