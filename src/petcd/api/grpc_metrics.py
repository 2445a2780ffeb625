"""go-grpc-prometheus' server metrics, as etcd exports them: grpc_server_started_total,
grpc_server_handled_total (by code), grpc_server_msg_{received,sent}_total, and with
--metrics=extensive grpc_server_handling_seconds; plus etcd's client byte counters.

Handlers are wrapped once, when registered, so the h2 server, grpc.aio and the JSON
gateway are all counted. Per call the cost is a few integer increments on a
preallocated per-method record (no label lookup, no lock); the collector turns the
integers into metric families when /metrics is scraped."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import grpc
import grpc.aio
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

_SC = grpc.StatusCode
# grpc-go's names of the codes, indexed by number.
CODE_NAMES = ("OK", "Canceled", "Unknown", "InvalidArgument", "DeadlineExceeded",
              "NotFound", "AlreadyExists", "PermissionDenied", "ResourceExhausted",
              "FailedPrecondition", "Aborted", "OutOfRange", "Unimplemented", "Internal",
              "Unavailable", "DataLoss", "Unauthenticated")
log = logging.getLogger("petcd.api")

_UNKNOWN = 2
_CANCELLED = 1
# go-grpc-prometheus' default histogram buckets.
_BUCKETS = (.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10)


class MethodStats:
    __slots__ = ("handled", "method", "observed", "received", "received_bytes", "sent",
                 "sent_bytes", "service", "slow", "started", "timer", "type")

    def __init__(self, service: str, method: str, kind: str) -> None:
        self.service, self.method, self.type = service, method, kind
        self.started = self.received = self.sent = 0
        self.received_bytes = self.sent_bytes = 0
        self.handled = [0] * len(CODE_NAMES)
        self.timer: Callable[[float], None] | None = None
        # A unary call's timer is called only if it took longer than `slow` (it warns
        # then) or if `observed` (a histogram): mostly not, with etcd's defaults.
        self.slow = -1.0
        self.observed = False


# StatusCode -> its number (an enum member's .value is a property, its hash a Python
# call: OK, the common case, is told by identity).
_CODE_NUMBERS: dict[Any, int] = {c: int(c.value[0]) for c in _SC}
_CODE_NUMBERS[None] = 0
_OK = _SC.OK


def _code_of(ctx: Any) -> int:
    try:
        code = ctx.code()
        return 0 if code is _OK else _CODE_NUMBERS.get(code, _UNKNOWN)
    except Exception:
        return _UNKNOWN


def _kind(mh: grpc.RpcMethodHandler[Any, Any]) -> str:
    if mh.request_streaming:
        return "bidi_stream" if mh.response_streaming else "client_stream"
    return "server_stream" if mh.response_streaming else "unary"


# etcd_server_client_requests_total: calls by type ("unary", "stream"), then by the
# version the client names in its client-api-version metadata (etcd's clients send it;
# None: it named none, "unknown" on /metrics).
# A client names any version it likes: at most MAX_CLIENT_VERSIONS distinct ones per
# type get their own count; calls naming another are counted as "unknown".
ClientRequests = dict[str, dict[str | None, int]]
MAX_CLIENT_VERSIONS = 64


def _count_version(versions: dict[str | None, int], version: str | None) -> None:
    n = versions.get(version)
    if n is None:
        if len(versions) >= MAX_CLIENT_VERSIONS:
            version = None
        n = versions.get(version, 0)
    versions[version] = n + 1


def _client_version(context: Any) -> str | None:
    try:
        # petcd's h2 server looks the one key up directly (no metadata list per call)
        return context.metadata_value("client-api-version")  # type: ignore[no-any-return]
    except AttributeError:
        pass
    try:
        for key, value in context.invocation_metadata() or ():
            if key == "client-api-version":
                return value if isinstance(value, str) else value.decode("latin-1")
    except Exception:
        pass
    return None


def _count_client(requests: ClientRequests, kind: str, context: Any) -> None:
    _count_version(requests[kind], _client_version(context))


class UnaryHooks:
    """The counting of one unary method as two plain calls around its handler:
    begin(request, context) before, end(...) after. A server that can make them (our
    h2 server reads `hooks` off the wrapper, see h2.registry) runs the handler itself,
    with no coroutine wrapped around every call; grpc.aio and the gateway await the
    wrapper, which makes the same two calls."""

    __slots__ = ("fn", "handled", "st", "versions")

    def __init__(self, fn: Callable[..., Any], st: MethodStats,
                 requests: ClientRequests) -> None:
        self.fn = fn
        self.st = st
        self.handled = st.handled
        self.versions = requests["unary"]

    def begin(self, request: Any, context: Any) -> float:
        # (every call goes through here: kept to plain increments and one lookup)
        try:
            version = context.metadata_value("client-api-version")
        except AttributeError:
            version = _client_version(context)
        versions = self.versions
        n = versions.get(version)
        if n is None:
            _count_version(versions, version)
        else:
            versions[version] = n + 1
        st = self.st
        st.started += 1  # (and one message received: collect() reads it from `started`)
        if type(request) is bytes:
            st.received_bytes += len(request)
        return time.perf_counter() if st.timer is not None else 0.0

    def end(self, context: Any, t0: float, resp: Any, error: BaseException | None) -> None:
        """After the handler: its response, or the exception it ended with."""
        st = self.st
        if error is None:
            try:
                code = context._code  # (CallStatus: our h2 server's and the gateway's)
            except AttributeError:
                try:
                    code = context.code()
                except Exception:
                    code = _SC.UNKNOWN
            self.handled[0 if code is _OK else _CODE_NUMBERS.get(code, _UNKNOWN)] += 1
            timer = st.timer
            if timer is not None:
                took = time.perf_counter() - t0
                if took > st.slow or st.observed:
                    timer(took)
            if resp is not None:
                st.sent += 1
                if type(resp) is bytes or type(resp) is bytearray:  # (big ranges: bytearray)
                    st.sent_bytes += len(resp)
            return
        if isinstance(error, grpc.aio.AbortError):
            self.handled[_code_of(context)] += 1
        elif isinstance(error, asyncio.CancelledError):
            self.handled[_CANCELLED] += 1
        elif isinstance(error, Exception):
            self.handled[_UNKNOWN] += 1
        if st.timer is not None:
            st.timer(time.perf_counter() - t0)


def _wrap_unary(fn: Callable[..., Any], st: MethodStats,
                requests: ClientRequests) -> Callable[..., Any]:
    hooks = UnaryHooks(fn, st, requests)
    begin, end = hooks.begin, hooks.end

    async def call(request: Any, context: Any) -> Any:
        t0 = begin(request, context)
        try:
            resp = await fn(request, context)
        except BaseException as e:
            end(context, t0, None, e)
            raise
        end(context, t0, resp, None)
        return resp
    call.hooks = hooks  # type: ignore[attr-defined]
    return call


async def _counted(requests: Any, st: MethodStats) -> Any:
    async for message in requests:
        st.received += 1
        if type(message) is bytes:
            st.received_bytes += len(message)
        yield message


def _wrap_stream(fn: Callable[..., Any], st: MethodStats, request_streaming: bool,
                 requests: ClientRequests) -> Callable[..., Any]:
    async def call(arg: Any, context: Any) -> Any:
        _count_client(requests, "stream", context)
        st.started += 1
        if request_streaming:
            arg = _counted(arg, st)
        else:
            st.received += 1
        timer = st.timer
        t0 = time.perf_counter() if timer is not None else 0.0
        code = _CANCELLED  # unless it ends otherwise: the client went away
        try:
            result = fn(arg, context)
            if inspect.isasyncgen(result):
                async for message in result:
                    st.sent += 1
                    if type(message) is bytes:
                        st.sent_bytes += len(message)
                    yield message
            elif inspect.isawaitable(result):
                await result
            code = _code_of(context)
        except grpc.aio.AbortError:
            code = _code_of(context)
            raise
        except Exception:
            code = _UNKNOWN
            raise
        finally:
            st.handled[code] += 1
            if timer is not None:
                timer(time.perf_counter() - t0)
    return call


class _Instrumented(grpc.GenericRpcHandler):  # type: ignore[type-arg]
    def __init__(self, inner: grpc.GenericRpcHandler[Any, Any], owner: GrpcMetrics) -> None:
        self._inner = inner
        self._owner = owner
        self._cache: dict[str, grpc.RpcMethodHandler[Any, Any] | None] = {}
        for path, mh in getattr(inner, "_method_handlers", {}).items():
            service, _, method = str(path).lstrip("/").rpartition("/")
            # listed at zero from the start, as go-grpc-prometheus does
            owner.stats_for(service or getattr(inner, "_name", ""), method, _kind(mh))

    def service_name(self) -> str | None:
        name = getattr(self._inner, "service_name", None)
        return name() if callable(name) else None

    def service(self, details: grpc.HandlerCallDetails) -> Any:
        path = details.method
        try:
            return self._cache[path]
        except KeyError:
            pass
        mh = self._inner.service(details)
        if mh is not None:
            service, _, method = path.lstrip("/").rpartition("/")
            st = self._owner.stats_for(service, method, _kind(mh))
            m: Any = mh
            reqs = self._owner.client_requests
            if m.stream_stream is not None:
                mh = m._replace(stream_stream=_wrap_stream(m.stream_stream, st, True, reqs))
            elif m.unary_stream is not None:
                mh = m._replace(unary_stream=_wrap_stream(m.unary_stream, st, False, reqs))
            elif m.unary_unary is not None:
                mh = m._replace(unary_unary=_wrap_unary(m.unary_unary, st, reqs))
            # (a client-streaming unary call is left as it is: etcd has none)
            self._cache[path] = mh
        return mh


def _slow_warner(method: str, limit: float,
                 observe: Callable[[float], None] | None) -> Callable[[float], None]:
    """A unary call's timer that also warns, as etcd does, when it took too long."""
    def timer(took: float) -> None:
        if observe is not None:
            observe(took)
        if took > limit:
            log.warning("request stats: %s took %.3fs, longer than expected (%gs)", method,
                        took, limit, extra={"fields": {
                            "method": method, "time spent": f"{took:.6f}s",
                            "expected-duration": f"{limit:g}s"}})
    return timer


