"""Which handler serves a method path. Read from the same grpc.GenericRpcHandler objects
grpc.aio takes (grpc.method_handlers_generic_handler, petcd's raw_service), so services
are written once, against grpc.aio's API, and either server serves them."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import grpc


class CallHooks(Protocol):
    """Found as `hooks` on a unary handler that wraps another (per-call metrics): the
    server calls the inner `fn` itself, with begin() before and end() after, so no
    coroutine is wrapped around each call. Method.fn stays the wrapper, for callers
    that await it (the gateway)."""

    fn: Callable[..., Any]

    def begin(self, request: Any, context: Any) -> float: ...

    def end(self, context: Any, t0: float, resp: Any, error: BaseException | None) -> None:
        ...


@dataclass(frozen=True, slots=True)
class Method:
    """A resolved method. `fn` is grpc.aio's handler: (request or request iterator,
    context) -> response, or an async generator of responses, or None after
    context.write() calls."""

    path: str
    request_streaming: bool
    response_streaming: bool
    fn: Callable[..., Any]
    deserialize: Callable[[bytes], Any] | None
    serialize: Callable[[Any], bytes] | None
    hooks: CallHooks | None = None
    # A unary handler marked `starts_inline` (see Call.start): its first step runs in
    # the read callback that completed the request, with no task unless it suspends.
    inline: bool = False


class _CallDetails(grpc.HandlerCallDetails):
    def __init__(self, method: str, metadata: Sequence[tuple[str, str | bytes]]) -> None:
        self.method = method
        self.invocation_metadata = tuple(metadata)


class Registry:
    """Method lookup by path. A generic handler is asked once per path and the answer
    kept: petcd's handlers do not depend on the call's metadata."""

    def __init__(self) -> None:
        self._handlers: list[grpc.GenericRpcHandler[Any, Any]] = []
        # Paths resolved so far (None: no handler): the connection reads it directly
        # on every request, and calls lookup() only for a path not in it.
        self.resolved: dict[str, Method | None] = {}

    def add_generic_rpc_handlers(
            self, handlers: Iterable[grpc.GenericRpcHandler[Any, Any]]) -> None:
        self._handlers.extend(handlers)
        self.resolved.clear()

    def lookup(self, path: str) -> Method | None:
        try:
            return self.resolved[path]
        except KeyError:
            pass
        method = self._resolve(path)
        if method is not None or len(self.resolved) < 1024:  # misses: bounded
            self.resolved[path] = method
        return method

    def _resolve(self, path: str) -> Method | None:
        details = _CallDetails(path, ())
        for h in self._handlers:
            mh = h.service(details)
            if mh is None:
                continue
            fn = mh.unary_unary or mh.unary_stream or mh.stream_unary or mh.stream_stream
            if mh.request_streaming:
                fn = mh.stream_stream if mh.response_streaming else mh.stream_unary
            else:
                fn = mh.unary_stream if mh.response_streaming else mh.unary_unary
            assert fn is not None, path
            # (`fn` stays the wrapper: the gateway awaits it; our Call uses the hooks)
            hooks: CallHooks | None = None
            inline = False
            if not mh.request_streaming and not mh.response_streaming:
                hooks = getattr(fn, "hooks", None)
                inline = getattr(fn if hooks is None else hooks.fn, "starts_inline", False)
            return Method(path, bool(mh.request_streaming), bool(mh.response_streaming), fn,
                          mh.request_deserializer, mh.response_serializer, hooks,
                          inline is True)
        return None

    def unknown_message(self, path: str) -> str:
        """grpc-go's UNIMPLEMENTED text for a path no handler serves."""
        service, _, method = path.lstrip("/").rpartition("/")
        if not service:
            return f"malformed method name: {path!r}"
        for h in self._handlers:
            name = getattr(h, "service_name", None)
            if callable(name) and name() == service:
                return f"unknown method {method} for service {service}"
        return f"unknown service {service}"
