"""petcdctl's connection: the endpoints, TLS and auth flags turned into a gRPC channel
(stubs from petcd.pb, nothing of petcd's server), and RPC failures turned into
etcdctl's stderr and exit codes (clientv3's retry warning line, then
"Error: <etcd's words>")."""

from __future__ import annotations

import os
import sys
from typing import Any

os.environ.setdefault("GRPC_VERBOSITY", "NONE")  # no C-core log lines on stderr
import grpc

from petcd.cli.ctl.cmd import Args, parse_duration
from petcd.cli.ctl.common import EXIT_BAD_ARGS, EXIT_BAD_CONNECTION, EXIT_ERROR, CtlError


def go_code(code: grpc.StatusCode) -> str:
    if code == grpc.StatusCode.CANCELLED:
        return "Canceled"
    return "".join(p.capitalize() for p in code.name.split("_")).replace("Ok", "OK")


def strip_scheme(ep: str) -> str:
    for scheme in ("http://", "https://", "unix://", "unixs://"):
        if ep.startswith(scheme):
            return ep[len(scheme):]
    return ep


def error_text(e: grpc.RpcError) -> str:
    """How clientv3 shows an RPC failure: etcd's own errors by their words, anything
    else as gRPC-Go's status text."""
    code, desc = e.code(), e.details() or ""
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return "context deadline exceeded"
    if code == grpc.StatusCode.CANCELLED:
        return "context canceled"
    if desc.startswith(("etcdserver: ", "mvcc: ", "auth: ")) and \
            code != grpc.StatusCode.UNKNOWN:
        return desc
    return f"rpc error: code = {go_code(code)} desc = {desc}"


class DialTimeout(CtlError):
    """No connection within --dial-timeout."""


