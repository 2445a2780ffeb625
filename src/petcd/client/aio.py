"""`AsyncClient`: the asyncio client (grpc.aio), with the same methods as `Client`
(each a coroutine). Requests and parsing come from petcd.client.calls, the retry policy
from petcd.client.connection; only the awaiting differs from petcd.client.sync."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

import grpc
import grpc.aio
from grpc.aio import EOF as _EOF  # type: ignore[attr-defined]

from petcd.client import calls
from petcd.client import types as t
from petcd.client.aio_streams import AsyncKeepAlive, AsyncWatch, AsyncWatchStream
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
from petcd.client.watch_state import WatchSpec
from petcd.pb.etcdserverpb import rpc_pb2 as rpc

T = TypeVar("T")
_UNSET: Any = object()
PathOrBytes = str | bytes | Path


_AConn = MemberConn[grpc.aio.Channel]  # one member's channel and its method objects


class _DialFailed(Exception):
    def __init__(self, conn: _AConn) -> None:
        super().__init__(conn.target)
        self.conn = conn


class AsyncClient:
    """The asyncio twin of `Client` (same arguments, same methods, awaited).

        async with AsyncClient("127.0.0.1:2379") as c:
            await c.put("k", "v")
            print((await c.get("k")).value)
            async with await c.watch("k") as w:    # created on the server here
                async for batch in w:
                    ...

    Channels are created on first use, inside the running event loop.
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
        self._conns: dict[int, _AConn] = {}
        self._index = 0
        self._token: str | None = None
        self._metadata: tuple[tuple[str, str], ...] = ()
        self._closed = False
        self._children: set[AsyncWatch | AsyncKeepAlive] = set()
        self._watch_streams: dict[int, AsyncWatchStream] = {}  # per member, shared
        self._auth_lock: asyncio.Lock | None = None

    @property
    def endpoint(self) -> str:
        return self.config.endpoints[self._index]

    async def _conn(self, deadline: Deadline) -> _AConn:
        if self._closed:
            raise ClientClosedError("client closed")
        conn = self._conns.get(self._index)
        if conn is None:
            target = self.config.endpoints[self._index]
            try:
                if self.config.insecure_skip_tls_verify:  # (blocking socket IO)
                    creds, opts = await asyncio.to_thread(self.config.channel_for, target)
                else:
                    creds, opts = self.config.channel_for(target)
            except OSError:  # (skip-verify: its certificates could not be had)
                raise _DialFailed(_AConn(self._index, target, None)) from None  # type: ignore[arg-type]
            if self._conns.get(self._index) is not None:  # made while we fetched
                return await self._conn(deadline)
            ch = (grpc.aio.secure_channel(target, creds, opts) if creds is not None
                  else grpc.aio.insecure_channel(target, opts))
            conn = self._conns[self._index] = _AConn(self._index, target, ch)
        if not conn.ready and self.config.dial_timeout is not None:
            wait = self.config.dial_timeout
            left = deadline.left()
            if left is not None:
                wait = min(wait, left)
            try:
                await asyncio.wait_for(conn.channel.channel_ready(), wait)
            except TimeoutError:
                raise _DialFailed(conn) from None
            conn.ready = True
        return conn

    def _watch_stream(self, conn: _AConn) -> AsyncWatchStream:
        """The Watch stream this client's watches on `conn`'s member share."""
        s = self._watch_streams.get(conn.index)
        if s is None or s.dead or s.conn is not conn:
            s = self._watch_streams[conn.index] = AsyncWatchStream(self, conn)
        return s

    def _watch_stream_gone(self, stream: AsyncWatchStream) -> None:
        if self._watch_streams.get(stream.conn.index) is stream:
            del self._watch_streams[stream.conn.index]

    def _failover(self, conn: _AConn) -> None:
        conn.ready = False
        if self._index == conn.index:
            self._index = (conn.index + 1) % len(self.config.endpoints)

    async def _ensure_token(self, conn: _AConn, deadline: Deadline) -> None:
        cfg = self.config
        if cfg.user is None or self._token is not None:
            return
        assert cfg.password is not None
        if self._auth_lock is None:
            self._auth_lock = asyncio.Lock()
        async with self._auth_lock:  # one Authenticate for all the callers waiting
            if self._token is not None:
                return
            call = calls.authenticate(cfg.user, cfg.password)
            try:
                token = call.parse(await conn.unary(call.method, call.response_type)(
                    call.request, timeout=deadline.left()))
            except grpc.RpcError as e:
                raise from_rpc_error(e) from None
            self._token = token
            self._metadata = (("token", token),)

    async def _run(self, attempt: Callable[[_AConn, Deadline], Awaitable[T]],
                   idempotent: bool, timeout: float | None) -> T:
        retry = Retry(self.config, idempotent,
                      self.config.timeout if timeout is _UNSET else timeout, self._failover)
        while True:
            try:
                conn = await self._conn(retry.deadline)
            except _DialFailed as d:
                await asyncio.sleep(retry.dial_failed(d.conn))
                continue
            try:
                await self._ensure_token(conn, retry.deadline)
            except (ConnectionFailedError, UnavailableError) as e:
                await asyncio.sleep(retry.auth_failed(conn, e))
                continue
            try:
                return await attempt(conn, retry.deadline)
            except grpc.RpcError as e:
                pause = retry.call_failed(conn, e, self._closed)
                if pause is None:
                    self._token = None
                    continue
                await asyncio.sleep(pause)

    async def _unary(self, call: calls.Call[T], timeout: float | None = _UNSET) -> T:
        async def attempt(conn: _AConn, deadline: Deadline) -> T:
            fn = conn.unary(call.method, call.response_type)
            return call.parse(await fn(call.request, timeout=deadline.left(),
                                       metadata=self._metadata))
        return await self._run(attempt, call.idempotent, timeout)

    async def close(self) -> None:
        """Stop every watch and keep-alive of this client and close its channels."""
        self._closed = True
        for c in list(self._children):
            await c.close()
        for s in list(self._watch_streams.values()):
            s.close()
            with contextlib.suppress(asyncio.CancelledError):
                await s.task
        conns = list(self._conns.values())
        self._conns.clear()
        for conn in conns:
            await conn.channel.close(None)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def call(self, call: calls.Call[T], *, timeout: float | None = _UNSET) -> T:
        """Run a prebuilt unary call (petcd.client.calls), with the same failover, retry
        and token handling as every method (for wrappers that need raw responses)."""
        return await self._unary(call, timeout)

    # -- KV

    async def get(self, key: Bytes, range_end: Bytes | None = None, *, prefix: bool = False,
            from_key: bool = False, limit: int = 0, revision: int = 0,
            sort_order: SortOrder = "none", sort_target: SortTarget = "key",
            serializable: bool = False, keys_only: bool = False, count_only: bool = False,
            min_mod_revision: int = 0, max_mod_revision: int = 0,
            min_create_revision: int = 0, max_create_revision: int = 0,
            timeout: float | None = _UNSET) -> t.GetResult:
        """One key, or a range: [key, range_end), every key under `prefix`, or every key
        >= key (`from_key`)."""
        return await self._unary(calls.get(Get(
            key, range_end, prefix, from_key, limit, revision, sort_order, sort_target,
            serializable, keys_only, count_only, min_mod_revision, max_mod_revision,
            min_create_revision, max_create_revision)), timeout)

    async def put(self, key: Bytes, value: Bytes = b"", *, lease: int = 0, prev_kv: bool = False,
            ignore_value: bool = False, ignore_lease: bool = False,
            timeout: float | None = _UNSET) -> t.PutResult:
        return await self._unary(calls.put(Put(key, value, lease, prev_kv, ignore_value,
                                         ignore_lease)), timeout)

    async def delete(self, key: Bytes, range_end: Bytes | None = None, *, prefix: bool = False,
               from_key: bool = False, prev_kv: bool = False,
               timeout: float | None = _UNSET) -> t.DeleteResult:
        return await self._unary(calls.delete(Delete(key, range_end, prefix, from_key, prev_kv)),
                           timeout)

    async def txn(self, compare: Txn | Iterable[Compare] = (), success: Iterable[Op] = (),
            failure: Iterable[Op] = (), *, timeout: float | None = _UNSET) -> t.TxnResult:
        """Run a transaction: a `Txn` built with when/then/otherwise, or the three lists."""
        return await self._unary(calls.txn(_make_txn(compare, success, failure)), timeout)

    async def compact(self, revision: int, *, physical: bool = False,
                timeout: float | None = _UNSET) -> t.Header:
        return await self._unary(calls.compact(revision, physical), timeout)

    # -- Watch

    async def watch(self, key: Bytes, range_end: Bytes | None = None, *, prefix: bool = False,
              from_key: bool = False, start_revision: int = 0, prev_kv: bool = False,
              no_put: bool = False, no_delete: bool = False,
              progress_notify: bool = False, fragment: bool = False) -> AsyncWatch:
        """A watch, created on the server when this returns: `async for` it for
        `WatchResponse` batches; see `Client.watch`."""
        spec = WatchSpec.make(key, range_end, prefix=prefix, from_key=from_key,
                              start_revision=start_revision, prev_kv=prev_kv, no_put=no_put,
                              no_delete=no_delete, progress_notify=progress_notify,
                              fragment=fragment)
        return await AsyncWatch(self, spec).start()
    async def add_watch_callback(self, key: Bytes,
                           callback: Callable[[t.WatchResponse | EtcdError], Any],
                           **kw: Any) -> AsyncWatch:
        """Like `watch`, but `callback` (a function or coroutine function) gets each batch,
        or the error that ended the watch, from a task of its own."""
        w = await self.watch(key, **kw)
        w.start_callbacks(callback)
        return w
    async def lease_grant(self, ttl: int, lease_id: int = 0, *,
                    timeout: float | None = _UNSET) -> t.LeaseGrant:
        return await self._unary(calls.lease_grant(ttl, lease_id), timeout)

    async def lease_revoke(self, lease_id: int, *, timeout: float | None = _UNSET) -> t.Header:
        return await self._unary(calls.lease_revoke(lease_id), timeout)

    async def lease_time_to_live(self, lease_id: int, *, keys: bool = False,
                           timeout: float | None = _UNSET) -> t.LeaseTTL:
        return await self._unary(calls.lease_time_to_live(lease_id, keys), timeout)

    async def leases(self, *, timeout: float | None = _UNSET) -> list[int]:
        return await self._unary(calls.lease_leases(), timeout)

    async def lease_keepalive_once(self, lease_id: int, *,
                                   timeout: float | None = _UNSET) -> t.LeaseKeepAlive:
        """Refresh a lease once; `ttl <= 0` in the answer means it is gone."""
        async def attempt(conn: _AConn, deadline: Deadline) -> t.LeaseKeepAlive:
            fn = conn.stream("/etcdserverpb.Lease/LeaseKeepAlive", rpc.LeaseKeepAliveResponse)
            call = fn(timeout=deadline.left(), metadata=self._metadata)
            try:
                await call.write(rpc.LeaseKeepAliveRequest(ID=lease_id))
                r = await call.read()
            finally:
                call.cancel()
            if r is _EOF:
                raise ConnectionFailedError("keep-alive stream ended without an answer")
            return t.LeaseKeepAlive.from_pb(r)
        return await self._run(attempt, True, timeout)
    def keep_alive(self, lease_id: int, *,
                   on_lost: Callable[[EtcdError], Any] | None = None) -> AsyncKeepAlive:
        """Keep a lease alive from a background task until `await ka.stop()`; see
        `Client.keep_alive`."""
        return AsyncKeepAlive(self, lease_id, on_lost)
    async def member_list(self, *, linearizable: bool = False,
                    timeout: float | None = _UNSET) -> t.MemberListResult:
        return await self._unary(calls.member_list(linearizable), timeout)

    async def member_add(self, peer_urls: Iterable[str], *, learner: bool = False,
                   timeout: float | None = _UNSET) -> t.MemberAddResult:
        return await self._unary(calls.member_add(peer_urls, learner), timeout)

    async def member_remove(self, member_id: int, *,
                      timeout: float | None = _UNSET) -> t.MemberListResult:
        return await self._unary(calls.member_remove(member_id), timeout)

    async def member_update(self, member_id: int, peer_urls: Iterable[str], *,
                      timeout: float | None = _UNSET) -> t.MemberListResult:
        return await self._unary(calls.member_update(member_id, peer_urls), timeout)

    async def member_promote(self, member_id: int, *,
                       timeout: float | None = _UNSET) -> t.MemberListResult:
        return await self._unary(calls.member_promote(member_id), timeout)

    # -- Maintenance (answered by the member currently connected: see `endpoint`)

    async def status(self, *, timeout: float | None = _UNSET) -> t.Status:
        return await self._unary(calls.status(), timeout)

    async def alarm_list(self, *, timeout: float | None = _UNSET) -> list[t.Alarm]:
        return await self._unary(calls.alarm(rpc.AlarmRequest.GET), timeout)

    async def alarm_activate(self, member_id: int = 0, alarm: t.AlarmType = t.AlarmType.NOSPACE,
                       *, timeout: float | None = _UNSET) -> list[t.Alarm]:
        """Raise an alarm (NOSPACE: the cluster refuses writes until it is disarmed)."""
        return await self._unary(calls.alarm(rpc.AlarmRequest.ACTIVATE, member_id, alarm.value),
                           timeout)

    async def alarm_disarm(self, member_id: int = 0, alarm: t.AlarmType = t.AlarmType.NONE, *,
                     timeout: float | None = _UNSET) -> list[t.Alarm]:
        return await self._unary(calls.alarm(rpc.AlarmRequest.DEACTIVATE, member_id, alarm.value),
                           timeout)

    async def defragment(self, *, timeout: float | None = _UNSET) -> t.Header:
        return await self._unary(calls.defragment(), timeout)

    async def hash(self, *, timeout: float | None = _UNSET) -> int:
        return await self._unary(calls.hash_(), timeout)

    async def hash_kv(self, revision: int = 0, *, timeout: float | None = _UNSET) -> t.HashKV:
        return await self._unary(calls.hash_kv(revision), timeout)

    async def move_leader(self, target_id: int, *, timeout: float | None = _UNSET) -> t.Header:
        return await self._unary(calls.move_leader(target_id), timeout)

    async def snapshot(self, out: IO[bytes], *, timeout: float | None = _UNSET) -> int:
        """Stream the member's backend snapshot into `out`; returns the bytes written."""
        async def attempt(conn: _AConn, deadline: Deadline) -> int:
            fn = conn.stream(calls.SNAPSHOT, rpc.SnapshotResponse, unary_request=True)
            n = 0
            async for r in fn(rpc.SnapshotRequest(), timeout=deadline.left(),
                              metadata=self._metadata):
                out.write(r.blob)
                n += len(r.blob)
            return n
        return await self._run(attempt, False, timeout)
    async def authenticate(self, name: str, password: str, *,
                     timeout: float | None = _UNSET) -> str:
        """A token for `name` (the client authenticates by itself when given a user)."""
        return await self._unary(calls.authenticate(name, password), timeout)

    async def auth_enable(self, *, timeout: float | None = _UNSET) -> t.Header:
        return await self._unary(calls.auth_enable(), timeout)

    async def auth_disable(self, *, timeout: float | None = _UNSET) -> t.Header:
        return await self._unary(calls.auth_disable(), timeout)

    async def auth_status(self, *, timeout: float | None = _UNSET) -> t.AuthStatus:
        return await self._unary(calls.auth_status(), timeout)

    async def user_add(self, name: str, password: str | None, *,
                 timeout: float | None = _UNSET) -> t.Header:
        """Add a user (password None: a user that can only log in by client cert)."""
        return await self._unary(calls.user_add(name, password), timeout)

    async def user_get(self, name: str, *, timeout: float | None = _UNSET) -> list[str]:
        """The user's roles."""
        return await self._unary(calls.user_get(name), timeout)

    async def user_list(self, *, timeout: float | None = _UNSET) -> list[str]:
        return await self._unary(calls.user_list(), timeout)

    async def user_delete(self, name: str, *, timeout: float | None = _UNSET) -> t.Header:
        return await self._unary(calls.user_delete(name), timeout)

    async def user_change_password(self, name: str, password: str, *,
                             timeout: float | None = _UNSET) -> t.Header:
        return await self._unary(calls.user_change_password(name, password), timeout)

    async def user_grant_role(self, user: str, role: str, *,
                        timeout: float | None = _UNSET) -> t.Header:
        return await self._unary(calls.user_grant_role(user, role), timeout)

    async def user_revoke_role(self, user: str, role: str, *,
                         timeout: float | None = _UNSET) -> t.Header:
        return await self._unary(calls.user_revoke_role(user, role), timeout)

    async def role_add(self, name: str, *, timeout: float | None = _UNSET) -> t.Header:
        return await self._unary(calls.role_add(name), timeout)

    async def role_get(self, name: str, *, timeout: float | None = _UNSET) -> list[t.Permission]:
        return await self._unary(calls.role_get(name), timeout)

    async def role_list(self, *, timeout: float | None = _UNSET) -> list[str]:
        return await self._unary(calls.role_list(), timeout)

    async def role_delete(self, name: str, *, timeout: float | None = _UNSET) -> t.Header:
        return await self._unary(calls.role_delete(name), timeout)

    async def role_grant_permission(self, name: str, perm: t.PermissionType, key: Bytes,
                              range_end: Bytes | None = None, *, prefix: bool = False,
                              timeout: float | None = _UNSET) -> t.Header:
        return await self._unary(calls.role_grant_permission(name, perm, key, range_end,
                                                       prefix=prefix), timeout)

    async def role_revoke_permission(self, name: str, key: Bytes, range_end: Bytes | None = None,
                               *, prefix: bool = False,
                               timeout: float | None = _UNSET) -> t.Header:
        return await self._unary(calls.role_revoke_permission(name, key, range_end, prefix=prefix),
                           timeout)
