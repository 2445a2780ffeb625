"""Per-connection abuse accounting, sans-IO (the caller passes the clock): the ping
policy grpc-go enforces (--grpc-keepalive-min-time) and a budget of reset streams
(HTTP/2 Rapid Reset, CVE-2023-44487). Both answer "still within budget?"; the
connection sends GOAWAY ENHANCE_YOUR_CALM when one says no."""

from __future__ import annotations

# grpc-go's server allows this many pings that come too early; the next one ends the
# connection with GOAWAY ENHANCE_YOUR_CALM "too_many_pings".
MAX_PING_STRIKES = 2
# Without open streams (and without permit-without-stream, as etcd configures it) a
# ping is early unless this long after the previous one (grpc-go's two hours).
IDLE_PING_INTERVAL = 2 * 3600.0


class PingPolicy:
    """grpc-go's keepalive enforcement: a ping sooner than min_time after the previous
    one (any ping while no stream is open, as etcd does not permit pings without
    streams) is a strike; sending the client HEADERS or DATA forgives past pings."""

    __slots__ = ("_last", "_min_time", "_strikes", "data_sent")

    def __init__(self, min_time: float) -> None:
        self._min_time = min_time
        self._last: float | None = None
        self._strikes = 0
        self.data_sent = False  # set by the connection whenever it sends HEADERS/DATA

    def allow(self, now: float, streams_open: bool) -> bool:
        if self.data_sent:
            self.data_sent = False
            self._strikes = 0
            self._last = None
        last, self._last = self._last, now
        if last is not None:
            interval = self._min_time if streams_open else IDLE_PING_INTERVAL
            if now - last < interval:
                self._strikes += 1
        return self._strikes <= MAX_PING_STRIKES


class ResetBudget:
    """A token bucket of streams the client may cancel (RST_STREAM on a call still in
    progress) or have refused: `burst` at once, refilled at `rate` per second."""

    __slots__ = ("_burst", "_last", "_rate", "_tokens")

    def __init__(self, burst: int, rate: float) -> None:
        self._burst = float(burst)
        self._rate = rate
        self._tokens = float(burst)
        self._last: float | None = None

    def spend(self, now: float) -> bool:
        if self._last is not None:
            self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
        self._tokens -= 1.0
        return self._tokens >= 0.0