class GrpcMetrics(Collector):
    def __init__(self, registry: CollectorRegistry, *, extensive: bool = False,
                 slow_request: float = 0.0) -> None:
        self._stats: dict[tuple[str, str], MethodStats] = {}
        self.client_requests: ClientRequests = {"unary": {}, "stream": {}}
        # --warning-unary-request-duration: unary calls slower than this are logged.
        self._slow = slow_request
        self._hist = Histogram(
            "grpc_server_handling_seconds",
            "Histogram of response latency (seconds) of gRPC that had been application-level "
            "handled by the server.", ["grpc_type", "grpc_service", "grpc_method"],
            buckets=_BUCKETS, registry=registry) if extensive else None
        registry.register(self)

    def instrument(self, handlers: Iterable[grpc.GenericRpcHandler[Any, Any]]
                   ) -> tuple[grpc.GenericRpcHandler[Any, Any], ...]:
        return tuple(_Instrumented(h, self) for h in handlers)

    def stats_for(self, service: str, method: str, kind: str) -> MethodStats:
        st = self._stats.get((service, method))
        if st is None:
            st = self._stats[(service, method)] = MethodStats(service, method, kind)
            observe = None if self._hist is None else \
                self._hist.labels(kind, service, method).observe
            if kind != "unary" or self._slow <= 0:
                st.timer = observe
            else:
                st.timer = _slow_warner(f"/{service}/{method}", self._slow, observe)
                st.slow = self._slow
                st.observed = observe is not None
        return st

    def collect(self) -> Iterator[Metric]:
        labels = ["grpc_type", "grpc_service", "grpc_method"]
        started = CounterMetricFamily("grpc_server_started", "Total number of RPCs started "
                                      "on the server.", labels=labels)
        handled = CounterMetricFamily("grpc_server_handled", "Total number of RPCs completed "
                                      "on the server, regardless of success or failure.",
                                      labels=["grpc_code", *labels])
        received = CounterMetricFamily("grpc_server_msg_received", "Total number of RPC "
                                       "stream messages received on the server.", labels=labels)
        sent = CounterMetricFamily("grpc_server_msg_sent", "Total number of gRPC stream "
                                   "messages sent by the server.", labels=labels)
        rx = tx = 0
        for st in self._stats.values():
            key = [st.type, st.service, st.method]
            started.add_metric(key, st.started)
            # (a unary call is one message received: UnaryHooks counts it as started)
            received.add_metric(key, st.started if st.type == "unary" else st.received)
            sent.add_metric(key, st.sent)
            for code, n in enumerate(st.handled):
                handled.add_metric([CODE_NAMES[code], *key], n)
            rx += st.received_bytes
            tx += st.sent_bytes
        yield from (started, handled, received, sent)
        c = CounterMetricFamily("etcd_server_client_requests", "The total number of client "
                                "requests per client version.",
                                labels=["type", "client_api_version"])
        merged: dict[tuple[str, str], int] = {}
        for kind, versions in self.client_requests.items():
            for version, n in list(versions.items()):
                k = (kind, "unknown" if version is None else version)
                merged[k] = merged.get(k, 0) + n
        for (kind, version), n in sorted(merged.items()):
            c.add_metric([kind, version], n)
        yield c
        yield CounterMetricFamily("etcd_network_client_grpc_received_bytes", "The total "
                                  "number of bytes received from grpc clients.", value=rx)
        yield CounterMetricFamily("etcd_network_client_grpc_sent_bytes", "The total number "
                                  "of bytes sent to grpc clients.", value=tx)
