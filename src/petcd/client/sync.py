"""`Client`: the blocking client (grpcio's sync API). Requests are built and answers
parsed in petcd.client.calls; this module only runs them against the members, with
failover, safe retries and token renewal (petcd.client.connection)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

import grpc

from petcd.client import calls
from petcd.client import types as t
from petcd.client.connection import (
    KEEPALIVE_TIME,
    KEEPALIVE_TIMEOUT,
    Config,
    Deadline,
    Retry,
)
from petcd.client.errors import (
    ClientClosedError,
    ConnectionFailedError,
    EtcdError,
    UnavailableError,
    from_rpc_error,
)
from petcd.client.member import MemberConn
from petcd.client.ops import Bytes, Compare, Delete, Get, Op, Put, SortOrder, SortTarget, Txn
from petcd.client.ops import make_txn as _make_txn
from petcd.client.streams import KeepAlive, Watch, WatchStream
from petcd.client.watch_state import WatchSpec
from petcd.pb.etcdserverpb import rpc_pb2 as rpc

T = TypeVar("T")
_UNSET: Any = object()
PathOrBytes = str | bytes | Path


_Conn = MemberConn[grpc.Channel]  # one member's channel and its method objects


class Client:
    """A blocking etcd v3 client for petcd and etcd.

        with Client("127.0.0.1:2379,127.0.0.1:22379") as c:
            c.put("greeting", "hello")
            print(c.get("greeting").value)            # b'hello'
            for kv in c.get("app/", prefix=True).kvs:
                print(kv.key, kv.value)

    endpoints: "host:port" list (or comma-separated, http(s):// URLs allowed); the
    client moves to the next one when its member fails. timeout: default per-call
    deadline in seconds (covering retries). dial_timeout: how long to wait for a
    connection to one member before trying the next. keepalive_time/keepalive_timeout:
    gRPC pings (every 10 s while a call or watch is open; no answer in 6 s: the member
    is dead, the client moves on), as etcdctl's defaults work out under grpc-go; None
    turns them off (clientv3's library default). ca_cert, cert_key, cert_cert: TLS (paths or
    PEM bytes). insecure_skip_tls_verify: TLS without checking who signed each member's
    certificate or whose it is (etcdctl's flag; see petcd.client.unverified).
    user/password: authenticate, and again whenever the token expires.
    grpc_options: extra channel options.
    """

    def __init__(self, endpoints: str | Sequence[str] = "127.0.0.1:2379", *,
                 user: str | None = None, password: str | None = None,
                 ca_cert: PathOrBytes | None = None, cert_key: PathOrBytes | None = None,
                 cert_cert: PathOrBytes | None = None, timeout: float | None = None,
                 dial_timeout: float | None = 5.0,
                 keepalive_time: float | None = KEEPALIVE_TIME,
                 keepalive_timeout: float = KEEPALIVE_TIMEOUT,
                 grpc_options: Iterable[tuple[str, object]] = (),
                 insecure_skip_tls_verify: bool = False) -> None:
        self.config = Config.make(endpoints, ca_cert=ca_cert, cert_key=cert_key,
                                  cert_cert=cert_cert, user=user, password=password,
                                  timeout=timeout, dial_timeout=dial_timeout,
                                  keepalive_time=keepalive_time,
                                  keepalive_timeout=keepalive_timeout,
                                  grpc_options=list(grpc_options),
                                  insecure_skip_tls_verify=insecure_skip_tls_verify)
        self._lock = threading.RLock()
        self._conns: dict[int, _Conn] = {}
        self._index = 0
        self._token: str | None = None
        self._metadata: tuple[tuple[str, str], ...] = ()
        self._closed = False
        self._children: set[Watch | KeepAlive] = set()  # closed with the client
        self._watch_streams: dict[int, WatchStream] = {}  # per member: shared by watches

    # -- connection management

    @property
    def endpoint(self) -> str:
        """The member calls currently go to."""
        return self.config.endpoints[self._index]

    def _conn(self, deadline: Deadline) -> _Conn:
        if self._closed:
            raise ClientClosedError("client closed")
        conn = self._conns.get(self._index)
        if conn is None:
            with self._lock:
                conn = self._conns.get(self._index)
                if conn is None:
                    target = self.config.endpoints[self._index]
                    try:
                        creds, opts = self.config.channel_for(target)
                    except OSError:  # (skip-verify: its certificates could not be had)
                        raise _DialFailed(_Conn(self._index, target, None)) from None  # type: ignore[arg-type]
                    ch = (grpc.secure_channel(target, creds, opts) if creds is not None
                          else grpc.insecure_channel(target, opts))
                    conn = self._conns[self._index] = _Conn(self._index, target, ch)
        if not conn.ready and self.config.dial_timeout is not None:
            wait = self.config.dial_timeout
            left = deadline.left()
            if left is not None:
                wait = min(wait, left)
            fut = grpc.channel_ready_future(conn.channel)
            try:
                fut.result(timeout=wait)
            except grpc.FutureTimeoutError:
                fut.cancel()
                raise _DialFailed(conn) from None
            conn.ready = True
        return conn

    def _failover(self, conn: _Conn) -> None:
        conn.ready = False
        with self._lock:
            if self._index == conn.index:
                self._index = (conn.index + 1) % len(self.config.endpoints)

    def _watch_stream(self, conn: _Conn) -> WatchStream:
        """The Watch stream this client's watches on `conn`'s member share (opened on
        first use, again after it broke)."""
        with self._lock:
            s = self._watch_streams.get(conn.index)
            if s is None or s.dead or s.conn is not conn:
                s = self._watch_streams[conn.index] = WatchStream(self, conn)
            return s

    def _watch_stream_gone(self, stream: WatchStream) -> None:
        with self._lock:
            if self._watch_streams.get(stream.conn.index) is stream:
                del self._watch_streams[stream.conn.index]

    def _authenticate(self, conn: _Conn, deadline: Deadline) -> None:
        cfg = self.config
        assert cfg.user is not None and cfg.password is not None
        call = calls.authenticate(cfg.user, cfg.password)
        try:
            token = call.parse(conn.unary(call.method, call.response_type)(
                call.request, timeout=deadline.left()))
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None
        with self._lock:
            self._token = token
            self._metadata = (("token", token),)

    def _ensure_token(self, conn: _Conn, deadline: Deadline) -> None:
        if self.config.user is not None and self._token is None:
            self._authenticate(conn, deadline)

    def _run(self, attempt: Callable[[_Conn, Deadline], T], idempotent: bool,
             timeout: float | None) -> T:
        """Run `attempt` on the current member, failing over and retrying as the policy
        allows (connection.Retry)."""
        retry = Retry(self.config, idempotent,
                      self.config.timeout if timeout is _UNSET else timeout, self._failover)
        while True:
            try:
                conn = self._conn(retry.deadline)
            except _DialFailed as d:
                time.sleep(retry.dial_failed(d.conn))
                continue
            try:
                self._ensure_token(conn, retry.deadline)
            except (ConnectionFailedError, UnavailableError) as e:
                time.sleep(retry.auth_failed(conn, e))
                continue
            try:
                return attempt(conn, retry.deadline)
            except grpc.RpcError as e:
                pause = retry.call_failed(conn, e, self._closed)
                if pause is None:
                    with self._lock:
                        self._token = None
                    continue
                time.sleep(pause)

    def _unary(self, call: calls.Call[T], timeout: float | None = _UNSET) -> T:
        def attempt(conn: _Conn, deadline: Deadline) -> T:
            fn = conn.unary(call.method, call.response_type)
            return call.parse(fn(call.request, timeout=deadline.left(),
                                 metadata=self._metadata))
        return self._run(attempt, call.idempotent, timeout)

    def close(self) -> None:
        """Stop every watch and keep-alive of this client and close its channels."""
        with self._lock:
            self._closed = True
            children = list(self._children)
        for c in children:
            c.close()
        with self._lock:
            streams = list(self._watch_streams.values())
        for s in streams:
            s.close()
        with self._lock:
            conns = list(self._conns.values())
            self._conns.clear()
        for conn in conns:
            conn.channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, call: calls.Call[T], *, timeout: float | None = _UNSET) -> T:
        """Run a prebuilt unary call (petcd.client.calls), with the same failover, retry
        and token handling as every method (for wrappers that need raw responses)."""
        return self._unary(call, timeout)

    # -- KV

    def get(self, key: Bytes, range_end: Bytes | None = None, *, prefix: bool = False,
            from_key: bool = False, limit: int = 0, revision: int = 0,
            sort_order: SortOrder = "none", sort_target: SortTarget = "key",
            serializable: bool = False, keys_only: bool = False, count_only: bool = False,
            min_mod_revision: int = 0, max_mod_revision: int = 0,
            min_create_revision: int = 0, max_create_revision: int = 0,
            timeout: float | None = _UNSET) -> t.GetResult:
        """One key, or a range: [key, range_end), every key under `prefix`, or every key
        >= key (`from_key`)."""
        return self._unary(calls.get(Get(
            key, range_end, prefix, from_key, limit, revision, sort_order, sort_target,
            serializable, keys_only, count_only, min_mod_revision, max_mod_revision,
            min_create_revision, max_create_revision)), timeout)

    def put(self, key: Bytes, value: Bytes = b"", *, lease: int = 0, prev_kv: bool = False,
            ignore_value: bool = False, ignore_lease: bool = False,
            timeout: float | None = _UNSET) -> t.PutResult:
        return self._unary(calls.put(Put(key, value, lease, prev_kv, ignore_value,
                                         ignore_lease)), timeout)

    def delete(self, key: Bytes, range_end: Bytes | None = None, *, prefix: bool = False,
               from_key: bool = False, prev_kv: bool = False,
               timeout: float | None = _UNSET) -> t.DeleteResult:
        return self._unary(calls.delete(Delete(key, range_end, prefix, from_key, prev_kv)),
                           timeout)

    def txn(self, compare: Txn | Iterable[Compare] = (), success: Iterable[Op] = (),
            failure: Iterable[Op] = (), *, timeout: float | None = _UNSET) -> t.TxnResult:
        """Run a transaction: a `Txn` built with when/then/otherwise, or the three lists."""
        return self._unary(calls.txn(_make_txn(compare, success, failure)), timeout)

    def compact(self, revision: int, *, physical: bool = False,
                timeout: float | None = _UNSET) -> t.Header:
        return self._unary(calls.compact(revision, physical), timeout)

    # -- Watch

    def watch(self, key: Bytes, range_end: Bytes | None = None, *, prefix: bool = False,
              from_key: bool = False, start_revision: int = 0, prev_kv: bool = False,
              no_put: bool = False, no_delete: bool = False,
              progress_notify: bool = False, fragment: bool = False) -> Watch:
        """A watch: iterate it for `WatchResponse` batches (or `.events()` for single
        events); `cancel()` or use it as a context manager. It survives member failures
        without losing or repeating an event; a compacted start raises CompactedError.
        A client's watches on one member share one gRPC stream (as clientv3's do).
        fragment: let the server split a response bigger than its limit (etcd's
        --max-request-bytes + 512 KiB); the pieces are joined here into one batch."""
        spec = WatchSpec.make(key, range_end, prefix=prefix, from_key=from_key,
                              start_revision=start_revision, prev_kv=prev_kv, no_put=no_put,
                              no_delete=no_delete, progress_notify=progress_notify,
                              fragment=fragment)
        return Watch(self, spec).start()

    def add_watch_callback(self, key: Bytes, callback: Callable[[t.WatchResponse | EtcdError],
                                                                 None], **kw: Any) -> Watch:
        """Like `watch`, but `callback` gets each batch (or the error that ended the
        watch) on a background thread, stopped by `cancel()` or `close()`."""
        w = self.watch(key, **kw)
        w.start_callbacks(callback)
        return w

    # -- Lease

    def lease_grant(self, ttl: int, lease_id: int = 0, *,
                    timeout: float | None = _UNSET) -> t.LeaseGrant:
        return self._unary(calls.lease_grant(ttl, lease_id), timeout)

    def lease_revoke(self, lease_id: int, *, timeout: float | None = _UNSET) -> t.Header:
        return self._unary(calls.lease_revoke(lease_id), timeout)

    def lease_time_to_live(self, lease_id: int, *, keys: bool = False,
                           timeout: float | None = _UNSET) -> t.LeaseTTL:
        return self._unary(calls.lease_time_to_live(lease_id, keys), timeout)

    def leases(self, *, timeout: float | None = _UNSET) -> list[int]:
        return self._unary(calls.lease_leases(), timeout)

    def lease_keepalive_once(self, lease_id: int, *,
                             timeout: float | None = _UNSET) -> t.LeaseKeepAlive:
        """Refresh a lease once; `ttl <= 0` in the answer means it is gone."""
        def attempt(conn: _Conn, deadline: Deadline) -> t.LeaseKeepAlive:
            fn = conn.stream("/etcdserverpb.Lease/LeaseKeepAlive", rpc.LeaseKeepAliveResponse)
            it = fn(iter([rpc.LeaseKeepAliveRequest(ID=lease_id)]),
                    timeout=deadline.left(), metadata=self._metadata)
            try:
                for r in it:
                    return t.LeaseKeepAlive.from_pb(r)
            finally:
                it.cancel()
            raise ConnectionFailedError("keep-alive stream ended without an answer")
        return self._run(attempt, True, timeout)

    def keep_alive(self, lease_id: int, *, on_lost: Callable[[EtcdError], None] | None = None
                   ) -> KeepAlive:
        """Keep a lease alive in the background (a thread refreshing it at a third of its
        TTL, on whichever member answers) until `stop()`. When the lease is lost
        (expired, revoked, or not refreshed in time) `on_lost` is called with a
        LeaseExpiredError and `lost` is set."""
        return KeepAlive(self, lease_id, on_lost)

    # -- Cluster

    def member_list(self, *, linearizable: bool = False,
                    timeout: float | None = _UNSET) -> t.MemberListResult:
        return self._unary(calls.member_list(linearizable), timeout)

    def member_add(self, peer_urls: Iterable[str], *, learner: bool = False,
                   timeout: float | None = _UNSET) -> t.MemberAddResult:
        return self._unary(calls.member_add(peer_urls, learner), timeout)

    def member_remove(self, member_id: int, *,
                      timeout: float | None = _UNSET) -> t.MemberListResult:
        return self._unary(calls.member_remove(member_id), timeout)

    def member_update(self, member_id: int, peer_urls: Iterable[str], *,
                      timeout: float | None = _UNSET) -> t.MemberListResult:
        return self._unary(calls.member_update(member_id, peer_urls), timeout)

    def member_promote(self, member_id: int, *,
                       timeout: float | None = _UNSET) -> t.MemberListResult:
        return self._unary(calls.member_promote(member_id), timeout)

    # -- Maintenance (answered by the member currently connected: see `endpoint`)

    def status(self, *, timeout: float | None = _UNSET) -> t.Status:
        return self._unary(calls.status(), timeout)

    def alarm_list(self, *, timeout: float | None = _UNSET) -> list[t.Alarm]:
        return self._unary(calls.alarm(rpc.AlarmRequest.GET), timeout)

    def alarm_activate(self, member_id: int = 0, alarm: t.AlarmType = t.AlarmType.NOSPACE,
                       *, timeout: float | None = _UNSET) -> list[t.Alarm]:
        """Raise an alarm (NOSPACE: the cluster refuses writes until it is disarmed)."""
        return self._unary(calls.alarm(rpc.AlarmRequest.ACTIVATE, member_id, alarm.value),
                           timeout)

    def alarm_disarm(self, member_id: int = 0, alarm: t.AlarmType = t.AlarmType.NONE, *,
                     timeout: float | None = _UNSET) -> list[t.Alarm]:
        return self._unary(calls.alarm(rpc.AlarmRequest.DEACTIVATE, member_id, alarm.value),
                           timeout)

    def defragment(self, *, timeout: float | None = _UNSET) -> t.Header:
        return self._unary(calls.defragment(), timeout)

    def hash(self, *, timeout: float | None = _UNSET) -> int:
        return self._unary(calls.hash_(), timeout)

    def hash_kv(self, revision: int = 0, *, timeout: float | None = _UNSET) -> t.HashKV:
        return self._unary(calls.hash_kv(revision), timeout)

    def move_leader(self, target_id: int, *, timeout: float | None = _UNSET) -> t.Header:
        return self._unary(calls.move_leader(target_id), timeout)

    def snapshot(self, out: IO[bytes], *, timeout: float | None = _UNSET) -> int:
        """Stream the member's backend snapshot into `out`; returns the bytes written."""
        def attempt(conn: _Conn, deadline: Deadline) -> int:
            fn = conn.stream(calls.SNAPSHOT, rpc.SnapshotResponse, unary_request=True)
            n = 0
            for r in fn(rpc.SnapshotRequest(), timeout=deadline.left(),
                        metadata=self._metadata):
                out.write(r.blob)
                n += len(r.blob)
            return n
        return self._run(attempt, False, timeout)

    # -- Auth

    def authenticate(self, name: str, password: str, *,
                     timeout: float | None = _UNSET) -> str:
        """A token for `name` (the client authenticates by itself when given a user)."""
        return self._unary(calls.authenticate(name, password), timeout)

    def auth_enable(self, *, timeout: float | None = _UNSET) -> t.Header:
        return self._unary(calls.auth_enable(), timeout)

    def auth_disable(self, *, timeout: float | None = _UNSET) -> t.Header:
        return self._unary(calls.auth_disable(), timeout)

    def auth_status(self, *, timeout: float | None = _UNSET) -> t.AuthStatus:
        return self._unary(calls.auth_status(), timeout)

    def user_add(self, name: str, password: str | None, *,
                 timeout: float | None = _UNSET) -> t.Header:
        """Add a user (password None: a user that can only log in by client cert)."""
        return self._unary(calls.user_add(name, password), timeout)

    def user_get(self, name: str, *, timeout: float | None = _UNSET) -> list[str]:
        """The user's roles."""
        return self._unary(calls.user_get(name), timeout)

    def user_list(self, *, timeout: float | None = _UNSET) -> list[str]:
        return self._unary(calls.user_list(), timeout)

    def user_delete(self, name: str, *, timeout: float | None = _UNSET) -> t.Header:
        return self._unary(calls.user_delete(name), timeout)

    def user_change_password(self, name: str, password: str, *,
                             timeout: float | None = _UNSET) -> t.Header:
        return self._unary(calls.user_change_password(name, password), timeout)

    def user_grant_role(self, user: str, role: str, *,
                        timeout: float | None = _UNSET) -> t.Header:
        return self._unary(calls.user_grant_role(user, role), timeout)

    def user_revoke_role(self, user: str, role: str, *,
                         timeout: float | None = _UNSET) -> t.Header:
        return self._unary(calls.user_revoke_role(user, role), timeout)

    def role_add(self, name: str, *, timeout: float | None = _UNSET) -> t.Header:
        return self._unary(calls.role_add(name), timeout)

    def role_get(self, name: str, *, timeout: float | None = _UNSET) -> list[t.Permission]:
        return self._unary(calls.role_get(name), timeout)

    def role_list(self, *, timeout: float | None = _UNSET) -> list[str]:
        return self._unary(calls.role_list(), timeout)

    def role_delete(self, name: str, *, timeout: float | None = _UNSET) -> t.Header:
        return self._unary(calls.role_delete(name), timeout)

    def role_grant_permission(self, name: str, perm: t.PermissionType, key: Bytes,
                              range_end: Bytes | None = None, *, prefix: bool = False,
                              timeout: float | None = _UNSET) -> t.Header:
        return self._unary(calls.role_grant_permission(name, perm, key, range_end,
                                                       prefix=prefix), timeout)

    def role_revoke_permission(self, name: str, key: Bytes, range_end: Bytes | None = None,
                               *, prefix: bool = False,
                               timeout: float | None = _UNSET) -> t.Header:
        return self._unary(calls.role_revoke_permission(name, key, range_end, prefix=prefix),
                           timeout)


class _DialFailed(Exception):
    def __init__(self, conn: _Conn) -> None:
        super().__init__(conn.target)
        self.conn = conn
