"""A small gRPC client for the auth tests: every call answers (status name, details,
response) instead of raising, so a scenario's transcript can be compared between etcd
and petcd."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc

from petcd.pb.authpb import auth_pb2 as authpb
from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.pb.etcdserverpb import rpc_pb2_grpc as rpc_grpc

Outcome = tuple[str, str]
READ, WRITE, READWRITE = authpb.Permission.READ, authpb.Permission.WRITE, \
    authpb.Permission.READWRITE


def jwt_keys(directory: Path) -> tuple[Path, Path]:
    """An RSA key pair for --auth-token jwt (PEM files): (private, public)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    priv, pub = directory / "jwt.key", directory / "jwt.pub"
    priv.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.TraditionalOpenSSL,
                                       serialization.NoEncryption()))
    pub.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return priv, pub


def jwt_option(directory: Path, ttl: str = "5m") -> str:
    priv, pub = jwt_keys(directory)
    return f"jwt,pub-key={pub},priv-key={priv},sign-method=RS256,ttl={ttl}"


class Client:
    def __init__(self, address: str) -> None:
        self.channel = grpc.insecure_channel(address)
        ch = self.channel
        self.kv = rpc_grpc.KVStub(ch)
        self.auth = rpc_grpc.AuthStub(ch)
        self.lease = rpc_grpc.LeaseStub(ch)
        self.watch = rpc_grpc.WatchStub(ch)
        self.maint = rpc_grpc.MaintenanceStub(ch)
        self.cluster = rpc_grpc.ClusterStub(ch)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def md(token: str | None, key: str = "token") -> tuple[tuple[str, str], ...]:
        return () if token is None else ((key, token),)

    def call(self, method: Any, req: Any, token: str | None = None, key: str = "token",
             timeout: float = 15.0) -> tuple[str, str, Any]:
        try:
            resp = method(req, metadata=self.md(token, key), timeout=timeout)
        except grpc.RpcError as e:
            return e.code().name, e.details() or "", None
        return "OK", "", resp

    def outcome(self, method: Any, req: Any, token: str | None = None,
                key: str = "token") -> Outcome:
        code, details, _ = self.call(method, req, token, key)
        return code, details

    def ok(self, method: Any, req: Any, token: str | None = None) -> Any:
        code, details, resp = self.call(method, req, token)
        assert code == "OK", (method, req, code, details)
        return resp

    def login(self, name: str, password: str) -> str:
        resp = self.ok(self.auth.Authenticate, rpc.AuthenticateRequest(name=name,
                                                                      password=password))
        return str(resp.token)

    def watch_create(self, req: rpc.WatchCreateRequest, token: str | None = None
                     ) -> rpc.WatchResponse:
        """The first response to a stream that creates one watcher."""
        stream = self.watch.Watch(iter([rpc.WatchRequest(create_request=req)]),
                                  metadata=self.md(token), timeout=10)
        try:
            return next(iter(stream))
        finally:
            stream.cancel()

    def setup_users(self, root_pw: str = "rootpw") -> None:
        """root (root role), alice (role rw: READWRITE on prefix w/, READ on key r)."""
        a = self.auth
        self.ok(a.UserAdd, rpc.AuthUserAddRequest(name="root", password=root_pw))
        self.ok(a.UserGrantRole, rpc.AuthUserGrantRoleRequest(user="root", role="root"))
        self.ok(a.UserAdd, rpc.AuthUserAddRequest(name="alice", password="apw"))
        self.ok(a.RoleAdd, rpc.AuthRoleAddRequest(name="rw"))
        self.ok(a.RoleGrantPermission, rpc.AuthRoleGrantPermissionRequest(
            name="rw", perm=authpb.Permission(permType=READWRITE, key=b"w/", range_end=b"w0")))
        self.ok(a.RoleGrantPermission, rpc.AuthRoleGrantPermissionRequest(
            name="rw", perm=authpb.Permission(permType=READ, key=b"r")))
        self.ok(a.UserGrantRole, rpc.AuthUserGrantRoleRequest(user="alice", role="rw"))
        self.ok(a.AuthEnable, rpc.AuthEnableRequest())
