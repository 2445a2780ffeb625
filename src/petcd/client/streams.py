"""The long-lived parts of the blocking client: `Watch` (a resuming watch), the
`WatchStream` its client's watches on one member share, and `KeepAlive` (a background
lease refresher). All are closed with their client."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import grpc

from petcd.client.connection import WATCH_METADATA, Deadline
from petcd.client.errors import (
    ClientClosedError,
    EtcdError,
)
from petcd.client.lease_state import KeepAliveState
from petcd.client.types import Event, WatchResponse
from petcd.client.watch_state import (
    CLOSED,
    Broken,
    WatchLoop,
    WatchRouter,
    WatchSpec,
)
from petcd.pb.etcdserverpb import rpc_pb2 as rpc

if TYPE_CHECKING:
    from petcd.client.sync import Client

WATCH_METHOD = "/etcdserverpb.Watch/Watch"
_END = object()


class WatchStream:
    """One gRPC Watch stream to one member, shared by the client's watches there (as
    clientv3 shares one per connection): a thread reads it and hands each response to
    its watch's queue (WatchRouter says which). When it breaks, every watch on it gets
    `_Broken` and re-creates itself, from its own next revision, on a stream of the
    member the client moves to."""

    def __init__(self, client: Client, conn: Any) -> None:
        self.client = client
        self.conn = conn
        self.router: WatchRouter[Watch] = WatchRouter()
        self.lock = threading.Lock()
        self.dead = False
        self.requests: queue.Queue[object] = queue.Queue()
        fn = conn.stream(WATCH_METHOD, rpc.WatchResponse)
        self.call = fn(iter(self.requests.get, _END), metadata=client._metadata + WATCH_METADATA)
        self.thread = threading.Thread(target=self._read, name="petcd-watch", daemon=True)
        self.thread.start()

    def add(self, w: Watch) -> bool:
        with self.lock:
            if self.dead:
                return False
            self.router.creating(w)
            self.requests.put(w.state.create_request())
            return True

    def remove(self, w: Watch) -> None:
        with self.lock:
            wid = self.router.remove(w)
            if wid is not None and not self.dead:
                self.requests.put(rpc.WatchRequest(
                    cancel_request=rpc.WatchCancelRequest(watch_id=wid)))
            idle = self.router.empty()
        if idle:  # the last watch left: close the stream (a new one opens on demand)
            self.close()

    def send(self, request: rpc.WatchRequest) -> None:
        with self.lock:
            if not self.dead:
                self.requests.put(request)

    def close(self) -> None:
        with self.lock:
            if self.dead:
                return
            self.dead = True
        self.client._watch_stream_gone(self)
        self.requests.put(_END)
        self.call.cancel()
        if self.thread is not threading.current_thread():
            self.thread.join(10)  # (the cancel ends its read at once)

    def _read(self) -> None:
        error: grpc.RpcError | None = None
        try:
            for r in self.call:
                with self.lock:
                    targets, cancel = self.router.route(r)
                    if cancel is not None:
                        self.requests.put(rpc.WatchRequest(
                            cancel_request=rpc.WatchCancelRequest(watch_id=cancel)))
                for w in targets:
                    w._queue.put((self, r))
        except grpc.RpcError as e:
            error = e
        with self.lock:
            self.dead = True
            left = self.router.watches()
        self.client._watch_stream_gone(self)
        self.requests.put(_END)
        for w in left:
            w._queue.put((self, Broken(error)))


class Watch:
    """Iterate for `WatchResponse` batches; see `Client.watch`. The decisions are
    WatchLoop's (shared with the asyncio watch); this class waits and does the IO."""

    def __init__(self, client: Client, spec: WatchSpec) -> None:
        self._client = client
        self._loop = WatchLoop(spec, len(client.config.endpoints))
        self.state = self._loop.state
        self._stream: WatchStream | None = None
        self._queue: queue.Queue[Any] = queue.Queue()
        self._thread: threading.Thread | None = None
        client._children.add(self)

    @property
    def next_revision(self) -> int:
        """The revision the watch continues from (last delivered + 1)."""
        return self.state.next_rev

    @property
    def reconnects(self) -> int:
        """Streams joined after the first (for tests and metrics)."""
        return self._loop.reconnects

    def _open(self) -> None:
        from petcd.client.sync import _DialFailed

        c = self._client
        self._loop.opening()
        while True:
            if self._loop.closed:
                raise StopIteration
            try:
                conn = c._conn(Deadline(None))
                c._ensure_token(conn, Deadline(c.config.dial_timeout))
            except _DialFailed as d:
                time.sleep(self._loop.open_failed(c._failover, d.conn))
                continue
            except EtcdError as e:
                time.sleep(self._loop.open_failed(c._failover, conn, e))
                continue
            stream = c._watch_stream(conn)
            self._stream = stream
            if stream.add(self):
                return
            self._stream = None

    def __iter__(self) -> Watch:
        return self

    def __next__(self) -> WatchResponse:
        out = self._loop.take_early()
        if out is None:
            out = self._pump(until_created=False)
        assert out is not None
        return out

    def start(self) -> Watch:
        """Open the stream and wait until the server created the watch: events from
        then on are delivered (Client.watch calls this)."""
        self._pump(until_created=True)
        return self

    def _pump(self, until_created: bool) -> WatchResponse | None:
        loop = self._loop
        loop.pumping()
        while True:
            if loop.closed:
                raise StopIteration
            if self._stream is None:
                self._open()
            n = loop.next(self._queue.get(), self._stream, until_created)
            if n.stop:
                raise StopIteration
            if n.error is not None:
                self._shutdown()
                raise n.error
            if n.drop is not None:
                stream, self._stream = self._stream, None
                if stream is not None:
                    stream.remove(self)
                    loop.left(self._client, stream, n.drop)
                time.sleep(n.pause)
            elif n.done:
                return n.out

    def events(self) -> Iterator[Event]:
        """Every event, one at a time (progress notifications skipped)."""
        for batch in self:
            yield from batch.events

    def request_progress(self) -> None:
        """Ask for a progress notification (a batch with no events and the current
        revision) on the current stream: every watch sharing it gets one."""
        stream = self._stream
        if stream is not None:
            stream.send(self.state.progress_request())

    def start_callbacks(self, callback: Callable[[WatchResponse | EtcdError], None]) -> None:
        def run() -> None:
            try:
                for batch in self:
                    callback(batch)
            except EtcdError as e:
                if not self._loop.user_closed:
                    callback(e)

        self._thread = threading.Thread(target=run, name="petcd-watch-callback", daemon=True)
        self._thread.start()

    def cancel(self) -> None:
        self.close()

    def close(self) -> None:
        self._loop.user_closed = True
        self._shutdown()

    def _shutdown(self) -> None:
        self._loop.closed = True
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.remove(self)
        self._queue.put(CLOSED)
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
        state = KeepAliveState(self.lease_id)
        while not self._stop.is_set():
            try:
                r = self._client.lease_keepalive_once(self.lease_id,
                                                      timeout=state.call_timeout())
            except ClientClosedError:
                return
            except EtcdError as e:
                if self._stop.is_set():
                    return
                lost, pause = state.failed(e)
            else:
                lost, pause = state.answered(r)
                self.ttl = state.ttl
            if lost is not None:
                self._lose(lost)
                return
            self._stop.wait(pause)

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
