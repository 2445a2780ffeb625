"""Per-call gRPC metrics (api/grpc_metrics): what a unary call counts, through the
hooks our h2 server calls and through the wrapper grpc.aio and the gateway await, with
our context (the status read from it directly) and with one that only has code()."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from prometheus_client import CollectorRegistry

from petcd.api.grpc_call import raw_service
from petcd.api.grpc_metrics import GrpcMetrics
from petcd.api.h2.context import CallStatus


class _Ours(CallStatus):
    """A context with CallStatus's status slots (the h2 server's and the gateway's)."""

    def __init__(self) -> None:
        self._code = grpc.StatusCode.OK
        self._details = ""
        self._trailing = ()

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return (("client-api-version", "3.5"),)


class _Foreign:
    """Only grpc.aio's public methods (no _code)."""

    def __init__(self) -> None:
        self.status = grpc.StatusCode.OK

    def code(self) -> grpc.StatusCode:
        return self.status

    async def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        self.status = code
        raise grpc.aio.AbortError()

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return ()


async def _echo(raw: bytes, context: Any) -> bytes:
    if raw == b"fail":
        await context.abort(grpc.StatusCode.NOT_FOUND, "no")
    if raw == b"soft":  # (a status set without an abort)
        if isinstance(context, _Foreign):
            context.status = grpc.StatusCode.ALREADY_EXISTS
        else:
            context.set_code(grpc.StatusCode.ALREADY_EXISTS)
        return b""
    return raw + b"!"


def _samples(metrics: GrpcMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in metrics.collect():
        for s in fam.samples:
            if s.labels.get("grpc_method", "Echo") == "Echo":
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@pytest.mark.parametrize("ctx_type", [_Ours, _Foreign])
def test_a_unary_call_counts_started_received_sent_and_its_code(ctx_type: type) -> None:
    metrics = GrpcMetrics(CollectorRegistry())
    (h,) = metrics.instrument([raw_service("t.S", {"Echo": _echo})])
    details: Any = type("D", (), {"method": "/t.S/Echo", "invocation_metadata": ()})()
    call = h.service(details).unary_unary
    assert call is not None and call.hooks is not None  # type: ignore[attr-defined]

    async def run() -> None:
        assert await call(b"abc", ctx_type()) == b"abc!"
        assert await call(b"soft", ctx_type()) == b""
        with pytest.raises(grpc.aio.AbortError):
            await call(b"fail", ctx_type())
    asyncio.run(run())
    got = _samples(metrics)
    key = (("grpc_method", "Echo"), ("grpc_service", "t.S"), ("grpc_type", "unary"))

    def value(name: str, *extra: tuple[str, str]) -> float:
        return got[(name, tuple(sorted((*key, *extra))))]
    assert value("grpc_server_started_total") == 3
    assert value("grpc_server_msg_received_total") == 3
    assert value("grpc_server_msg_sent_total") == 2
    assert value("grpc_server_handled_total", ("grpc_code", "OK")) == 1
    assert value("grpc_server_handled_total", ("grpc_code", "AlreadyExists")) == 1
    assert value("grpc_server_handled_total", ("grpc_code", "NotFound")) == 1
    rx = [v for (n, _), v in got.items() if n == "etcd_network_client_grpc_received_bytes_total"]
    assert rx == [len(b"abc") + len(b"soft") + len(b"fail")]


@pytest.mark.parametrize("slow", [0.0, 60.0, 1e-12])
def test_unary_durations_are_observed_and_slow_calls_warned(
        slow: float, caplog: pytest.LogCaptureFixture) -> None:
    # (with --warning-unary-request-duration the timer is called only for a slow call
    # or when a histogram is kept: both must still happen)
    for extensive in (False, True):
        caplog.clear()
        metrics = GrpcMetrics(CollectorRegistry(), extensive=extensive, slow_request=slow)
        (h,) = metrics.instrument([raw_service("t.S", {"Echo": _echo})])
        details: Any = type("D", (), {"method": "/t.S/Echo", "invocation_metadata": ()})()
        call = h.service(details).unary_unary
        assert call is not None

        async def run() -> None:
            assert await call(b"abc", _Ours()) == b"abc!"  # noqa: B023 (run at once)
        asyncio.run(run())
        warned = [r for r in caplog.records if "longer than expected" in r.getMessage()]
        assert len(warned) == (1 if slow == 1e-12 else 0)
        assert metrics._hist is None or metrics._hist.labels(
            "unary", "t.S", "Echo")._sum.get() > 0
        count = [s.value for fam in (metrics._hist.collect() if metrics._hist else [])
                 for s in fam.samples if s.name.endswith("_count")]
        assert count == ([1.0] if extensive else [])
