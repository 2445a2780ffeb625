"""Accepted peer connections: handshake, message frames, snapshot streams.

One BufferedProtocol per accepted connection. The kernel reads straight into our buffer; every
complete frame becomes one ``bytes`` payload (the only copy), and all frames that one read completed
are handed over in a single call. Snapshot data is passed on as it arrives, never gathered whole.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Protocol as TypingProtocol
from typing import cast

from ._snapchunks import SnapshotChunks, SnapshotError
from .wire import (
    FRAME_HEADER,
    HELLO,
    SNAP_END,
    SNAP_FRAME_HEADER,
    Hello,
    Kind,
    ProtocolError,
    Reply,
    SnapFrame,
    Status,
)

log = logging.getLogger("petcd.transport")
_unpack_frame_header = FRAME_HEADER.unpack_from

INITIAL_BUFFER = 256 * 1024
SMALL_FRAME = 4096
# Budgets for anonymous connections (anyone can dial the peer URL): before a valid
# hello, and for REQUEST connections (which a member that does not know the cluster yet
# may open) until their request has arrived. Each starts with a small buffer that grows
# only as bytes arrive, must be done within hello_timeout, and at most MAX_UNADMITTED
# exist (the oldest is dropped for a new one, so a flood of idle dialers cannot keep a
# restarting member out); a request is at most MAX_REQUEST bytes.
HELLO_BUFFER = 4096
MAX_UNADMITTED = 32
MAX_REQUEST = 4 * 1024 * 1024

_HELLO = 0
_MESSAGES = 1
_SNAP_HEADER = 2
_SNAP_META = 3
_SNAP_DATA = 4
_SNAP_END = 5
_SNAP_DONE = 6
_CLOSED = 7
_REQ_HEADER = 8
_REQ_BODY = 9
_REQ_DONE = 10


def _frames_from_bytes(data: bytes) -> tuple[list[bytes], int, int]:
    """The payloads of the complete frames at the start of data, the bytes they used, and the
    size of the incomplete frame after them (4 while even its header is incomplete)."""
    unpack = FRAME_HEADER.unpack_from
    out: list[bytes] = []
    append = out.append
    pos, end = 0, len(data)
    while end - pos >= 4:
        (n,) = unpack(data, pos)
        stop = pos + 4 + n
        if stop > end:
            return out, pos, 4 + n
        append(data[pos + 4 : stop])
        pos = stop
    return out, pos, 4


def _frames_from_view(
    buf: bytearray, view: memoryview, pos: int, end: int
) -> tuple[list[bytes], int, int]:
    """Like _frames_from_bytes for buf[pos:end], copying each payload out exactly once."""
    unpack = FRAME_HEADER.unpack_from
    out: list[bytes] = []
    append = out.append
    start = pos
    while end - pos >= 4:
        (n,) = unpack(buf, pos)
        stop = pos + 4 + n
        if stop > end:
            return out, pos - start, 4 + n
        append(bytes(view[pos + 4 : stop]))
        pos = stop
    return out, pos - start, 4


class InboundHost(TypingProtocol):
    """What an accepted connection needs from the transport that owns it."""

    def admit(self, hello: Hello, conn: InboundConnection) -> Reply: ...

    def deliver(self, payloads: list[bytes]) -> None: ...

    def snapshot_started(
        self, conn: InboundConnection, from_id: int, metadata: bytes, chunks: SnapshotChunks
    ) -> None: ...

    def request_received(self, conn: InboundConnection, from_id: int, payload: bytes) -> None: ...

    def inbound_closed(self, conn: InboundConnection) -> None: ...

    @property
    def received_bytes(self) -> dict[int, int]: ...


class InboundConnection(asyncio.BufferedProtocol):
    def __init__(
        self,
        host: InboundHost,
        *,
        max_frame: int,
        hello_timeout: float,
        snapshot_buffer: int,
        snapshot_timeout: float,
        unadmitted: dict[InboundConnection, None] | None = None,
    ) -> None:
        self._host = host
        self._unadmitted = unadmitted
        self._max_frame = max_frame
        self._hello_timeout = hello_timeout
        self._snapshot_buffer = snapshot_buffer
        self._snapshot_timeout = snapshot_timeout
        self._buf = bytearray(HELLO_BUFFER)
        self._view = memoryview(self._buf)
        self._start = 0  # first byte not yet consumed
        self._end = 0  # end of received data
        self._need = HELLO.size  # bytes the current unit needs, counted from _start
        self._state = _HELLO
        self._timer: asyncio.TimerHandle | None = None
        self.transport: asyncio.Transport | None = None
        self.peer_id = 0
        self.kind = 0
        # snapshot receiving
        self._remaining = 0
        self._received = 0
        self._chunks: SnapshotChunks | None = None

    # --- asyncio callbacks -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's classes do not subclass it
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        self._timer = asyncio.get_running_loop().call_later(self._hello_timeout, self._no_hello)
        waiting = self._unadmitted
        if waiting is not None:
            if len(waiting) >= MAX_UNADMITTED:
                oldest = next(iter(waiting))
                del waiting[oldest]
                log.warning("too many peer connections without a handshake: dropping one")
                oldest.abort()
            waiting[self] = None

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._view[self._end :]

    def buffer_updated(self, nbytes: int) -> None:
        end = self._end = self._end + nbytes
        counts = self._host.received_bytes
        counts[self.peer_id] = counts.get(self.peer_id, 0) + nbytes
        if self._state == _MESSAGES:
            start = self._start
            if end - start > FRAME_HEADER.size and start + FRAME_HEADER.size + \
                    _unpack_frame_header(self._buf, start)[0] == end:
                # Exactly one whole frame (what a lone write's messages arrive as): no
                # frame scan, one copy, and the buffer is empty again.
                payload = bytes(self._view[start + FRAME_HEADER.size : end])
                self._start = self._end = 0
                self._need = FRAME_HEADER.size
                if len(self._buf) > INITIAL_BUFFER:
                    self._resize(INITIAL_BUFFER)  # give back what one big frame needed
                self._host.deliver([payload])
                return
        try:
            self._process()
        except ProtocolError as exc:
            log.warning("closing peer connection from %x: %s", self.peer_id, exc)
            self.abort()
            return
        self._make_room()

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self._state = _CLOSED
        if self._unadmitted is not None:
            self._unadmitted.pop(self, None)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._chunks is not None:
            self._chunks.fail(SnapshotError(f"snapshot stream from {self.peer_id:x} broken"))
        self._host.inbound_closed(self)

    # --- helpers -------------------------------------------------------------------------

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def send_snapshot_result(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)
            self.transport.close()

    def send_answer(self, payload: bytes) -> None:
        """The one answer frame of a REQUEST connection; then hang up."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(FRAME_HEADER.pack(len(payload)) + payload)
            self.transport.close()

    def _no_hello(self) -> None:
        self._timer = None
        if self._state in (_HELLO, _REQ_HEADER, _REQ_BODY):
            log.warning(
                "closing peer connection: no handshake or request within %.1fs", self._hello_timeout
            )
            self.abort()

    def _make_room(self) -> None:
        """Keep space to read into, and room for the whole unit being assembled."""
        start, end, size = self._start, self._end, len(self._buf)
        if start == end:
            self._start = self._end = 0
            if size > INITIAL_BUFFER and self._need <= INITIAL_BUFFER:
                self._resize(INITIAL_BUFFER)  # give back what one big frame needed
            return
        need = self._need
        if start + need <= size and end < size:
            return
        if need > size:
            if self._state == _REQ_BODY:  # anonymous: memory only for bytes that came
                self._resize(min(need, 2 * size))
            else:
                self._resize(max(need, min(2 * size, self._max_frame + FRAME_HEADER.size)))
            return
        pending = end - start
        self._view[:pending] = self._view[start:end]  # overlapping move is fine (memmove)
        self._start, self._end = 0, pending

    def _resize(self, size: int) -> None:
        pending = self._end - self._start
        buf = bytearray(size)
        buf[:pending] = self._view[self._start : self._end]
        self._view.release()
        self._buf, self._view = buf, memoryview(buf)
        self._start, self._end = 0, pending

    # --- parsing -----------------------------------------------------------------------------

    def _process(self) -> None:
        while True:
            state = self._state
            if state == _MESSAGES:
                self._process_messages()
                return
            if self._end - self._start < self._need and state != _SNAP_DATA:
                return
            if state == _HELLO:
                self._process_hello()
            elif state == _SNAP_HEADER:
                self._process_snap_header()
            elif state == _SNAP_DATA:
                if not self._process_snap_data():
                    return
            elif state == _SNAP_META:
                self._process_snap_meta()
            elif state == _SNAP_END:
                self._process_snap_end()
            elif state == _SNAP_DONE:
                if self._end > self._start:
                    raise ProtocolError("unexpected data after the end of a snapshot")
                return
            elif state == _REQ_HEADER:
                (n,) = FRAME_HEADER.unpack_from(self._buf, self._start)
                limit = min(self._max_frame, MAX_REQUEST)
                if n > limit:
                    raise ProtocolError(f"request of {n} bytes exceeds the limit {limit}")
                self._start += FRAME_HEADER.size
                self._state, self._need = _REQ_BODY, n
            elif state == _REQ_BODY:
                start = self._start
                body = bytes(self._view[start : start + self._need])
                self._start = start + self._need
                self._state, self._need = _REQ_DONE, 0
                if self._timer is not None:
                    self._timer.cancel()
                    self._timer = None
                if self._unadmitted is not None:
                    self._unadmitted.pop(self, None)
                self._host.request_received(self, self.peer_id, body)
            elif state == _REQ_DONE:
                if self._end > self._start:
                    raise ProtocolError("unexpected data after a request")
                return
            else:  # refused or closing: whatever else arrives is ignored
                self._start = self._end
                return

    def _process_messages(self) -> None:
        start, end = self._start, self._end
        if end - start >= 4 and FRAME_HEADER.unpack_from(self._buf, start)[0] < SMALL_FRAME:
            # Small frames: one copy of the region into bytes, then a bytes slice per frame,
            # costs CPython less than a memoryview slice plus bytes() per frame.
            payloads, used, need = _frames_from_bytes(bytes(self._view[start:end]))
        else:
            payloads, used, need = _frames_from_view(self._buf, self._view, start, end)
        self._start = start + used
        self._need = need
        if payloads:
            self._host.deliver(payloads)
        if need - FRAME_HEADER.size > self._max_frame:
            # checked only for the frame we would have to buffer: complete ones cost nothing more
            raise ProtocolError(
                f"frame of {need - FRAME_HEADER.size} bytes exceeds the limit {self._max_frame}"
            )

    def _process_hello(self) -> None:
        start = self._start
        hello = Hello.decode(self._view[start : start + HELLO.size])
        self._start = start + HELLO.size
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._unadmitted is not None and hello.kind != Kind.REQUEST:
            self._unadmitted.pop(self, None)
        self.peer_id = hello.from_id
        self.kind = hello.kind
        reply = self._host.admit(hello, self)
        assert self.transport is not None
        self.transport.write(reply.encode())
        if reply.status != Status.OK:
            self._state = _CLOSED
            self._start = self._end  # ignore whatever else the peer sent
            self.transport.close()
        elif hello.kind == Kind.MESSAGES:
            self._resize(INITIAL_BUFFER)  # a member: room for many messages per read
            self._state = _MESSAGES
            self._need = FRAME_HEADER.size
        elif hello.kind == Kind.REQUEST:
            self._state = _REQ_HEADER
            self._need = FRAME_HEADER.size
            self._timer = asyncio.get_running_loop().call_later(self._hello_timeout, self._no_hello)
        else:
            self._resize(INITIAL_BUFFER)
            self._state = _SNAP_HEADER
            self._need = SNAP_FRAME_HEADER.size

    def _process_snap_header(self) -> None:
        length, ftype = SNAP_FRAME_HEADER.unpack_from(self._buf, self._start)
        self._start += SNAP_FRAME_HEADER.size
        body = length - 1
        if body < 0:
            raise ProtocolError("empty snapshot frame")
        first = self._chunks is None
        if ftype == SnapFrame.META and first:
            if body > self._max_frame:
                raise ProtocolError(f"snapshot metadata of {body} bytes exceeds the limit")
            self._state, self._need = _SNAP_META, body
        elif ftype == SnapFrame.DATA and not first:
            self._state, self._remaining, self._need = _SNAP_DATA, body, 0
        elif ftype == SnapFrame.END and not first and body == SNAP_END.size:
            self._state, self._need = _SNAP_END, body
        else:
            raise ProtocolError(f"unexpected snapshot frame type {ftype} (length {length})")

    def _process_snap_meta(self) -> None:
        start = self._start
        metadata = bytes(self._view[start : start + self._need])
        self._start = start + self._need
        assert self.transport is not None
        self._chunks = SnapshotChunks(self.transport, self._snapshot_buffer, self._snapshot_timeout)
        self._state, self._need = _SNAP_HEADER, SNAP_FRAME_HEADER.size
        self._host.snapshot_started(self, self.peer_id, metadata, self._chunks)

    def _process_snap_data(self) -> bool:
        take = min(self._remaining, self._end - self._start)
        if take == 0 and self._remaining:
            return False
        if take:
            start = self._start
            chunk = bytes(self._view[start : start + take])
            self._start = start + take
            self._remaining -= take
            self._received += take
            assert self._chunks is not None
            self._chunks.feed(chunk)
        if self._remaining == 0:
            self._state, self._need = _SNAP_HEADER, SNAP_FRAME_HEADER.size
        return True

    def _process_snap_end(self) -> None:
        total, digest = SNAP_END.unpack_from(self._buf, self._start)
        self._start += SNAP_END.size
        self._state, self._need = _SNAP_DONE, 0
        assert self._chunks is not None
        if total != self._received:
            self._chunks.fail(
                SnapshotError(f"snapshot length mismatch: sent {total}, got {self._received}")
            )
        else:
            self._chunks.finish(digest)  # (it checks the digest as it hands the data out)
