"""One gRPC call on its HTTP/2 stream: what the handler sees (read, write, the call
runners) and the per-stream state the connection keeps (windows, buffers, waiters)."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio

from petcd.api.h2.context import ServerContext
from petcd.api.h2.hpack_codec import Header
from petcd.api.h2.registry import Method

if TYPE_CHECKING:
    from petcd.api.h2.connection import H2Protocol

log = logging.getLogger("petcd.h2")

_AbortError = grpc.aio.AbortError
_EOF: Any = getattr(grpc.aio, "EOF")  # noqa: B009 - missing from the type stubs
_SC = grpc.StatusCode
_OK = _SC.OK
_CancelledError = asyncio.CancelledError


NOT_BLOCKED = 0
BLOCKED_ON_CONNECTION = 1  # in the connection's FIFO of streams waiting for its window
BLOCKED_ON_STREAM = 2  # waiting for a WINDOW_UPDATE (or SETTINGS) for this stream


class Stream:
    """One gRPC call on its HTTP/2 stream."""

    __slots__ = (
        "_done_callbacks",
        "blocked",
        "cancelled",
        "closed",
        "conn",
        "context",
        "cost",
        "deadline",
        "drain_waiter",
        "headers",
        "headers_sent",
        "messages",
        "method",
        "path",
        "pending",
        "queued_bytes",
        "rbuf",
        "reader",
        "recv_window",
        "remote_closed",
        "send_credit",
        "sid",
        "task",
        "timer",
        "trailers",
    )

    def __init__(self, conn: H2Protocol, sid: int, path: str, headers: list[Header],
                 method: Method, recv_window: int, cost: int) -> None:
        self.conn = conn
        self.sid = sid
        self.path = path
        self.headers = headers
        self.method = method
        self.recv_window = recv_window  # what the client may still send us
        # What we may still send it, relative to the client's SETTINGS_INITIAL_WINDOW_SIZE
        # (so a change of that setting costs nothing per stream).
        self.send_credit = 0
        self.blocked = NOT_BLOCKED  # why `pending` waits (the connection keeps queues)
        self.cost = cost  # memory charged to the connection's stream budget
        self.remote_closed = False  # END_STREAM (or reset) received
        self.closed = False  # the call is over: no more output from the handler
        self.cancelled = False
        self.headers_sent = False
        self.rbuf: bytes | bytearray = b""  # request bytes not yet cut into messages
        self.messages: deque[bytes] | None = None  # streaming requests: complete messages
        self.queued_bytes = 0  # bytes of `messages` (held back from flow-control credit)
        self.reader: asyncio.Future[None] | None = None
        self.pending: deque[memoryview] = deque()  # response bytes waiting for window
        self.trailers: bytes | None = None  # sent once `pending` is empty
        self.drain_waiter: asyncio.Future[None] | None = None
        self.task: asyncio.Task[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.deadline: float | None = None
        self.context: ServerContext | None = None
        self._done_callbacks: list[Callable[[], None]] | None = None

    # -- handler side
    def time_remaining(self) -> float | None:
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - asyncio.get_running_loop().time())

    def add_done_callback(self, fn: Callable[[], None]) -> None:
        if self.closed:
            fn()
            return
        if self._done_callbacks is None:
            self._done_callbacks = []
        self._done_callbacks.append(fn)

    def run_done_callbacks(self) -> None:
        callbacks, self._done_callbacks = self._done_callbacks, None
        for fn in callbacks or ():
            try:
                fn()
            except Exception:
                log.exception("gRPC done callback failed")

    async def read(self) -> Any:
        msgs = self.messages
        if msgs is None:
            raise RuntimeError("read() on a call whose request is not a stream")
        while not msgs:
            if self.remote_closed or self.closed:
                return _EOF
            waiter = self.reader = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self.reader = None
        raw = msgs.popleft()
        self.queued_bytes -= len(raw) + 5
        self.conn.consumed(self, len(raw) + 5)
        d = self.method.deserialize
        return raw if d is None else d(raw)

    async def requests(self) -> AsyncIterator[Any]:
        while True:
            msg = await self.read()
            if msg is _EOF:
                return
            yield msg

    def send_headers(self) -> None:
        if not self.headers_sent and not self.closed:
            self.conn.send_headers(self)

    async def write(self, message: Any) -> None:
        if self.closed:
            raise _CancelledError() if self.cancelled else RuntimeError("the call is over")
        s = self.method.serialize
        payload: bytes = message if s is None else s(message)
        conn = self.conn
        conn.send_message(self, payload)
        if self.pending or conn.write_paused:
            await conn.drain(self)

    # -- call runners (one task per call)
    async def run_unary_request(self, request: bytes) -> None:
        m = self.method
        ctx = self.context = ServerContext(self)
        try:
            req = request if m.deserialize is None else m.deserialize(request)
            if m.response_streaming:
                await self._stream_responses(m.fn(req, ctx))
                self.conn.finish(self, ctx._code, ctx._details, ctx)
                return
            resp = await m.fn(req, ctx)
        except _AbortError:
            self.conn.finish(self, ctx._code, ctx._details, ctx)
            return
        except _CancelledError:
            if self.closed:  # reset by the client, deadline, shutdown: nothing to answer
                return
            raise
        except Exception as e:
            self._failed(e)
            return
        if ctx._code is not _OK:
            self.conn.finish(self, ctx._code, ctx._details, ctx)
        elif resp is None:
            self.conn.finish(self, _SC.INTERNAL, "handler returned no response", ctx)
        else:
            s = m.serialize
            self.conn.send_unary_response(self, resp if s is None else s(resp), ctx)

    async def run_stream_request(self) -> None:
        m = self.method
        ctx = self.context = ServerContext(self)
        try:
            if m.response_streaming:
                await self._stream_responses(m.fn(self.requests(), ctx))
                self.conn.finish(self, ctx._code, ctx._details, ctx)
                return
            resp = await m.fn(self.requests(), ctx)
        except _AbortError:
            self.conn.finish(self, ctx._code, ctx._details, ctx)
            return
        except _CancelledError:
            if self.closed:
                return
            raise
        except Exception as e:
            self._failed(e)
            return
        if ctx._code is not _OK or resp is None:
            self.conn.finish(self, ctx._code, ctx._details, ctx)
        else:
            s = m.serialize
            self.conn.send_unary_response(self, resp if s is None else s(resp), ctx)

    async def _stream_responses(self, result: Any) -> None:
        if inspect.isasyncgen(result):
            async for resp in result:
                await self.write(resp)
        elif inspect.isawaitable(result):
            await result  # writes through context.write()
        elif result is not None:
            raise TypeError(f"streaming handler returned {type(result).__name__}")

    def _failed(self, e: Exception) -> None:
        log.error("gRPC handler for %s failed", self.path, exc_info=e)
        ctx = self.context
        self.conn.finish(self, _SC.UNKNOWN, f"Unexpected {type(e)}: {e}", ctx)
