"""The per-call context the gateway hands to gRPC handlers: the part of
grpc.aio.ServicerContext petcd's services use. Handlers cannot tell a gateway call
from a gRPC one, so authentication, validation and errors are the same on both."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import grpc
import grpc.aio

from petcd.api.h2.context import CallStatus

_OK = grpc.StatusCode.OK
_EOF: Any = getattr(grpc.aio, "EOF")  # noqa: B009 - missing from the type stubs

Metadata = tuple[tuple[str, str | bytes], ...]


class GatewayContext(CallStatus):
    __slots__ = ("_done", "_metadata", "_method", "_requests", "_sink", "ended", "written")

    def __init__(self, method: str, metadata: Metadata,
                 requests: AsyncIterator[Any] | None = None,
                 sink: Callable[[Any], Awaitable[None]] | None = None) -> None:
        self._method = method
        self._metadata = metadata
        self._requests = requests
        self._sink = sink
        self._code = _OK
        self._details = ""
        self._trailing: Sequence[tuple[str, str | bytes]] = ()
        self._done: list[Callable[[Any], None]] = []
        self.ended = False
        self.written = 0  # responses written so far (streams)

    # -- call information
    def invocation_metadata(self) -> Metadata:
        return self._metadata

    def peer(self) -> str:
        # etcd's gateway is a gRPC client of its own member over loopback.
        return "ipv4:127.0.0.1:0"

    def method(self) -> str:
        return self._method

    def time_remaining(self) -> float | None:
        return None

    def cancelled(self) -> bool:
        return self.ended and self._code is grpc.StatusCode.CANCELLED

    def done(self) -> bool:
        return self.ended

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        if self.ended:
            callback(self)
        else:
            self._done.append(callback)

    def finish(self) -> None:
        self.ended = True
        callbacks, self._done = self._done, []
        for cb in callbacks:
            cb(self)

    def auth_context(self) -> dict[str, Any]:
        return {}

    def peer_identities(self) -> None:
        return None

    def peer_identity_key(self) -> None:
        return None

    # -- streaming
    async def read(self) -> Any:
        if self._requests is None:
            raise RuntimeError("read() on a call whose request is not a stream")
        try:
            return await anext(self._requests)
        except StopAsyncIteration:
            return _EOF

    async def write(self, message: Any) -> None:
        if self._sink is None:
            raise RuntimeError("write() on a call whose response is not a stream")
        self.written += 1
        await self._sink(message)

    async def send_initial_metadata(
            self, initial_metadata: Sequence[tuple[str, str | bytes]]) -> None:
        pass

    def set_compression(self, compression: object) -> None:
        pass

    def disable_next_message_compression(self) -> None:
        pass
