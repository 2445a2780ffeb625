"""Connection settings and the retry policy, shared by both client flavours (no IO here
except reading certificate files).

Retry rules (what makes a retry safe):
- reads (Range, a read-only Txn, Status, MemberList, ...) are retried on the next member
  after any UNAVAILABLE error: running them twice changes nothing;
- writes are retried only when gRPC failed before the request left the client (no
  connection could be made), or when the member refused it before proposing it ("no
  leader", "not capable", a learner): a write that may have reached Raft is never sent
  twice, its UnavailableError reaches the caller;
- "invalid auth token" (an expired token) makes the client authenticate again with the
  user/password it was given and re-send once: the server refused the request unread.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import grpc

from petcd.client.errors import ConnectionFailedError, from_rpc_error, surely_not_sent

# gRPC keepalive, on by default (a member hung by SIGSTOP, a dead host or a silent network
# sends no RST: without pings a watch on it waits forever). The numbers are etcdctl's
# (--keepalive-time 2s, --keepalive-timeout 6s) as grpc-go applies them: it raises any
# time below 10 s to 10 s. 10 s also respects etcd's default server enforcement
# (--grpc-keepalive-min-time 5s: faster pings are answered with GOAWAY). Pings go only
# while calls are open (clientv3's PermitWithoutStream=false). clientv3 as a library
# leaves keepalive off unless DialKeepAliveTime is set; keepalive_time=None does that.
KEEPALIVE_TIME = 10.0
KEEPALIVE_TIMEOUT = 6.0

_REFUSED_UNREAD = frozenset({
    "etcdserver: no leader", "etcdserver: not capable",
    "etcdserver: rpc not supported for learner",
})
_TOKEN_EXPIRED = frozenset({
    "etcdserver: invalid auth token", "etcdserver: revision of auth store is old",
})


def parse_endpoints(endpoints: str | Sequence[str]) -> tuple[list[str], bool]:
    """("host:port" targets, any https) from "a:1,b:2" or URLs like http://a:1."""
    items = endpoints.split(",") if isinstance(endpoints, str) else list(endpoints)
    targets, tls = [], False
    for raw in items:
        e = raw.strip()
        if not e:
            continue
        for scheme in ("https://", "http://", "unixs://", "unix://"):
            if e.startswith(scheme):
                tls = tls or scheme in ("https://", "unixs://")
                e = ("unix:" + e[len(scheme):]) if scheme.startswith("unix") else \
                    e[len(scheme):]
                break
        targets.append(e.rstrip("/"))
    if not targets:
        raise ValueError("no endpoints given")
    return targets, tls


def _read(v: str | bytes | Path | None) -> bytes | None:
    if v is None or isinstance(v, bytes):
        return v
    return Path(v).read_bytes()


@dataclass
class Config:
    """Everything a client needs to connect; see `Client` for the meaning of each."""

    endpoints: list[str]
    tls: bool = False
    ca_cert: bytes | None = None
    cert_key: bytes | None = None
    cert_cert: bytes | None = None
    user: str | None = None
    password: str | None = None
    timeout: float | None = None
    dial_timeout: float | None = 5.0
    keepalive_time: float | None = KEEPALIVE_TIME
    keepalive_timeout: float = KEEPALIVE_TIMEOUT
    grpc_options: list[tuple[str, object]] = field(default_factory=list)
    insecure_skip_tls_verify: bool = False

    @classmethod
    def make(cls, endpoints: str | Sequence[str], *, ca_cert: str | bytes | Path | None = None,
             cert_key: str | bytes | Path | None = None,
             cert_cert: str | bytes | Path | None = None, **kw: object) -> Config:
        targets, tls = parse_endpoints(endpoints)
        cfg = cls(targets, tls or ca_cert is not None or cert_cert is not None,
                  _read(ca_cert), _read(cert_key), _read(cert_cert), **kw)  # type: ignore[arg-type]
        if (cfg.user is None) != (cfg.password is None):
            raise ValueError("give both user and password, or neither")
        if (cfg.cert_key is None) != (cfg.cert_cert is None):
            raise ValueError("give both cert_key and cert_cert, or neither")
        return cfg

    def credentials(self) -> grpc.ChannelCredentials | None:
        if not self.tls:
            return None
        return grpc.ssl_channel_credentials(self.ca_cert, self.cert_key, self.cert_cert)

    def channel_for(self, target: str) -> tuple[grpc.ChannelCredentials | None,
                                                list[tuple[str, object]]]:
        """The credentials and options of one member's channel. With
        insecure_skip_tls_verify (etcdctl's --insecure-skip-tls-verify), that member's
        own certificates, fetched without verifying them (petcd.client.unverified), are
        its channel's only roots and the name checked is one they hold: still encrypted,
        still proof that the server holds the key, but nobody vouches for it. Raises
        OSError when they cannot be fetched (blocking: up to dial_timeout)."""
        opts = self.channel_options()
        if not self.tls or not self.insecure_skip_tls_verify:
            return self.credentials(), opts
        from petcd.client.unverified import pin

        try:
            roots, name, _ = pin([target], timeout=self.dial_timeout or 5.0,
                                 cert_chain=self.cert_cert, key=self.cert_key)
        except ValueError as e:
            raise OSError(str(e)) from None
        return (grpc.ssl_channel_credentials(roots, self.cert_key, self.cert_cert),
                [*opts, ("grpc.ssl_target_name_override", name)])

    def channel_options(self) -> list[tuple[str, object]]:
        opts: list[tuple[str, object]] = [
            # etcd answers up to --max-request-bytes + some; its Go client accepts any size
            ("grpc.max_receive_message_length", -1),
            ("grpc.max_send_message_length", -1),
            # Come back quickly to a member that restarts (gRPC's default backs off to 2 min).
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
        ]
        if self.keepalive_time is not None:
            opts += [("grpc.keepalive_time_ms", int(self.keepalive_time * 1000)),
                     ("grpc.keepalive_timeout_ms", int(self.keepalive_timeout * 1000)),
                     # only while calls (watches) are open: etcd's default enforcement
                     # policy answers pings on an idle connection with GOAWAY
                     ("grpc.keepalive_permit_without_calls", 0),
                     ("grpc.http2.max_pings_without_data", 0),
                     # an idle watch sends no data: without this gRPC spaces its pings
                     # 5 minutes apart and a hung member goes unnoticed that long
                     ("grpc.http2.min_sent_ping_interval_without_data_ms",
                      int(self.keepalive_time * 1000)),
                     # newer gRPC waits for a ping's answer this long (default 1 minute),
                     # whatever keepalive_timeout_ms says
                     ("grpc.http2.ping_timeout_ms", int(self.keepalive_timeout * 1000))]
        names = {n for n, _ in self.grpc_options}
        return [o for o in opts if o[0] not in names] + list(self.grpc_options)