class Client:
    def __init__(self, args: Args, endpoints: list[str] | None = None) -> None:
        if args.discovery_srv:
            raise CtlError("DNS SRV discovery (--discovery-srv) is not supported by "
                           "petcdctl; list the members with --endpoints", EXIT_BAD_ARGS)
        self.args = args
        _verify_env_once(args)
        self.endpoints = [strip_scheme(e) for e in (endpoints or args.endpoints)]
        self.dial_timeout = parse_duration(args.dial_timeout)
        self.command_timeout = parse_duration(args.command_timeout)
        self._target_id = ""
        self._channel: grpc.Channel | None = None
        self.metadata: list[tuple[str, str]] = []
        self._stubs: dict[str, Any] = {}

    # -- connection
    def _secure(self) -> bool:
        a = self.args
        eps = a.endpoints
        return bool(a.cacert or a.cert or a.key or not a.insecure_transport
                    or any(e.startswith(("https://", "unixs://")) for e in eps))

    def dial_parts(self) -> tuple[str, list[tuple[str, Any]], tuple[bytes | None, ...] | None]:
        """What a channel to the endpoints is made of, as plain (picklable) values:
        the target, the channel options and, for TLS, (roots, key, certificate chain)."""
        a = self.args
        ka = parse_duration(a.keepalive_time)
        kt = parse_duration(a.keepalive_timeout)
        # grpc-go (etcdctl's) raises a keepalive time below 10 s to 10 s; so do we (etcd
        # closes connections that ping more often than its --grpc-keepalive-min-time).
        options: list[tuple[str, Any]] = [
            ("grpc.keepalive_time_ms", max(int(ka * 1000), 10000)),
            ("grpc.keepalive_permit_without_calls", 0),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.keepalive_timeout_ms", max(int(kt * 1000), 1)),
            ("grpc.max_receive_message_length", 2**31 - 1)]
        endpoints = self.endpoints
        tls = None
        if self._secure():
            # read in Go's order (the key pair, then the CA): the same file is named
            # when several are missing
            chain, key = _read(a.cert), _read(a.key)
            roots = _read(a.cacert)
            # etcdctl applies the flag only to a TLS config of its own: one made for
            # --cacert/--cert/--key or --insecure-transport=false. An https:// endpoint
            # alone gets clientv3's default config, which verifies.
            if a.insecure_skip_tls_verify and (a.cacert or a.cert or a.key
                                               or not a.insecure_transport):
                roots, endpoints = self._pinned_roots(options)
            tls = (roots, key, chain)
        target = endpoints[0] if len(endpoints) == 1 else "ipv4:" + ",".join(endpoints)
        return target, options, tls

    def channel(self) -> grpc.Channel:
        if self._channel is not None:
            return self._channel
        target, options, tls = self.dial_parts()
        if tls is not None:
            roots, key, chain = tls
            creds = grpc.ssl_channel_credentials(
                root_certificates=roots, private_key=key, certificate_chain=chain)
            ch = grpc.secure_channel(target, creds, options)
        else:
            ch = grpc.insecure_channel(target, options)
        try:
            grpc.channel_ready_future(ch).result(timeout=self.dial_timeout)
        except grpc.FutureTimeoutError:
            ch.close()
            raise DialTimeout("context deadline exceeded", EXIT_ERROR) from None
        self._channel = ch
        if self.args.user:
            self._authenticate()
        return ch

    def _pinned_roots(self, options: list[tuple[str, Any]]) -> tuple[bytes, list[str]]:
        """--insecure-skip-tls-verify: gRPC Python cannot skip verification, so the
        servers' own certificates (fetched without verifying) become the only roots,
        and the name checked is one they hold (petcd.client.unverified). Returns the
        roots and the endpoints to dial: those reachable whose certificates hold that
        name (all of them when the members' certificates share a name)."""
        from petcd.client.unverified import pin

        a = self.args
        try:
            roots, name, endpoints = pin(self.endpoints, timeout=self.dial_timeout,
                                         cert_chain=a.cert or None, key=a.key or None)
        except (OSError, ValueError):
            raise CtlError("context deadline exceeded", EXIT_ERROR) from None
        options.append(("grpc.ssl_target_name_override", name))
        return roots, endpoints

    def _authenticate(self) -> None:
        a = self.args
        name, colon, password = a.user.partition(":")
        if a.password:
            if colon:
                raise CtlError("--user shouldn't contain password when --password is given",
                               EXIT_BAD_ARGS)
            password = a.password
        elif not colon:
            import getpass

            password = getpass.getpass("Password: ")
        from petcd.pb.etcdserverpb import rpc_pb2 as rpc
        try:
            resp = self.call("Auth", "Authenticate",
                             rpc.AuthenticateRequest(name=name, password=password))
        except CtlError as e:  # etcdctl cannot make its client: a bad connection
            if str(e) == "etcdserver: authentication is not enabled":
                return  # (clientv3 goes on without a token)
            raise CtlError(str(e), EXIT_BAD_CONNECTION) from None
        self.metadata = [("token", resp.token)]

    @property
    def target_id(self) -> str:
        """clientv3's balancer target name (in its retry warnings); uuid is imported
        only when a warning is printed."""
        if not self._target_id:
            import uuid

            self._target_id = f"endpoint://client-{uuid.uuid4()}/{self.endpoints[0]}"
        return self._target_id

    def unary(self, service: str, method: str, response_type: Any) -> Any:
        """A unary method object made from the channel (the generated *_pb2_grpc stubs
        cost start-up time and are not needed for unary etcdserverpb calls)."""
        key = f"{service}/{method}"
        fn = self._stubs.get(key)
        if fn is None:
            fn = self._stubs[key] = self.channel().unary_unary(
                f"/etcdserverpb.{service}/{method}",
                request_serializer=_serialize, response_deserializer=response_type.FromString)
        return fn

    def stub(self, service: str) -> Any:
        if service not in self._stubs:
            ch = self.channel()
            if service in ("Lock",):
                from petcd.pb.v3lockpb import v3lock_pb2_grpc as lg
                self._stubs[service] = lg.LockStub(ch)  # type: ignore[no-untyped-call]
            elif service == "Election":
                from petcd.pb.v3electionpb import v3election_pb2_grpc as eg
                self._stubs[service] = eg.ElectionStub(ch)  # type: ignore[no-untyped-call]
            else:
                from petcd.pb.etcdserverpb import rpc_pb2_grpc as rg
                self._stubs[service] = getattr(rg, service + "Stub")(ch)
        return self._stubs[service]

    def call(self, service: str, method: str, request: Any, *,
             timeout: float | None = -1.0) -> Any:
        """A unary call with --command-timeout (None: no deadline)."""
        try:
            if service in ("Lock", "Election"):
                fn = getattr(self.stub(service), method)
            else:
                from petcd.pb.etcdserverpb import rpc_pb2 as rpc

                name = type(request).__name__
                assert name.endswith("Request"), name
                fn = self.unary(service, method, getattr(rpc, name[:-7] + "Response"))
        except DialTimeout:
            # clientv3 3.4 dials without blocking: its first call is what fails, at
            # its deadline, and the retry interceptor logs that first
            self.warn(None, "DeadlineExceeded",
                      "latest balancer error: all SubConns are in TransientFailure")
            raise CtlError("context deadline exceeded", EXIT_ERROR) from None
        if timeout == -1.0:
            timeout = self.command_timeout
            if timeout <= 0:  # Go's context.WithTimeout(0): already expired
                self.warn(None, "DeadlineExceeded", "context deadline exceeded")
                raise CtlError("context deadline exceeded", EXIT_ERROR)
        try:
            return fn(request, timeout=timeout, metadata=self.metadata or None)
        except grpc.RpcError as e:
            raise self.failure(e) from None

    def failure(self, e: grpc.RpcError, *, warn: bool = True) -> CtlError:
        if warn:
            self.warn(e)
        code = EXIT_ERROR
        if e.code() == grpc.StatusCode.UNAVAILABLE and not (e.details() or "").startswith(
                "etcdserver"):
            code = EXIT_BAD_CONNECTION
        return CtlError(error_text(e), code)

    def warn(self, e: grpc.RpcError | None, code: str = "", desc: str = "") -> None:
        """clientv3's retry interceptor logs each failed unary attempt."""
        import datetime
        import json

        now = datetime.datetime.now(datetime.UTC)
        line = {"level": "warn",
                "ts": now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z",
                "caller": "clientv3/retry_interceptor.go:62",
                "msg": "retrying of unary invoker failed", "target": self.target_id,
                "attempt": 0,
                "error": f"rpc error: code = {go_code(e.code())} desc = {e.details()}"
                if e is not None else f"rpc error: code = {code} desc = {desc}"}
        sys.stderr.write(json.dumps(line, separators=(",", ":")) + "\n")

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()


def _serialize(m: Any) -> bytes:
    return m.SerializeToString()  # type: ignore[no-any-return]


_env_checked = False


def _verify_env_once(args: Args) -> None:
    """etcdctl checks its ETCDCTL_ variables as it makes its first client."""
    global _env_checked
    if not _env_checked:
        _env_checked = True
        from petcd.cli.ctl.cmd import verify_env

        verify_env(getattr(args, "given", set()), getattr(args, "path", ""))


def _read(path: str) -> bytes | None:
    if not path:
        return None
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:  # in Go's words: "open <path>: no such file or directory"
        why = os.strerror(e.errno) if e.errno else str(e)
        raise CtlError(f"open {path}: {why[:1].lower()}{why[1:]}", EXIT_BAD_ARGS) from None
