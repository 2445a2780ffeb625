"""The receive side of the sans-IO HTTP/2 connection for gRPC: header blocks (HEADERS,
CONTINUATION, HPACK, request checks) that open streams, and request bodies cut into
gRPC messages, with flow-control credit given back only for bytes consumed (so the
request bytes a connection holds never exceed its connection window)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import grpc

from petcd.api.h2 import frames as F
from petcd.api.h2.budgets import TokenBucket
from petcd.api.h2.config import ServerConfig
from petcd.api.h2.events import Events
from petcd.api.h2.hpack_codec import Block, Decoder, HeaderListTooLarge, HpackError
from petcd.api.h2.outbound import Outbound
from petcd.api.h2.registry import Registry
from petcd.api.h2.request_head import RequestHead, parse_request_head
from petcd.api.h2.status import trailers_only_block
from petcd.api.h2.streams import (
    CLOSED,
    HALF_CLOSED_LOCAL,
    HALF_CLOSED_REMOTE,
    OPEN,
    OPENED,
    OPENED_ENDED,
    RECV_DATA,
    RECV_END_STREAM,
    TABLE,
    H2Stream,
)

_SC = grpc.StatusCode

MAX_BLOCK_FRAMES = 64  # HEADERS + CONTINUATION frames of one header block
MAX_EMPTY_CONTINUATIONS = 4
STREAM_BASE_COST = 2048  # a stream's memory besides its header list, charged to the budget

_END_STREAM = F.END_STREAM


class Requests(Outbound):
    def __init__(self, config: ServerConfig, registry: Registry, events: Events,
                 clock: Callable[[], float]) -> None:
        super().__init__(events)
        self._clock = clock
        self._cfg = config
        self._registry = registry
        self.last_sid = 0
        self._decoder = Decoder(max_list_size=config.max_header_list_size)
        # A header block in CONTINUATIONs: stream, flags, bytes, [frames, empty frames],
        # and the stream error found in its HEADERS frame (raised once it is decoded).
        self._cont: tuple[int, int, bytearray, list[int], str] | None = None
        self._recv_window = config.connection_window
        self._half_window = config.connection_window >> 1  # below it, credit is due
        self._max_body = 5 + config.max_receive_message  # a unary request's whole body
        self.held = 0  # request bytes buffered for streams, not yet consumed
        self.stream_memory = 0  # sum of open streams' `cost`
        self._resets = TokenBucket(config.reset_burst, config.reset_rate)

    def _spend_reset(self) -> None:
        """A stream reset by the client or refused by us (Rapid Reset's budget)."""
        if not self._resets.spend(self._clock()):
            raise F.H2ConnectionError(F.ENHANCE_YOUR_CALM, "too_many_resets")

    # -- request bodies (gRPC messages)
    def _on_data(self, sid: int, flags: int, payload: bytes) -> None:
        if sid == 0:
            raise F.H2ConnectionError(F.PROTOCOL_ERROR, "DATA on stream 0")
        size = len(payload)
        self._recv_window -= size
        if self._recv_window < 0:
            raise F.H2ConnectionError(F.FLOW_CONTROL_ERROR, "connection window exceeded")
        stream = self.streams.get(sid)
        if stream is None:
            self.credit_connection()  # nobody holds these bytes
            if sid > self.last_sid:
                raise F.H2ConnectionError(F.PROTOCOL_ERROR, "DATA on an idle stream")
            return  # a stream we answered or reset: ignored
        if (flags == _END_STREAM and stream.state is OPEN and stream.recv_window >= size >= 5
                and not stream.rbuf and stream.messages is None and not payload[0]
                and self._recv_window > self._half_window
                and size == 5 + int.from_bytes(payload[1:5], "big") <= self._max_body):
            # The common unary request: one uncompressed message of an allowed size, the
            # whole body in this unpadded frame, within the windows, no credit due. What
            # the general path below (_feed, _request_ended) would do with it, without
            # buffering it first.
            stream.recv_window -= size
            stream.state = HALF_CLOSED_REMOTE
            self.events.request_complete(stream, payload[5:])
            return
        if TABLE[stream.state][RECV_DATA] is None:  # remote closed
            self.credit_connection()
            raise F.StreamError(sid, F.STREAM_CLOSED, "DATA after END_STREAM")
        stream.recv_window -= size
        if stream.recv_window < 0:
            self.credit_connection()
            raise F.StreamError(sid, F.FLOW_CONTROL_ERROR, "stream window exceeded")
        if flags & F.PADDED:
            payload = F.unpad(payload)
        if payload and stream.state < HALF_CLOSED_LOCAL:  # (the call has not ended)
            self.held += len(payload)
            self._feed(stream, payload)
        if self._recv_window <= self._cfg.connection_window >> 1:
            self.credit_connection()
        if flags & F.END_STREAM:
            state = TABLE[stream.state][RECV_END_STREAM]
            if state is not None:  # (None: answered and reset while its body was fed)
                stream.state = state
                self._request_ended(stream)
        elif stream.state < HALF_CLOSED_LOCAL:
            self.credit(stream)

    def _feed(self, stream: H2Stream, payload: bytes) -> None:
        rbuf = stream.rbuf
        if rbuf:
            if type(rbuf) is bytes:
                rbuf = stream.rbuf = bytearray(rbuf)
            rbuf += payload  # type: ignore[operator]
        else:
            rbuf = stream.rbuf = payload
        limit = self._cfg.max_receive_message
        msgs = stream.messages
        if msgs is None:  # unary request: the whole body is one message, cut at the end
            if len(rbuf) >= 5:
                size = int.from_bytes(rbuf[1:5], "big")
                if size > limit:
                    self._too_large(stream, size)
                elif len(rbuf) > 5 + size:  # more than the one message it declared
                    self.events.call_failed(stream, _SC.INTERNAL,
                                            "grpc: expected exactly one request message")
            return
        queued = False
        while len(rbuf) >= 5:
            size = int.from_bytes(rbuf[1:5], "big")
            if size > limit:
                stream.rbuf = rbuf  # (held bytes are counted from it when forgotten)
                self._too_large(stream, size)
                return
            if len(rbuf) < 5 + size:
                break
            if rbuf[0]:
                stream.rbuf = rbuf
                self._compressed(stream)
                return
            msgs.append(bytes(rbuf[5:5 + size]))
            stream.queued_bytes += 5 + size
            rbuf = rbuf[5 + size:]
            queued = True
        stream.rbuf = rbuf
        if queued:
            self.events.messages_ready(stream)

    def _too_large(self, stream: H2Stream, size: int) -> None:
        self.events.call_failed(stream, _SC.RESOURCE_EXHAUSTED,
                                f"grpc: received message larger than max ({size} vs. "
                                f"{self._cfg.max_receive_message})")

    def _compressed(self, stream: H2Stream) -> None:
        self.events.call_failed(stream, _SC.INTERNAL,
                                "grpc: compressed flag set with identity or empty encoding")

    def _request_ended(self, stream: H2Stream) -> None:
        """END_STREAM received (the state has moved)."""
        if stream.state >= HALF_CLOSED_LOCAL:  # the call has ended
            if stream.state is CLOSED and not stream.output_queued:
                self.forget(stream, False)
            return
        if stream.messages is not None:  # streaming request: the reader sees EOF
            if stream.rbuf:
                self.events.call_failed(stream, _SC.INTERNAL, "grpc: truncated request message")
                return
            self.events.messages_ready(stream)
            return
        body = stream.rbuf
        stream.rbuf = b""
        self.held -= len(body)
        if self._recv_window <= self._cfg.connection_window >> 1:
            self.credit_connection()
        if len(body) < 5 or len(body) != 5 + int.from_bytes(body[1:5], "big"):
            self.events.call_failed(stream, _SC.INTERNAL,
                                    "grpc: expected exactly one request message" if body else
                                    "grpc: no request message")
            return
        if body[0]:
            self._compressed(stream)
            return
        self.events.request_complete(stream, bytes(body[5:]))

    def consumed(self, stream: H2Stream, n: int) -> None:
        """The call took n request bytes off the stream's message queue."""
        self.held -= n
        self.credit(stream)
        self.credit_connection()

    def credit(self, stream: H2Stream) -> None:
        """Give the client back stream window for what it sent that is not waiting
        in the message queue (calls that do not read hold the client back)."""
        window = self._cfg.initial_window
        if stream.state >= HALF_CLOSED_REMOTE or stream.recv_window > window >> 1:
            return
        give = window - stream.recv_window - stream.queued_bytes
        if give > 0:
            stream.recv_window += give
            self.write(F.window_update(stream.sid, give))

    def credit_connection(self) -> None:
        """Connection window back for what no stream holds: the client can never have
        more than connection_window bytes buffered here."""
        cw = self._cfg.connection_window
        if self._recv_window > cw >> 1:
            return
        give = cw - self._recv_window - self.held
        if give >= cw >> 2:
            self._recv_window += give
            self.write(F.window_update(0, give))

    # -- header blocks, new streams
    def _on_headers(self, sid: int, flags: int, payload: bytes) -> None:
        if sid == 0:
            raise F.H2ConnectionError(F.PROTOCOL_ERROR, "HEADERS on stream 0")
        if flags & F.PADDED:
            payload = F.unpad(payload)
        error = ""
        if flags & F.PRIORITY_FLAG:
            if len(payload) < 5:
                raise F.H2ConnectionError(F.FRAME_SIZE_ERROR, "HEADERS priority too short")
            if F.u32(payload) & 0x7FFFFFFF == sid:  # RFC 9113 5.3.1
                error = "stream depends on itself"
            payload = payload[5:]
        if not flags & F.END_HEADERS:
            self._cont = (sid, flags, bytearray(payload), [1, 0], error)
            return
        self._on_header_block(sid, flags & F.END_STREAM, payload, error)

    def _on_continuation(self, sid: int, flags: int, payload: bytes) -> None:
        cont = self._cont
        if cont is None or cont[0] != sid:
            raise F.H2ConnectionError(F.PROTOCOL_ERROR, "unexpected CONTINUATION")
        block, counts = cont[2], cont[3]
        block += payload
        counts[0] += 1
        if not payload:
            counts[1] += 1
        if (len(block) > self._cfg.max_header_list_size + 4096
                or counts[0] > MAX_BLOCK_FRAMES or counts[1] > MAX_EMPTY_CONTINUATIONS):
            raise F.H2ConnectionError(F.ENHANCE_YOUR_CALM, "header block too large")
        if flags & F.END_HEADERS:
            self._cont = None
            self._on_header_block(sid, cont[1] & F.END_STREAM, bytes(block), cont[4])

    def _decode(self, block: bytes) -> Block | None:
        """The decoded block; None if its list is over max_header_list_size."""
        try:
            return self._decoder.decode(block)
        except HeaderListTooLarge:
            return None
        except HpackError as e:
            raise F.H2ConnectionError(F.COMPRESSION_ERROR, str(e)) from None

    def _on_header_block(self, sid: int, end_stream: int, block: bytes, error: str) -> None:
        stream = self.streams.get(sid)
        if stream is not None:  # trailers: the end of a request
            self._decode(block)
            if error:
                raise F.StreamError(sid, F.PROTOCOL_ERROR, error)
            if stream.remote_closed:
                raise F.StreamError(sid, F.STREAM_CLOSED, "HEADERS after END_STREAM")
            if not end_stream:
                raise F.StreamError(sid, F.PROTOCOL_ERROR, "trailers without END_STREAM")
            stream.state = TABLE[stream.state][RECV_END_STREAM]  # type: ignore[assignment]
            self._request_ended(stream)
            return
        if sid <= self.last_sid:
            self._decode(block)
            if sid in self.recent_resets:  # sent before our RST_STREAM reached it
                return
            # RFC 9113 5.1.1: stream ids only grow; a closed stream gets no new headers.
            raise F.H2ConnectionError(F.PROTOCOL_ERROR, f"HEADERS on closed stream {sid}")
        if not sid & 1:
            raise F.H2ConnectionError(F.PROTOCOL_ERROR, "even stream id from a client")
        self.last_sid = sid
        # (_decode inlined, and the decoder's cache read here: every request passes)
        dec = self._decoder
        hit = dec.block_cache.get(block)
        blk: Block | None
        if hit is not None and hit[0] == dec.generation:
            blk = hit[1]
        else:
            try:
                blk = dec.decode(block)
            except HeaderListTooLarge:
                blk = None
            except HpackError as e:
                raise F.H2ConnectionError(F.COMPRESSION_ERROR, str(e)) from None
        if error:
            raise F.StreamError(sid, F.PROTOCOL_ERROR, error)
        if self.goaway_sent:
            self.write(F.rst_stream(sid, F.REFUSED_STREAM))
            return
        if (len(self.streams) >= self._cfg.max_concurrent_streams
                or self.stream_memory >= self._cfg.stream_memory):
            self.write(F.rst_stream(sid, F.REFUSED_STREAM))
            self._spend_reset()
            return
        if blk is None:
            self._reject(sid, end_stream, _SC.RESOURCE_EXHAUSTED,
                         "header list size exceeds the limit")
            return
        head: RequestHead | None = blk.head  # type: ignore[assignment]
        if head is None:  # (cached with the block: a repeated block is checked once)
            head = blk.head = parse_request_head(blk.headers)
        if head.error is not None:
            raise F.StreamError(sid, F.PROTOCOL_ERROR, head.error)
        # A new stream (every request passes here: kept in this one function)
        rejected = head.rejected
        if rejected is not None:
            self._reject(sid, end_stream, *rejected)
            return
        path = head.path
        assert path is not None
        registry = self._registry
        resolved = registry.resolved
        method = resolved[path] if path in resolved else registry.lookup(path)
        if method is None:
            self._reject(sid, end_stream, _SC.UNIMPLEMENTED, registry.unknown_message(path))
            return
        if head.encoding_error is not None:
            self._reject(sid, end_stream, _SC.UNIMPLEMENTED, head.encoding_error)
            return
        cost = STREAM_BASE_COST + blk.size
        stream = H2Stream(sid, OPENED_ENDED if end_stream else OPENED,  # type: ignore[arg-type]
                          blk.headers, self._cfg.initial_window, cost, head)
        if method.request_streaming:
            stream.messages = deque()
        self.streams[sid] = stream
        self.stream_memory += cost
        timeout = head.timeout_seconds
        if timeout is not None and timeout < 0:
            self.trailers_only(stream, trailers_only_block(
                _SC.INTERNAL, f"malformed grpc-timeout {head.timeout!r}"))
            return
        self.events.call_started(stream, method, timeout)
        if end_stream and stream.state is not CLOSED:
            self._request_ended(stream)

    def _reject(self, sid: int, end_stream: int, code: grpc.StatusCode, message: str,
                http_status: int = 200) -> None:
        """Answer a request that never became a call with a Trailers-Only response."""
        self.pings.data_sent = True
        self.write(F.headers_frames(sid, trailers_only_block(code, message, b"", http_status),
                                    True, self.peer_max_frame))
        if not end_stream:
            self.write(F.rst_stream(sid, F.NO_ERROR))
            self.recent_resets.append(sid)