class Action(enum.Enum):
    RAISE = 0
    FAILOVER = 1  # move to the next member, then retry
    REAUTH = 2    # authenticate again, then retry


def decide(e: grpc.RpcError, idempotent: bool, *, can_reauth: bool) -> Action:
    """What to do after a failed attempt (see the module docstring)."""
    code = e.code() if hasattr(e, "code") else None
    details = (e.details() if hasattr(e, "details") else "") or ""
    if details in _TOKEN_EXPIRED and can_reauth:
        return Action.REAUTH
    if code == grpc.StatusCode.UNAVAILABLE and (
            idempotent or surely_not_sent(e) or details in _REFUSED_UNREAD):
        return Action.FAILOVER
    return Action.RAISE


class Deadline:
    """The time left for one call across all its attempts (None: no limit)."""

    __slots__ = ("at",)

    def __init__(self, timeout: float | None) -> None:
        self.at = None if timeout is None else time.monotonic() + timeout

    def left(self) -> float | None:
        return None if self.at is None else max(0.0, self.at - time.monotonic())

    def passed(self) -> bool:
        return self.at is not None and time.monotonic() >= self.at


class Backoff:
    """Pause after each full round of failed members: 50 ms doubling up to 1 s."""

    def __init__(self, members: int) -> None:
        self.members = members
        self.failures = 0

    def next_pause(self) -> float:
        self.failures += 1
        if self.failures % self.members:
            return 0.0
        rounds = self.failures // self.members
        return float(min(1.0, 0.05 * 2 ** (rounds - 1)))

    def exhausted(self, deadline: Deadline, max_rounds: int = 8) -> bool:
        # With no deadline, give up after a few full rounds over every member.
        if deadline.at is not None:
            return deadline.passed()
        return self.failures >= self.members * max_rounds


class Retry:
    """One call's attempts, for both flavours' loops (which only add the waiting): after
    each failure, fail over to the next member (`failover(conn)`) and return the pause
    before the next attempt, or raise what the caller gets once the policy or the
    deadline says stop."""

    def __init__(self, config: Config, idempotent: bool, timeout: float | None,
                 failover: Callable[[Any], None]) -> None:
        self.deadline = Deadline(timeout)
        self._backoff = Backoff(len(config.endpoints))
        self._endpoints = config.endpoints
        self._idempotent = idempotent
        self._can_reauth = config.user is not None  # once per call
        self._failover = failover

    def _next(self, conn: Any, give_up: Callable[[], NoReturn]) -> float:
        self._failover(conn)
        if self._backoff.exhausted(self.deadline):
            give_up()
        return self._backoff.next_pause()

    def dial_failed(self, conn: Any) -> float:
        def give_up() -> NoReturn:
            raise ConnectionFailedError(f"could not connect to any of {self._endpoints}")
        return self._next(conn, give_up)

    def auth_failed(self, conn: Any, e: Exception) -> float:
        """Authenticating failed for want of a member: the request was not sent."""
        def give_up() -> NoReturn:
            raise e
        return self._next(conn, give_up)

    def call_failed(self, conn: Any, e: grpc.RpcError, closed: bool) -> float | None:
        """The pause before the next attempt; None: drop the token, authenticate again
        and retry at once."""
        action = decide(e, self._idempotent, can_reauth=self._can_reauth)
        if action is Action.REAUTH:
            self._can_reauth = False
            return None

        def give_up() -> NoReturn:
            raise from_rpc_error(e) from None
        if action is Action.RAISE or closed:
            give_up()
        return self._next(conn, give_up)


WATCH_METADATA = (("hasleader", "true"),)  # etcd cancels the stream if its member has no leader
