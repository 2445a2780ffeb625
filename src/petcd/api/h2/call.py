"""One gRPC call on its HTTP/2 stream, the asyncio side: what the handler sees (read,
write, status), the task that runs it, its deadline timer and waiters. The stream's
HTTP/2 state is the sans-IO connection's (streams.H2Stream, `h2`)."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio

from petcd.api.h2.context import ServerContext
from petcd.api.h2.hpack_codec import Header
from petcd.api.h2.registry import CallHooks, Method
from petcd.api.h2.resumed import Resumed
from petcd.api.h2.status import metadata_block, status_block, trailers_only_block
from petcd.api.h2.streams import HALF_CLOSED_LOCAL, HALF_CLOSED_REMOTE, H2Stream
from petcd.pb.wire import LazyMessage

if TYPE_CHECKING:
    from petcd.api.h2.connection import H2Protocol
    from petcd.api.h2.machine import H2Connection

log = logging.getLogger("petcd.h2")

_AbortError = grpc.aio.AbortError
_EOF: Any = getattr(grpc.aio, "EOF")  # noqa: B009 - missing from the type stubs
_SC = grpc.StatusCode
_OK = _SC.OK
_CancelledError = asyncio.CancelledError


class Call:
    """One gRPC call (ServerContext's `_stream`)."""

    __slots__ = (
        "_done_callbacks",
        "cancelled",
        "conn",
        "context",
        "deadline",
        "drain_waiter",
        "h2",
        "machine",
        "method",
        "reader",
        "task",
    )

    def __init__(self, conn: H2Protocol, stream: H2Stream, method: Method) -> None:
        self.conn = conn
        self.machine: H2Connection = conn.h2
        self.h2 = stream
        self.method = method
        self.cancelled = False
        self.reader: asyncio.Future[None] | None = None
        self.drain_waiter: asyncio.Future[None] | None = None
        self.task: asyncio.Task[None] | Resumed | None = None
        self.deadline: float | None = None
        self.context: ServerContext | None = None
        self._done_callbacks: list[Callable[[], None]] | None = None

    # -- what ServerContext reads
    @property
    def headers(self) -> list[Header]:
        return self.h2.headers

    @property
    def path(self) -> str:
        return self.method.path

    @property
    def closed(self) -> bool:
        """The call is over: no more output from the handler."""
        return self.h2.finished

    def time_remaining(self) -> float | None:
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - asyncio.get_running_loop().time())

    def add_done_callback(self, fn: Callable[[], None]) -> None:
        if self.h2.finished:
            fn()
            return
        if self._done_callbacks is None:
            self._done_callbacks = []
        self._done_callbacks.append(fn)

    # -- the end (from the connection's stream_closed)
    def ended(self, cancelled: bool) -> None:
        if cancelled:
            self.cancelled = True
            task = self.task
            if task is not None and not task.done():
                task.cancel()
        _wake(self.reader)
        _wake(self.drain_waiter)
        callbacks, self._done_callbacks = self._done_callbacks, None
        for fn in callbacks or ():
            try:
                fn()
            except Exception:
                log.exception("gRPC done callback failed")

    # -- status
    def finish(self, code: grpc.StatusCode, message: str) -> None:
        """End the call with a status: trailers after any queued data, or Trailers-Only."""
        stream = self.h2
        if stream.finished:
            return
        ctx = self.context
        trailing = metadata_block(ctx._trailing) if ctx is not None and ctx._trailing else b""
        machine = self.machine
        machine.pings.data_sent = True
        if not stream.headers_sent:
            machine.trailers_only(stream, trailers_only_block(code, message, trailing))
        else:
            machine.end_stream(stream, status_block(code, message, trailing))

    def abort(self, code: grpc.StatusCode, message: str) -> None:
        """End the call from the transport side (limits, deadline): status, handler
        cancelled."""
        self.finish(code, message)
        self.cancelled = True
        task = self.task
        if task is not None and not task.done():
            task.cancel()

    def expire(self) -> None:
        """The deadline passed (the connection's deadline timer calls this)."""
        if not self.h2.finished:
            self.abort(_SC.DEADLINE_EXCEEDED, "Deadline Exceeded")

    def _respond(self, payload: bytes | bytearray) -> None:
        stream = self.h2
        if stream.state >= HALF_CLOSED_LOCAL:  # the call has ended (reset, deadline)
            return
        max_send = self.conn.max_send_message
        if len(payload) > max_send:
            self.finish(_SC.RESOURCE_EXHAUSTED,
                        f"grpc: trying to send message larger than max ({len(payload)} vs. "
                        f"{max_send})")
            return
        ctx = self.context
        machine = self.machine
        conn = self.conn
        # The connection's last open call: nothing to batch this answer with, so it is
        # written now, not behind what this loop iteration scheduled meanwhile (and
        # with no flush scheduled for it, if none was already).
        if len(machine.streams) == 1 and conn.hold_flush():
            try:
                if ((ctx is not None and (ctx._trailing or ctx.initial_metadata))
                        or not machine.send_unary(stream, payload)):
                    self._send(payload)
                    self.finish(_OK, "")
            finally:
                conn.flush()  # (always: it also lets go of the hold)
        elif ((ctx is not None and (ctx._trailing or ctx.initial_metadata))
                or not machine.send_unary(stream, payload)):
            self._send(payload)
            self.finish(_OK, "")
        elif not machine.streams:
            conn.flush()

    async def _respond_lazy(self, msg: LazyMessage) -> None:
        """A message made in pieces as the client takes them: the next piece is made
        once the last one is handed to the transport (flow-control windows open, the
        transport not backed up), so the call holds about one piece whatever the size.
        A piece that fails ends the call with its error (after part of the message)."""
        stream = self.h2
        if stream.state >= HALF_CLOSED_LOCAL:
            return
        size = msg.size
        max_send = self.conn.max_send_message
        if size > max_send:
            self.finish(_SC.RESOURCE_EXHAUSTED,
                        f"grpc: trying to send message larger than max ({size} vs. "
                        f"{max_send})")
            return
        self.send_headers()
        machine = self.machine
        machine.send_data(stream, b"\0" + size.to_bytes(4, "big"))
        while not stream.finished:
            try:
                chunk = msg.next_chunk()
            except Exception as e:
                code = getattr(e, "code", None)
                if isinstance(code, _SC):  # (an EtcdError: etcd's code and words)
                    self.finish(code, str(e))
                else:
                    self._failed(e)
                return
            if chunk is None:
                self.finish(_OK, "")
                return
            machine.send_data(stream, chunk)
            del chunk
            self.conn.flush()
            try:
                if stream.pending or machine.output_paused:
                    await self._drain()
                else:
                    await asyncio.sleep(0)  # (the other calls' turn between pieces)
            except _CancelledError:
                if stream.finished:  # reset by the client, deadline, shutdown
                    return
                raise

    def _send(self, payload: bytes | bytearray) -> None:
        stream = self.h2
        if not stream.headers_sent:
            self.send_headers()
        self.machine.send_message(stream, payload)

    # -- handler side
    def send_headers(self) -> None:
        stream = self.h2
        if not stream.headers_sent and not stream.finished:
            ctx = self.context
            md = ctx.initial_metadata if ctx is not None else ()
            self.machine.send_headers(stream, metadata_block(md) if md else b"")

    async def read(self) -> Any:
        stream = self.h2
        msgs = stream.messages
        if msgs is None:
            raise RuntimeError("read() on a call whose request is not a stream")
        while not msgs:
            if stream.state >= HALF_CLOSED_REMOTE:  # the request or the call ended
                return _EOF
            waiter = self.reader = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self.reader = None
        raw = msgs.popleft()
        stream.queued_bytes -= len(raw) + 5
        self.machine.consumed(stream, len(raw) + 5)
        d = self.method.deserialize
        return raw if d is None else d(raw)

    async def requests(self) -> AsyncIterator[Any]:
        while True:
            msg = await self.read()
            if msg is _EOF:
                return
            yield msg

    async def write(self, message: Any) -> None:
        stream = self.h2
        if stream.finished:
            raise _CancelledError() if self.cancelled else RuntimeError("the call is over")
        s = self.method.serialize
        data = message if s is None else s(message)
        self._send(data)
        self.conn.streamed(len(data))  # (may find the transport backed up: paused)
        if stream.pending or self.machine.output_paused:
            await self._drain()

    def offer(self, message: bytes, held: bool = False) -> bool:
        """Send one response of a response-streaming call now, from outside its task
        (the watch hub, at the apply of a write), when that keeps the order and bounds
        of write(): nothing of the stream waits for flow control, the transport is not
        backed up, the call goes on. False: the caller queues it for its handler.
        held: the caller calls flush() soon (no flush callback is scheduled for it)."""
        stream = self.h2
        machine = self.machine
        if (stream.pending or machine.output_paused or stream.state >= HALF_CLOSED_LOCAL
                or self.method.serialize is not None
                or len(message) > self.conn.max_send_message):
            return False
        if held:
            self.conn.hold_flush()
        if not machine.send_small(stream, message):
            self._send(message)
        return True

    def flush(self) -> None:
        """Write the connection's output now (after offer())."""
        self.conn.flush()

    async def _drain(self) -> None:
        """Wait until the client's windows took the queued output and the transport
        is not backed up (a slow reader holds its writer back)."""
        stream = self.h2
        machine = self.machine
        while (stream.pending or machine.output_paused) and not stream.finished:
            waiter = self.drain_waiter = asyncio.get_running_loop().create_future()
            if not stream.pending:
                self.conn.drain_waiting.add(self)
            try:
                await waiter
            finally:
                self.drain_waiter = None
                self.conn.drain_waiting.discard(self)
        if self.cancelled:
            raise _CancelledError()

    # -- call runners (one task per call, unless it starts inline)
    def start(self, request: bytes) -> None:
        """Run a unary call marked `starts_inline` up to its first real suspension right
        here, in the read callback that completed its request: a call that never waits
        (a lone voter's put, answered inside propose(); a serializable read) is answered
        with no task and no loop hop. One that waits goes on in a task from where it
        stopped, and is then cancelled (reset, deadline) as any other."""
        coro = self.run_unary_request(request)
        try:
            waiting = coro.send(None)
        except StopIteration:
            return
        except BaseException as e:
            self._escaped(e)
            return
        self.task = Resumed(self, coro, waiting)

    def _escaped(self, e: BaseException) -> None:
        """What run_unary_request let out (it answers all else): a task would have
        kept it; here the read callback or the loop must go on."""
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise e
        if self.h2.finished:
            return
        if isinstance(e, _CancelledError):  # (something it awaited was cancelled)
            self.finish(_SC.CANCELLED, "")
        else:
            log.error("gRPC handler for %s failed", self.path, exc_info=e)
            self.finish(_SC.UNKNOWN, f"Unexpected {type(e)}: {e}")

    async def run_unary_request(self, request: bytes) -> None:
        m = self.method
        ctx = self.context = ServerContext(self)
        hooks: CallHooks | None = None
        t0 = 0.0
        try:
            try:
                req = request if m.deserialize is None else m.deserialize(request)
                if m.response_streaming:
                    await self._stream_responses(m.fn(req, ctx))
                    self.finish(ctx._code, ctx._details)
                    return
                hooks = m.hooks
                if hooks is None:
                    resp = await m.fn(req, ctx)
                else:  # (the handler's wrapper, per-call metrics, run inline)
                    t0 = hooks.begin(req, ctx)
                    try:
                        resp = await hooks.fn(req, ctx)
                    except BaseException as e:
                        hooks.end(ctx, t0, None, e)
                        raise
            except _AbortError:
                self.finish(ctx._code, ctx._details)
                return
            except _CancelledError:
                if self.h2.finished:  # reset by the client, deadline, shutdown: nothing to answer
                    return
                raise
            except Exception as e:
                self._failed(e)
                return
            try:
                if ctx._code is not _OK:
                    self.finish(ctx._code, ctx._details)
                elif resp is None:
                    self.finish(_SC.INTERNAL, "handler returned no response")
                else:
                    s = m.serialize
                    out = resp if s is None else s(resp)
                    if isinstance(out, LazyMessage):
                        if hooks is not None:  # (counted before its pieces are made)
                            end = hooks.end
                            hooks = None
                            end(ctx, t0, resp, None)
                        await self._respond_lazy(out)
                    else:
                        self._respond(out)
            finally:
                # (counted once the answer is written: not on a call's way to its client)
                if hooks is not None:
                    hooks.end(ctx, t0, resp, None)
        finally:
            # The context points back at the call: let go once the call is answered,
            # the two are freed by reference counting, not left as a cycle for the
            # garbage collector (a few such cycles per call, under load).
            self.context = None

    async def run_stream_request(self) -> None:
        m = self.method
        ctx = self.context = ServerContext(self)
        try:
            if m.response_streaming:
                await self._stream_responses(m.fn(self.requests(), ctx))
                self.finish(ctx._code, ctx._details)
                return
            resp = await m.fn(self.requests(), ctx)
        except _AbortError:
            self.finish(ctx._code, ctx._details)
            return
        except _CancelledError:
            if self.h2.finished:
                return
            raise
        except Exception as e:
            self._failed(e)
            return
        if ctx._code is not _OK or resp is None:
            self.finish(ctx._code, ctx._details)
        else:
            s = m.serialize
            self._respond(resp if s is None else s(resp))

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
        self.finish(_SC.UNKNOWN, f"Unexpected {type(e)}: {e}")


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)
