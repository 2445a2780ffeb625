"""One client connection as an asyncio Protocol: the thin IO layer over the sans-IO
HTTP/2 connection (machine.H2Connection). It owns the transport, the timers
(handshake, keepalive pings, call deadlines), the tasks that run calls, and the
hand-off of HTTP/1.1 clients, which are given to the HTTP protocol as soon as their
first bytes differ from the HTTP/2 preface (no forwarding hop).

IO rules that bound a hostile client (docs/ARCHITECTURE.md has the list): reading
stops while the transport's write buffer is above its high-water mark (so replies to
PING/SETTINGS cannot pile up) and while frames over one turn's budget are left; output
is written once per event loop iteration, all connections' output by one callback
(a task answering the connection's last open call writes at once); blocked streams are
pumped in batches, one batch per iteration.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, cast

import grpc

from petcd.api.h2 import frames as F
from petcd.api.h2.call import Call
from petcd.api.h2.machine import H2Connection
from petcd.api.h2.registry import Method
from petcd.api.h2.request_head import parse_timeout
from petcd.api.h2.streams import HALF_CLOSED_LOCAL, H2Stream
from petcd.tls.gate import auth_properties

if TYPE_CHECKING:
    from petcd.api.h2.server import GrpcServer

__all__ = ["H2Protocol", "parse_timeout"]

log = logging.getLogger("petcd.h2")

_KEEPALIVE_PING = b"petcd-ka"
# Bytes streaming handlers of a connection write before they are handed to the transport
# at once (not at the end of the loop iteration): a handler that writes without ever
# yielding (a snapshot's chunks) is then paused by a backed-up transport, as grpc-go's
# per-stream write quota pauses it, whatever windows the client grants. (Large enough
# that a loop iteration's watch responses are still written together.)
WRITE_QUOTA = 1 << 20


class H2Protocol(asyncio.Protocol):
    """A connection accepted by the server's listener (and the machine's Events)."""

    def __init__(self, server: GrpcServer) -> None:
        self._server = server
        cfg = self._cfg = server.config
        self.max_send_message = cfg.max_send_message
        self._loop = loop = asyncio.get_running_loop()
        self.h2 = H2Connection(cfg, server.registry, self, loop.time)
        self._transport: asyncio.Transport | None = None
        self._admitted = False
        self._sniffing = True
        self._sniffed = b""
        self._flush_scheduled = False
        self._streamed = 0  # bytes streaming handlers wrote since the last flush
        self._turn_paused = False  # frames left over for the next event loop iteration
        self.drain_waiting: set[Call] = set()  # calls waiting for resume_writing
        self._starting: list[tuple[Call, bytes]] = []  # inline calls to start (Call.start)
        self._closed = False
        self._peer: str | None = None
        self._auth: dict[str, list[bytes]] | None = None
        self._keepalive: asyncio.TimerHandle | None = None
        self._handshake: asyncio.TimerHandle | None = None
        # One timer for the call deadlines of the connection, at the earliest one (a
        # timer per call cost ~4 us to arm and cancel; calls mostly end long before).
        self._deadlines: asyncio.TimerHandle | None = None
        self._deadlines_at = 0.0

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        if not self._server.admit():
            log.warning("refusing a client connection from %s: %d connections open",
                        self.peer(), self._server.accepted)
            self._closed = True
            self._transport.abort()
            return
        self._admitted = True
        self.h2.peer = self.peer()
        self._handshake = self._loop.call_later(self._cfg.handshake_timeout,
                                                self._handshake_timeout)

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        if self._sniffing:
            data = self._sniff(data)
            if not data:
                return
        if self.h2.receive_data(data) and not self._turn_paused:
            # Frames left after this turn's budget: let other connections run, read
            # nothing more meanwhile, go on in the next event loop iteration.
            self._turn_paused = True
            self._set_reading()
            self._loop.call_soon(self._next_turn)
        if self._starting:
            self._start_calls()
        if self.h2.out:
            self._flush()

    def _next_turn(self) -> None:
        self._turn_paused = False
        if not self._closed and self.h2.receive_data(b""):
            self._turn_paused = True
            self._loop.call_soon(self._next_turn)
        else:
            self._set_reading()
        if self._starting:
            self._start_calls()
        if self.h2.out:
            self._flush()

    def _start_calls(self) -> None:
        """Start the inline calls whose requests this turn's frames completed, once all
        of them are parsed (as tasks would start): requests read together are proposed
        together, and a call reset in the same read never runs (Rapid Reset's budget
        sees it)."""
        starting, self._starting = self._starting, []
        for call, message in starting:
            if not call.cancelled and call.h2.state < HALF_CLOSED_LOCAL:
                call.start(message)

    def _set_reading(self) -> None:
        """Read while neither the transport's output is backed up nor a turn pending."""
        t = self._transport
        if t is None or t.is_closing():
            return
        if self.h2.output_paused or self._turn_paused:
            t.pause_reading()
        else:
            t.resume_reading()

    def eof_received(self) -> bool | None:
        return None  # close our side too: a gRPC client half-closing is gone

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self.h2.closed = True
        self._transport = None
        for timer in (self._keepalive, self._handshake, self._deadlines):
            if timer is not None:
                timer.cancel()
        self.h2.cancel_all()
        self.drain_waiting.clear()
        if self._admitted:
            self._admitted = False
            self._server.release()
        self._server.connection_closed(self)

    def pause_writing(self) -> None:
        # The client does not read what we send: stop reading what it sends (so PING
        # and SETTINGS cannot make us queue replies without bound), as grpc-go does.
        self.h2.output_paused = True
        self._set_reading()

    def resume_writing(self) -> None:
        self.h2.output_paused = False
        self._set_reading()
        waiting, self.drain_waiting = self.drain_waiting, set()
        for call in waiting:
            if not call.h2.pending:
                _wake(call.drain_waiter)
        self.h2.schedule_pump()

    @property
    def write_paused(self) -> bool:
        return self.h2.output_paused

    # -- connection start: HTTP/2 preface or HTTP/1.1
    def _sniff(self, data: bytes) -> bytes:
        if self._sniffed:
            data = self._sniffed + data
        n = min(len(data), len(F.PREFACE))
        if data[:n] != F.PREFACE[:n]:
            self._hand_to_http(data)
            return b""
        if n < len(F.PREFACE):
            self._sniffed = data
            return b""
        self._sniffing = False
        self._sniffed = b""
        self._server.connection_opened(self)
        self.h2.initiate()
        if self._server.draining:
            self.h2.goaway()
        if self._cfg.keepalive_interval > 0:
            self._keepalive = self._loop.call_later(self._cfg.keepalive_interval,
                                                    self._send_ping)
        return data[len(F.PREFACE):]

    def _handshake_timeout(self) -> None:
        self._handshake = None
        log.info("client %s did not complete a handshake within %.1fs: closing",
                 self.peer(), self._cfg.handshake_timeout)
        if self._sniffing:
            self._closed = True
            if self._transport is not None:
                self._transport.abort()
        else:
            self.h2.connection_error(F.SETTINGS_TIMEOUT, "no SETTINGS from the client")

    def _hand_to_http(self, data: bytes) -> None:
        transport = self._transport
        assert transport is not None
        self._sniffing = False
        self._closed = True  # this protocol is done with the transport
        if self._handshake is not None:
            self._handshake.cancel()  # the HTTP/1.1 side has its own timeouts
            self._handshake = None
        factory = self._server.http_factory
        if factory is None:
            transport.close()
            return
        http = factory()
        if self._admitted and hasattr(http, "on_lost"):
            self._admitted = False  # HTTP/1.1 gives the connection back when it ends
            cast(Any, http).on_lost = self._server.release
        transport.set_protocol(http)
        http.connection_made(transport)
        http.data_received(data)

    # -- keepalive pings
    def _send_ping(self) -> None:
        if self._closed:
            return
        self.h2.write(F.frame(F.PING, 0, 0, _KEEPALIVE_PING))
        self._keepalive = self._loop.call_later(self._cfg.keepalive_timeout,
                                                self._ping_timeout)

    def _ping_timeout(self) -> None:
        self._keepalive = None
        log.info("HTTP/2 client %s did not answer a keepalive ping: closing", self.peer())
        self.h2.connection_error(F.NO_ERROR, "keepalive ping timeout")

    # -- the machine's events
    def call_started(self, stream: H2Stream, method: Method, timeout: float | None) -> None:
        call = stream.call = Call(self, stream, method)
        if timeout is not None:
            deadline = call.deadline = self._loop.time() + timeout
            if self._deadlines is None or deadline < self._deadlines_at:
                self._arm_deadlines(deadline)
        if method.request_streaming:
            call.task = self._loop.create_task(call.run_stream_request())

    def request_complete(self, stream: H2Stream, message: bytes) -> None:
        call: Call = stream.call
        if call.method.inline:
            self._starting.append((call, message))  # (started after this read's frames)
        else:
            call.task = self._loop.create_task(call.run_unary_request(message))

    def messages_ready(self, stream: H2Stream) -> None:
        _wake(stream.call.reader)

    def call_failed(self, stream: H2Stream, code: grpc.StatusCode, message: str) -> None:
        stream.call.abort(code, message)

    def stream_closed(self, stream: H2Stream, cancelled: bool) -> None:
        call: Call | None = stream.call
        # (a unary call that ended normally has nothing left to release)
        if call is not None and (cancelled or call.reader is not None
                                 or call.drain_waiter is not None
                                 or call._done_callbacks is not None):
            call.ended(cancelled)
        # The stream is forgotten: no event names it again. Without this link the call
        # and its stream are freed by reference counting when the call's task ends,
        # not left as a cycle for the garbage collector (a few per call under load).
        stream.call = None

    def _arm_deadlines(self, when: float) -> None:
        if self._deadlines is not None:
            self._deadlines.cancel()
        self._deadlines_at = when
        self._deadlines = self._loop.call_at(when, self._expire_calls)

    def _expire_calls(self) -> None:
        """The earliest deadline armed is due: end the open calls past theirs, and arm
        for the next one (calls that ended meanwhile are simply not found)."""
        self._deadlines = None
        now = self._loop.time()
        nearest = None
        for stream in list(self.h2.streams.values()):
            call: Call | None = stream.call
            if call is None or call.deadline is None:
                continue
            if call.deadline <= now:
                call.expire()
            elif nearest is None or call.deadline < nearest:
                nearest = call.deadline
        if nearest is not None and not self._closed:
            self._arm_deadlines(nearest)

    def writable(self, stream: H2Stream) -> None:
        _wake(stream.call.drain_waiter)

    def handshake_done(self) -> None:
        if self._handshake is not None:
            self._handshake.cancel()
            self._handshake = None

    def ping_acked(self, payload: bytes) -> None:
        if payload == _KEEPALIVE_PING and self._keepalive is not None:
            self._keepalive.cancel()  # the client is alive: next ping after the interval
            self._keepalive = self._loop.call_later(self._cfg.keepalive_interval,
                                                    self._send_ping)

    def output_ready(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            # One callback per loop iteration writes every connection's output (the
            # server's list), not one callback per connection.
            flushing = self._server.flushing
            if not flushing:
                self._loop.call_soon(self._server.flush_all)
            flushing.append(self)

    def pump_wanted(self) -> None:
        self._loop.call_soon(self._pump_some)

    def _pump_some(self) -> None:
        self.h2.pump_some()
        if self.h2.out:
            self._flush()

    def connection_ended(self) -> None:
        self._closed = True  # data_received ignores what is still in flight
        self._flush()
        if self._transport is not None:
            self._transport.close()  # writes what is buffered, then closes

    # -- output
    def flush(self) -> None:
        """Write the output now (calls answered from a task when nothing else is open)."""
        self._flush()

    def hold_flush(self) -> bool:
        """Keep output from scheduling a flush: True if none was scheduled, and the
        caller then calls flush() itself (the answer of the last open call, written at
        once: no callback per call that would find nothing left to write)."""
        if self._flush_scheduled:
            return False
        self._flush_scheduled = True
        return True

    def streamed(self, n: int) -> None:
        """A streaming handler wrote `n` bytes (Call.write): past WRITE_QUOTA since the
        last flush, they go to the transport now, which says whether it is backed up."""
        self._streamed += n
        if self._streamed > WRITE_QUOTA:
            self._flush()

    def flush_scheduled(self) -> None:
        """The server's flush_all: write unless flush() already did."""
        if self._flush_scheduled:
            self._flush()

    def _flush(self) -> None:
        self._flush_scheduled = False
        self._streamed = 0
        data = self.h2.data_to_send()
        t = self._transport
        if data and t is not None:
            t.write(data)

    # -- connection level
    def peer(self) -> str:
        if self._peer is None:
            addr = self._transport.get_extra_info("peername") if self._transport else None
            if isinstance(addr, tuple):
                host, port = addr[0], addr[1]
                self._peer = f"ipv6:[{host}]:{port}" if ":" in host else f"ipv4:{host}:{port}"
            else:
                self._peer = f"unix:{addr or ''}"
        return self._peer

    def auth_context(self) -> dict[str, list[bytes]]:
        """grpc's auth context (TLS, the client certificate's CN and SANs), made once."""
        if self._auth is None:
            self._auth = auth_properties(self._transport)
        return self._auth

    def goaway(self) -> None:
        """Graceful shutdown: no new streams; close once the open ones are done."""
        if not self._closed:
            self.h2.goaway()

    def close(self) -> None:
        """Drop the connection now (end of a shutdown's grace period)."""
        self.h2.cancel_all()
        self.connection_ended()


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)
