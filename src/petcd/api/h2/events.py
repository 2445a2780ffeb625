"""What the sans-IO HTTP/2 connection reports to the layer above it (the asyncio
protocol, or a test): synchronous calls, made while the frame that causes them is
handled, so a call is set up before the next frame of its stream is parsed."""

from __future__ import annotations

from typing import Protocol

import grpc

from petcd.api.h2.registry import Method
from petcd.api.h2.streams import H2Stream


class Events(Protocol):
    """What the connection reports to the layer above (all synchronous)."""

    def call_started(self, stream: H2Stream, method: Method, timeout: float | None) -> None:
        """A valid gRPC request's headers: set `stream.call`."""

    def request_complete(self, stream: H2Stream, message: bytes) -> None:
        """A unary request's one message (the client ended the stream)."""

    def messages_ready(self, stream: H2Stream) -> None:
        """A streaming request: messages were queued, or the request ended."""

    def call_failed(self, stream: H2Stream, code: grpc.StatusCode, message: str) -> None:
        """The request body broke gRPC's framing or a limit: end the call with a status."""

    def stream_closed(self, stream: H2Stream, cancelled: bool) -> None:
        """The stream is gone (cancelled: reset, or the connection ended first)."""

    def writable(self, stream: H2Stream) -> None:
        """The stream's queued output has been sent."""

    def handshake_done(self) -> None:
        """The client's first SETTINGS arrived."""

    def ping_acked(self, payload: bytes) -> None: ...

    def output_ready(self) -> None:
        """`out` went from empty to non-empty."""

    def pump_wanted(self) -> None:
        """Blocked streams may go on: call `pump_some` soon (not from within this call)."""

    def connection_ended(self) -> None:
        """Close the connection once `out` is written (GOAWAY sent, no streams left)."""
