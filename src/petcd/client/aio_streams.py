"""The asyncio twins of petcd.client.streams: `AsyncWatch` (a resuming watch, an async
iterator), `AsyncWatchStream` (shared by a client's watches on one member) and
`AsyncKeepAlive` (a task refreshing a lease)."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio
from grpc.aio import EOF as _EOF  # type: ignore[attr-defined]

from petcd.client.connection import WATCH_METADATA, Deadline
from petcd.client.errors import (
    ClientClosedError,
    EtcdError,
)
from petcd.client.lease_state import KeepAliveState
from petcd.client.streams import WATCH_METHOD
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
    from petcd.client.aio import AsyncClient, _AConn


async def _call_back(fn: Callable[..., Any], arg: object) -> None:
    out = fn(arg)
    if inspect.isawaitable(out):
        await out


class AsyncWatchStream:
    """One gRPC Watch stream to one member shared by the client's watches there; the
    asyncio twin of petcd.client.streams.WatchStream (a task reads it and routes each
    response with WatchRouter; a break reaches every watch on it)."""

    def __init__(self, client: AsyncClient, conn: _AConn) -> None:
        self.client = client
        self.conn = conn
        self.router: WatchRouter[AsyncWatch] = WatchRouter()
        self.dead = False
        self._write_lock = asyncio.Lock()
        self.call = conn.stream(WATCH_METHOD, rpc.WatchResponse)(
            metadata=client._metadata + WATCH_METADATA)
        self.task = asyncio.get_running_loop().create_task(self._read())

    async def _write(self, request: rpc.WatchRequest) -> bool:
        async with self._write_lock:  # one write at a time on the stream
            if self.dead:
                return False
            try:
                await self.call.write(request)
            except (grpc.RpcError, asyncio.InvalidStateError):
                return False  # (the reader sees the break and tells every watch)
            return True

    async def add(self, w: AsyncWatch) -> bool:
        async with self._write_lock:
            if self.dead:
                return False
            self.router.creating(w)  # in write order: creations are answered in order
            # (a failed write: the reader reports the broken stream to w too)
            with contextlib.suppress(grpc.RpcError, asyncio.InvalidStateError):
                await self.call.write(w.state.create_request())
            return True

    async def remove(self, w: AsyncWatch) -> None:
        wid = self.router.remove(w)
        if wid is not None:
            await self._write(rpc.WatchRequest(
                cancel_request=rpc.WatchCancelRequest(watch_id=wid)))
        if self.router.empty():
            self.close()

    async def send(self, request: rpc.WatchRequest) -> None:
        await self._write(request)

    def close(self) -> None:
        if not self.dead:
            self.dead = True
            self.client._watch_stream_gone(self)
            self.call.cancel()

    async def _read(self) -> None:
        error: grpc.RpcError | None = None
        try:
            while True:
                r = await self.call.read()
                if r is _EOF:
                    break
                targets, cancel = self.router.route(r)
                if cancel is not None:
                    await self._write(rpc.WatchRequest(
                        cancel_request=rpc.WatchCancelRequest(watch_id=cancel)))
                for w in targets:
                    w._queue.put_nowait((self, r))
        except grpc.RpcError as e:
            error = e
        except asyncio.CancelledError:
            pass
        self.dead = True
        self.client._watch_stream_gone(self)
        for w in self.router.watches():
            w._queue.put_nowait((self, Broken(error)))


class AsyncWatch:
    """`async for batch in watch`; see `AsyncClient.watch` and `Client.watch`. The
    decisions are WatchLoop's (shared with the blocking watch); this class waits and
    does the IO."""

    def __init__(self, client: AsyncClient, spec: WatchSpec) -> None:
        self._client = client
        self._loop = WatchLoop(spec, len(client.config.endpoints))
        self.state = self._loop.state
        self._stream: AsyncWatchStream | None = None
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        client._children.add(self)

    @property
    def next_revision(self) -> int:
        return self.state.next_rev

    @property
    def reconnects(self) -> int:
        return self._loop.reconnects

    async def _open(self) -> None:
        from petcd.client.aio import _DialFailed

        c = self._client
        self._loop.opening()
        while True:
            if self._loop.closed:
                raise StopAsyncIteration
            conn = None
            try:
                conn = await c._conn(Deadline(None))
                await c._ensure_token(conn, Deadline(c.config.dial_timeout))
            except _DialFailed as d:
                await asyncio.sleep(self._loop.open_failed(c._failover, d.conn))
                continue
            except EtcdError as e:
                await asyncio.sleep(self._loop.open_failed(c._failover, conn, e))
                continue
            stream = c._watch_stream(conn)
            self._stream = stream
            if await stream.add(self):
                return
            self._stream = None

    def __aiter__(self) -> AsyncWatch:
        return self

    async def __anext__(self) -> WatchResponse:
        out = self._loop.take_early()
        if out is None:
            out = await self._pump(until_created=False)
        assert out is not None
        return out

    async def start(self) -> AsyncWatch:
        """Join the stream and wait until the server created the watch."""
        await self._pump(until_created=True)
        return self

    async def _pump(self, until_created: bool) -> WatchResponse | None:
        loop = self._loop
        loop.pumping()
        while True:
            if loop.closed:
                raise StopAsyncIteration
            if self._stream is None:
                await self._open()
            n = loop.next(await self._queue.get(), self._stream, until_created)
            if n.stop:
                raise StopAsyncIteration
            if n.error is not None:
                await self._shutdown()
                raise n.error
            if n.drop is not None:
                stream, self._stream = self._stream, None
                if stream is not None:
                    await stream.remove(self)
                    loop.left(self._client, stream, n.drop)
                await asyncio.sleep(n.pause)
            elif n.done:
                return n.out

    async def events(self) -> AsyncIterator[Event]:
        async for batch in self:
            for e in batch.events:
                yield e

    async def request_progress(self) -> None:
        """Ask for a progress notification on the current stream (every watch sharing
        it gets one; a broken stream is left for the next read to notice)."""
        if self._stream is not None:
            await self._stream.send(self.state.progress_request())

    def start_callbacks(self, callback: Callable[[WatchResponse | EtcdError], Any]) -> None:
        async def run() -> None:
            try:
                async for batch in self:
                    await _call_back(callback, batch)
            except EtcdError as e:
                if not self._loop.user_closed:
                    await _call_back(callback, e)

        self._task = asyncio.get_running_loop().create_task(run())

    async def cancel(self) -> None:
        await self.close()

    async def close(self) -> None:
        self._loop.user_closed = True
        await self._shutdown()

    async def _shutdown(self) -> None:
        self._loop.closed = True
        stream, self._stream = self._stream, None
        if stream is not None:
            await stream.remove(self)
        self._queue.put_nowait(CLOSED)
        self._client._children.discard(self)
        task = self._task
        if task is not None and task is not asyncio.current_task():
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def __aenter__(self) -> AsyncWatch:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class AsyncKeepAlive:
    """Refreshes a lease from a task; see `AsyncClient.keep_alive`."""

    def __init__(self, client: AsyncClient, lease_id: int,
                 on_lost: Callable[[EtcdError], Any] | None) -> None:
        self._client = client
        self.lease_id = lease_id
        self.on_lost = on_lost
        self.ttl: int | None = None
        self.lost: EtcdError | None = None
        self._lost_event = asyncio.Event()
        self._stop = asyncio.Event()
        client._children.add(self)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def _run(self) -> None:
        state = KeepAliveState(self.lease_id)
        while not self._stop.is_set():
            try:
                r = await self._client.lease_keepalive_once(self.lease_id,
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
                await self._lose(lost)
                return
            await self._pause(pause)

    async def _lose(self, e: EtcdError) -> None:
        self.lost = e
        self._lost_event.set()
        if self.on_lost is not None:
            await _call_back(self.on_lost, e)

    async def wait_lost(self, timeout: float | None = None) -> EtcdError | None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._lost_event.wait(), timeout)
        return self.lost

    async def stop(self) -> None:
        self._stop.set()
        self._client._children.discard(self)
        if self._task is not asyncio.current_task():
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    close = stop
