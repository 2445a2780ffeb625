"""The long-lived parts of the blocking client: `Watch` (a resuming watch stream) and
`KeepAlive` (a background lease refresher). Both are closed with their client."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import grpc

from petcd.client.connection import WATCH_METADATA, Backoff, Deadline
from petcd.client.errors import (
    ClientClosedError,
    EtcdError,
    LeaseExpiredError,
    LeaseNotFoundError,
    from_rpc_error,
)
from petcd.client.types import Event, WatchResponse
from petcd.client.watch_state import Reconnect, WatchSpec, WatchState
from petcd.pb.etcdserverpb import rpc_pb2 as rpc

if TYPE_CHECKING:
    from petcd.client.sync import Client

WATCH_METHOD = "/etcdserverpb.Watch/Watch"
# Errors a new stream on another member cannot cure: they end the watch.
FATAL_STREAM_CODES = frozenset({
    grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.FAILED_PRECONDITION,
})
_END = object()


class Watch:
    """Iterate for `WatchResponse` batches; see `Client.watch`."""

    def __init__(self, client: Client, spec: WatchSpec) -> None:
        self._client = client
        self.state = WatchState(spec)
        self._call: Any = None
        self._requests: queue.Queue[object] | None = None
        self._closed = False
        self._user_closed = False
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.reconnects = 0  # streams opened after the first (for tests and metrics)
        self._early: WatchResponse | None = None
        client._children.add(self)

    @property
    def next_revision(self) -> int:
        """The revision the watch continues from (last delivered + 1)."""
        return self.state.next_rev

    def _open(self) -> None:
        from petcd.client.sync import _DialFailed

        c = self._client
        backoff = Backoff(len(c.config.endpoints))
        while True:
            if self._closed:
                raise StopIteration
            try:
                conn = c._conn(Deadline(None))
                c._ensure_token(conn, Deadline(c.config.dial_timeout))
            except _DialFailed as d:
                c._failover(d.conn)
                time.sleep(backoff.next_pause())
                continue
            except EtcdError as e:
                if e.code in FATAL_STREAM_CODES:
                    raise
                c._failover(conn)
                time.sleep(backoff.next_pause())
                continue
            requests: queue.Queue[object] = queue.Queue()
            requests.put(self.state.create_request())
            fn = conn.stream(WATCH_METHOD, rpc.WatchResponse)
            with self._lock:
                if self._closed:
                    raise StopIteration
                self._requests = requests
                self._call = fn(iter(requests.get, _END),
                                metadata=c._metadata + WATCH_METADATA)
                self._conn = conn
            return

    def _drop_stream(self, failover: bool) -> None:
        with self._lock:
            call, reqs = self._call, self._requests
            self._call = self._requests = None
        if reqs is not None:
            reqs.put(_END)
        if call is not None:
            call.cancel()
        if failover:
            self._client._failover(self._conn)
        self.reconnects += 1

    def __iter__(self) -> Watch:
        return self

    def __next__(self) -> WatchResponse:
        early, self._early = self._early, None
        if early is not None:
            return early
        out = self._pump(until_created=False)
        assert out is not None
        return out

    def start(self) -> Watch:
        """Open the stream and wait until the server created the watch: events from
        then on are delivered (Client.watch calls this)."""
        self._pump(until_created=True)
        return self

    def _pump(self, until_created: bool) -> WatchResponse | None:
        pause = Backoff(len(self._client.config.endpoints))
        while True:
            if self._closed:
                raise StopIteration
            if self._call is None:
                self._open()
            try:
                r = next(self._call)
            except StopIteration:
                if self._closed:
                    raise
                self._drop_stream(failover=True)  # the member ended the stream: go elsewhere
                continue
            except grpc.RpcError as e:
                if self._closed:
                    raise StopIteration from None
                if e.code() in FATAL_STREAM_CODES:
                    self._shutdown()
                    raise from_rpc_error(e) from None
                if e.code() == grpc.StatusCode.UNAUTHENTICATED:
                    self._client._token = None
                self._drop_stream(failover=e.code() != grpc.StatusCode.UNAUTHENTICATED)
                time.sleep(pause.next_pause())
                continue
            try:
                out = self.state.on_response(r)
            except Reconnect as rc:
                if rc.reauth:
                    self._client._token = None
                self._drop_stream(failover=not rc.reauth)
                continue
            except EtcdError:
                self._shutdown()
                raise
            if out is not None:
                if until_created:  # (cannot happen: events follow the creation)
                    self._early = out
                    return None
                return out
            if until_created and r.created:
                return None

    def events(self) -> Iterator[Event]:
        """Every event, one at a time (progress notifications skipped)."""
        for batch in self:
            yield from batch.events

    def request_progress(self) -> None:
        """Ask for a progress notification (a batch with no events and the current
        revision) on the current stream."""
        reqs = self._requests
        if reqs is not None:
            reqs.put(self.state.progress_request())

    def start_callbacks(self, callback: Callable[[WatchResponse | EtcdError], None]) -> None:
        def run() -> None:
            try:
                for batch in self:
                    callback(batch)
            except EtcdError as e:
                if not self._user_closed:
                    callback(e)

        self._thread = threading.Thread(target=run, name="petcd-watch", daemon=True)
        self._thread.start()

    def cancel(self) -> None:
        self.close()

    def close(self) -> None:
        self._user_closed = True
        self._shutdown()

    def _shutdown(self) -> None:
        self._closed = True
        self._drop_stream(failover=False)
        self._client._children.discard(self)
        th = self._thread
        if th is not None and th is not threading.current_thread():
            th.join()

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class KeepAlive:
    """Refreshes a lease from a background thread; see `Client.keep_alive`."""

    def __init__(self, client: Client, lease_id: int,
                 on_lost: Callable[[EtcdError], None] | None) -> None:
        self._client = client
        self.lease_id = lease_id
        self.on_lost = on_lost
        self.ttl: int | None = None
        self.lost: EtcdError | None = None
        self._lost_event = threading.Event()
        self._stop = threading.Event()
        client._children.add(self)
        self._thread = threading.Thread(target=self._run, name="petcd-keepalive", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        last_ok = time.monotonic()
        while not self._stop.is_set():
            ttl = self.ttl
            try:
                r = self._client.lease_keepalive_once(
                    self.lease_id, timeout=max(1.0, (ttl or 3) / 3))
            except ClientClosedError:
                return
            except LeaseNotFoundError as e:
                self._lose(e)
                return
            except EtcdError as e:
                if self._stop.is_set():
                    return
                if ttl is not None and time.monotonic() - last_ok > ttl:
                    self._lose(LeaseExpiredError(
                        f"lease {self.lease_id:x} not refreshed for {ttl}s: {e.message}"))
                    return
                self._stop.wait(0.2)
                continue
            if r.ttl <= 0:
                self._lose(LeaseExpiredError(f"lease {self.lease_id:x} expired or revoked"))
                return
            self.ttl, last_ok = r.ttl, time.monotonic()
            self._stop.wait(max(0.1, r.ttl / 3))

    def _lose(self, e: EtcdError) -> None:
        self.lost = e
        self._lost_event.set()
        if self.on_lost is not None:
            self.on_lost(e)

    def wait_lost(self, timeout: float | None = None) -> EtcdError | None:
        """Block until the lease is lost (or timeout); returns the reason or None."""
        self._lost_event.wait(timeout)
        return self.lost

    def stop(self) -> None:
        """Stop refreshing (the lease then expires after its TTL unless revoked)."""
        self._stop.set()
        self._client._children.discard(self)
        if self._thread is not threading.current_thread():
            self._thread.join()

    close = stop
