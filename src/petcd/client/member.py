"""One member's channel (grpcio's or grpc.aio's: both make method objects the same way)
with its method objects made once, shared by `Client` and `AsyncClient`."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

C = TypeVar("C")


def _serialize(m: Any) -> bytes:
    return m.SerializeToString()  # type: ignore[no-any-return]


class MemberConn(Generic[C]):
    def __init__(self, index: int, target: str, channel: C) -> None:
        self.index = index
        self.target = target
        self.channel = channel
        self.ready = False
        self.methods: dict[str, Any] = {}

    def unary(self, method: str, response_type: Any) -> Any:
        fn = self.methods.get(method)
        if fn is None:
            ch: Any = self.channel
            fn = self.methods[method] = ch.unary_unary(
                method, request_serializer=_serialize,
                response_deserializer=response_type.FromString)
        return fn

    def stream(self, method: str, response_type: Any, *, unary_request: bool = False) -> Any:
        key = "stream:" + method
        fn = self.methods.get(key)
        if fn is None:
            ch: Any = self.channel
            make = ch.unary_stream if unary_request else ch.stream_stream
            fn = self.methods[key] = make(method, request_serializer=_serialize,
                                          response_deserializer=response_type.FromString)
        return fn
