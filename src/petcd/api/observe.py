"""The operator's HTTP endpoints: /metrics, /health (etcd 3.4's body; etcd 3.5's
?exclude= and ?serializable=true), /livez and /readyz (etcd 3.6's), and with
--enable-pprof a Python profile at /debug/pprof/profile (cProfile of the event loop
thread for ?seconds=N; Go's pprof formats have no Python equivalent)."""

from __future__ import annotations

import asyncio
import cProfile
import io
import pstats
import urllib.parse
from collections.abc import Iterator

from prometheus_client import generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from petcd.errors import EtcdError
from petcd.server.node import Node

Reply = tuple[int, list[tuple[bytes, bytes]], bytes]

_TEXT = (b"Content-Type", b"text/plain; charset=utf-8")
_NOSNIFF = (b"X-Content-Type-Options", b"nosniff")
_METRICS_TYPE = (b"Content-Type", b"text/plain; version=0.0.4; charset=utf-8")  # as etcd
_MAX_PROFILE_SECONDS = 120.0


class _HealthCounters(Collector):
    def __init__(self) -> None:
        self.success = 0
        self.failures = 0

    def collect(self) -> Iterator[Metric]:
        # etcd's names have no _total suffix; prometheus_client would add one to a
        # counter, so they are exposed as gauges to keep the names.
        yield GaugeMetricFamily("etcd_server_health_success",
                                "The total number of successful health checks",
                                value=self.success)
        yield GaugeMetricFamily("etcd_server_health_failures",
                                "The total number of failed health checks",
                                value=self.failures)


class Observability:
    def __init__(self, node: Node, *, pprof: bool = False) -> None:
        self._node = node
        self._pprof = pprof
        self._counts = _HealthCounters()
        node.metrics_registry.register(self._counts)
        self._profiling = False

    def serves(self, path: str) -> bool:
        return path in ("/metrics", "/health", "/livez", "/readyz") or (
            self._pprof and path.startswith("/debug/pprof"))

    async def handle(self, method: str, target: str, headers: list[tuple[bytes, bytes]],
                     body: bytes) -> Reply:
        path, _, query = target.partition("?")
        if method != "GET":
            return 405, [(b"Allow", b"GET"), _TEXT, _NOSNIFF], b"Method Not Allowed\n"
        args = urllib.parse.parse_qs(query)
        if path == "/metrics":
            return 200, [_METRICS_TYPE], generate_latest(self._node.metrics_registry)
        if path == "/health":
            ok = await self.check(args)
            if ok:
                self._counts.success += 1
                return 200, [_TEXT], b'{"health":"true"}'
            self._counts.failures += 1
            # etcd answers with Go's http.Error: nosniff, and a newline after the body.
            return 503, [_TEXT, _NOSNIFF], b'{"health":"false"}\n'
        if path == "/livez":
            return 200, [_TEXT], b"ok"  # the event loop answered
        if path == "/readyz":
            if await self.check(args):
                return 200, [_TEXT], b"ok"
            return 503, [_TEXT, _NOSNIFF], b"[-]data_corruption_or_leader failed\n" \
                b"readyz check failed\n"
        return await self._profile(path, args)

    async def check(self, args: dict[str, list[str]]) -> bool:
        """etcd's health check: no active alarm (but those named in ?exclude=), a leader,
        and a read through the log; ?serializable=true skips the last two (local
        state only)."""
        node = self._node
        excluded = set(args.get("exclude", ()))
        if node.maintenance.unhealthy_alarms(excluded):
            return False
        if args.get("serializable", [""])[-1].lower() == "true":
            return True
        if not node.healthy():
            return False
        if node.is_learner:  # a learner serves no linearizable read
            return True
        barrier = node.read_barrier()
        if barrier is not None:
            try:
                await asyncio.wait_for(barrier, node.request_timeout)
            except (EtcdError, TimeoutError):
                return False
        return True

    async def _profile(self, path: str, args: dict[str, list[str]]) -> Reply:
        if path.rstrip("/") == "/debug/pprof":
            return 200, [_TEXT], (b"petcd profiles (Python, not Go's pprof formats):\n"
                                  b"  /debug/pprof/profile?seconds=N  cProfile of the event "
                                  b"loop thread, as text\n")
        if path != "/debug/pprof/profile":
            return 404, [_TEXT, _NOSNIFF], b"404 page not found\n"
        try:
            seconds = min(float(args.get("seconds", ["30"])[-1]), _MAX_PROFILE_SECONDS)
        except ValueError:
            return 400, [_TEXT, _NOSNIFF], b"bad seconds\n"
        if self._profiling:
            return 500, [_TEXT, _NOSNIFF], b"a profile is already being taken\n"
        self._profiling = True
        prof = cProfile.Profile()
        try:
            prof.enable()
            await asyncio.sleep(max(seconds, 0.0))
        finally:
            prof.disable()
            self._profiling = False
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(60)
        return 200, [_TEXT], out.getvalue().encode()
