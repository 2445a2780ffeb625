"""The per-call context handed to handlers: the subset of grpc.aio.ServicerContext that
services use (abort, metadata, peer, deadline, streaming read/write, done callbacks, and
the TLS client identity)."""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio

from petcd.tls.gate import peer_identity_key

if TYPE_CHECKING:
    from petcd.api.h2.call import Call as Stream

_OK = grpc.StatusCode.OK
_RESERVED = frozenset({"te", "content-type", "grpc-timeout", "grpc-encoding",
                       "grpc-accept-encoding"})

Metadata = tuple[tuple[str, str | bytes], ...]
_LOOKUPS_MAX = 16  # keys remembered per request head (a guard: callers use a few constants)


class CallStatus:
    """The status half of grpc.aio.ServicerContext (abort, codes, details, trailing
    metadata), shared by the h2 server's context and the JSON gateway's. Subclasses set
    `_code`, `_details` and `_trailing` in their own __init__ (hot path: no super call)."""

    __slots__ = ("_code", "_details", "_trailing")
    _code: grpc.StatusCode
    _details: str
    _trailing: Sequence[tuple[str, str | bytes]]

    # -- status
    async def abort(self, code: grpc.StatusCode, details: str = "",
                    trailing_metadata: Sequence[tuple[str, str | bytes]] = ()) -> None:
        """Ends the call with this status: raises grpc.aio.AbortError, as grpc.aio does."""
        if code is _OK:
            raise ValueError("abort() needs a non-OK status code")
        self._code = code
        self._details = details
        if trailing_metadata:
            self._trailing = trailing_metadata
        raise grpc.aio.AbortError()

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def set_details(self, details: str) -> None:
        self._details = details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def set_trailing_metadata(self, metadata: Sequence[tuple[str, str | bytes]]) -> None:
        self._trailing = metadata

    def trailing_metadata(self) -> Sequence[tuple[str, str | bytes]]:
        return self._trailing


class ServerContext(CallStatus):
    __slots__ = ("_metadata", "_stream", "initial_metadata")

    # A unary handler may return a pb.wire.LazyMessage: sent piece by piece (Call).
    lazy_messages = True

    def __init__(self, stream: Stream) -> None:
        self._stream = stream
        self._code = _OK
        self._details = ""
        self._trailing: Sequence[tuple[str, str | bytes]] = ()
        self._metadata: Metadata | None = None
        self.initial_metadata: Sequence[tuple[str, str | bytes]] = ()

    # -- call information
    def invocation_metadata(self) -> Metadata:
        """The client's custom metadata (no pseudo or transport headers); '-bin' values
        are base64-decoded to bytes, as grpc.aio gives them."""
        md = self._metadata
        if md is None:
            out: list[tuple[str, str | bytes]] = []
            for k, v in self._stream.headers:
                if k[0] == ":" or k in _RESERVED:
                    continue
                if k.endswith("-bin"):
                    out.append((k, base64.b64decode(v + "=" * (-len(v) % 4))))
                else:
                    out.append((k, v))
            md = self._metadata = tuple(out)
        return md

    def metadata_value(self, key: str) -> str | None:
        """The value of one plain (not '-bin') metadata key, without building the
        whole list: per-call metrics look one key up on every call. Remembered with
        the request's parsed head, which the connection shares between calls whose
        header blocks are the same (callers pass constant keys: the memo is bounded)."""
        stream = self._stream
        lookups = stream.h2.head.lookups
        try:
            return lookups[key]  # type: ignore[no-any-return]
        except KeyError:
            pass
        found = None
        for k, v in stream.headers:
            if k == key:
                found = v
                break
        if len(lookups) < _LOOKUPS_MAX:
            lookups[key] = found
        return found

    def peer(self) -> str:
        return self._stream.conn.peer()

    def time_remaining(self) -> float | None:
        return self._stream.time_remaining()

    def method(self) -> str:
        return self._stream.path

    def cancelled(self) -> bool:
        return self._stream.cancelled

    def done(self) -> bool:
        return self._stream.closed

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        self._stream.add_done_callback(lambda: callback(self))

    # -- streaming
    async def read(self) -> Any:
        """The next request message, or grpc.aio.EOF after the client's last one."""
        return await self._stream.read()

    async def write(self, message: Any) -> None:
        await self._stream.write(message)

    def outlet(self) -> Stream:
        """The call itself, for a streaming handler whose responses are produced outside
        its task (Call.offer, Call.flush: the watch hub writes events as it is told)."""
        return self._stream

    async def send_initial_metadata(
            self, initial_metadata: Sequence[tuple[str, str | bytes]]) -> None:
        self.initial_metadata = initial_metadata
        self._stream.send_headers()

    # -- accepted and ignored: petcd's server only speaks identity encoding
    def set_compression(self, compression: object) -> None:
        pass

    def disable_next_message_compression(self) -> None:
        pass

    # -- the client's TLS identity, as grpc.aio reports it
    def auth_context(self) -> dict[str, list[bytes]]:
        """{} without TLS; else grpc's keys: transport_security_type [b'ssl'] and, for a
        client certificate, x509_common_name, x509_subject_alternative_name, ..."""
        return self._stream.conn.auth_context()

    def peer_identity_key(self) -> str | None:
        return peer_identity_key(self.auth_context())

    def peer_identities(self) -> list[bytes] | None:
        key = self.peer_identity_key()
        return None if key is None else self.auth_context()[key]
