"""Socket sends of plaintext TCP connections on a writer thread, under concurrency.

On loopback the kernel does the receiver's work inside the sender's send(), so a turn of
the event loop that answers many connections spends a good part of its time in send.
While another connection has calls open (the server is serving several clients), the
writes of a loop iteration after its first INLINE_WRITES are collected and handed to
the writer thread in one batch at the end of the iteration (one wake per batch); Python's
send releases the GIL during the syscall, so that kernel work overlaps the loop's Python
work on another core. A lone client's writes are always made inline, with no extra
bookkeeping (no thread hop on its latency).

Rules that keep it correct (the loop owns all the bookkeeping; the thread only sends):
- Order per connection: while a connection has bytes with the thread, its later bytes
  go to the thread too; while the transport buffers bytes, they go to the transport.
- A partial send (EAGAIN) hands the rest back to the transport, on the loop, in order;
  the thread then hands back the connection's later bytes whole until the loop sends
  it fresh bytes with nothing in flight.
- The thread sends on a dup of the socket, so a connection closed meanwhile can never
  have its descriptor reused under the thread; the dup is closed once the thread is done
  with the connection. A graceful close waits for the bytes with the thread.
- Bound: bytes with the thread count like the transport's buffer: above its high-water
  mark the connection is paused (stops reading, calls wait) until the thread is done.
- TLS and unix-socket connections always use the transport.

PETCD_H2_SEND_THREAD=0 turns it off (for A/B runs).
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from collections.abc import Callable
from queue import SimpleQueue

ENABLED = os.environ.get("PETCD_H2_SEND_THREAD", "1") != "0"
# Writes of one busy loop iteration made inline before the thread takes the rest.
INLINE_WRITES = 1

_Item = tuple["Outlet", bytes | None, bool]  # (connection, bytes or None: close, fresh)
_Result = tuple["Outlet", int, bytes | None]  # (connection, bytes taken, rest to write)


class Outlet:
    """The write side of one plaintext TCP connection (loop side, but `fd` and `sock`)."""

    __slots__ = ("_fd", "_high", "_hub", "_on_pause", "close_wanted", "inflight",
                 "inflight_bytes", "paused", "sock", "transport")

    def __init__(self, hub: SendThread, transport: asyncio.Transport, fd: int,
                 on_pause: Callable[[bool], None]) -> None:
        self._hub = hub
        self.transport: asyncio.Transport | None = transport
        self._fd = fd
        self.sock: socket.socket | None = None  # the dup the thread sends on (made lazily)
        self._on_pause = on_pause
        self._high = transport.get_write_buffer_limits()[1]
        self.inflight = 0  # writes with the thread
        self.inflight_bytes = 0
        self.paused = False
        self.close_wanted = False

    def write(self, data: bytes, busy: bool) -> None:
        """Write `data` (busy: this connection has calls open)."""
        t = self.transport
        assert t is not None
        hub = self._hub
        if self.inflight:
            self._enqueue(data, False)
        elif hub.busy <= busy or t.get_write_buffer_size():
            t.write(data)  # (no other connection has calls open: a lone client)
        elif hub.turn_writes < hub.inline_writes or hub.stopped:
            hub.wrote_inline()
            t.write(data)
        else:
            if self.sock is None:
                self.sock = socket.socket(fileno=os.dup(self._fd))
            self._enqueue(data, True)

    def _enqueue(self, data: bytes, fresh: bool) -> None:
        self.inflight += 1
        self.inflight_bytes += len(data)
        self._hub.enqueue((self, data, fresh))
        if self.inflight_bytes > self._high and not self.paused:
            self.paused = True
            self._on_pause(True)

    def completed(self, n: int, rest: bytes | None) -> None:
        """The thread is done with one write (on the loop, in order)."""
        self.inflight -= 1
        self.inflight_bytes -= n
        t = self.transport
        if t is None:
            return
        if rest is not None:
            t.write(rest)
        if not self.inflight:
            if self.close_wanted:
                t.close()
            elif self.paused:
                self.paused = False
                self._on_pause(False)

    def close(self) -> None:
        """Graceful close: once the bytes with the thread are out."""
        t = self.transport
        if t is None:
            return
        if self.inflight:
            self.close_wanted = True
        else:
            t.close()

    def release(self) -> None:
        """The connection is gone: close the dup once the thread is done with it."""
        self.transport = None
        if self.sock is not None:
            if self._hub.stopped:
                self.sock.close()
            else:  # (through the thread: it may hold the connection as stalled)
                self._hub.enqueue((self, None, False))


class SendThread:
    """The writer thread of a server's connections (started at its first batch)."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: SimpleQueue[list[_Item] | None] = SimpleQueue()
        self._batch: list[_Item] = []
        self._armed = False
        self._thread: threading.Thread | None = None
        self.turn_writes = 0
        self.inline_writes = INLINE_WRITES
        self.batches = 0  # handed to the thread (for tests and profiles)
        self.handed_back = 0  # partial sends whose rest went back to the transport
        self.busy = 0  # connections with calls open (kept by the connections)
        self.stopped = False

    def outlet(self, transport: asyncio.Transport,
               on_pause: Callable[[bool], None]) -> Outlet | None:
        """The connection's Outlet, or None when it must use the transport (TLS, unix)."""
        if self.stopped or transport.get_extra_info("ssl_object") is not None:
            return None
        sock = transport.get_extra_info("socket")
        if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
            return None
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return Outlet(self, transport, sock.fileno(), on_pause)

    def wrote_inline(self) -> None:
        self.turn_writes += 1
        if not self._armed:
            self._arm()

    def enqueue(self, item: _Item) -> None:
        self._batch.append(item)
        if not self._armed:
            self._arm()

    def _arm(self) -> None:
        self._armed = True
        assert self._loop is not None
        self._loop.call_soon(self._end_turn)

    def _end_turn(self) -> None:
        """The end of a loop iteration that wrote: the batch goes to the thread."""
        self._armed = False
        self.turn_writes = 0
        if self._batch:
            batch, self._batch = self._batch, []
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="petcd-h2-send",
                                                daemon=True)
                self._thread.start()
            self._queue.put(batch)
            self.batches += 1

    def stop(self) -> None:
        """Hand over what is collected, let the thread finish it and end."""
        self._end_turn()
        self.stopped = True
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(5.0)
            self._thread = None

    # -- the thread
    def _run(self) -> None:
        loop = self._loop
        assert loop is not None
        stalled: set[Outlet] = set()  # connections whose rest went back to the loop
        queue = self._queue
        while (batch := queue.get()) is not None:
            results: list[_Result] = []
            for outlet, data, fresh in batch:
                sock = outlet.sock
                assert sock is not None
                if data is None:  # the connection is gone and its writes done
                    stalled.discard(outlet)
                    sock.close()
                    continue
                if fresh:
                    stalled.discard(outlet)
                elif outlet in stalled:
                    results.append((outlet, len(data), data))
                    continue
                try:
                    n = sock.send(data)
                except BlockingIOError:
                    n = 0
                except OSError:  # reset: the transport reports the loss itself
                    n = len(data)
                if n < len(data):
                    stalled.add(outlet)
                    self.handed_back += 1
                    results.append((outlet, len(data), data[n:]))
                else:
                    results.append((outlet, n, None))
            if results:
                try:
                    loop.call_soon_threadsafe(_completed, results)
                except RuntimeError:  # the loop is closed: nobody is left to write to
                    return


def _completed(results: list[_Result]) -> None:
    for outlet, n, rest in results:
        outlet.completed(n, rest)
