"""Append-request counts and recent rates: what etcd's v2 `/v2/stats/self` shows
(`sendAppendRequestCnt`, `recvAppendRequestCnt`, and the packet and byte rates over
the last 200 append messages, zero once the newest is a second old)."""

from __future__ import annotations

import time
from collections import deque

_WINDOW = 200  # messages the rates are taken over, as etcd
_STALE = 1.0  # seconds after the newest message when the rates read zero


class _Recent:
    __slots__ = ("_bytes", "_items")

    def __init__(self) -> None:
        self._items: deque[tuple[float, int]] = deque(maxlen=_WINDOW)
        self._bytes = 0

    def add(self, size: int) -> None:
        items = self._items
        if len(items) == _WINDOW:
            self._bytes -= items[0][1]
        items.append((time.monotonic(), size))
        self._bytes += size

    def rates(self) -> tuple[float, float]:
        """(messages/s, bytes/s); zero without a span to measure over."""
        items = self._items
        if not items:
            return 0.0, 0.0
        if time.monotonic() - items[-1][0] > _STALE:
            items.clear()
            self._bytes = 0
            return 0.0, 0.0
        span = items[-1][0] - items[0][0]
        if span <= 0:
            return 0.0, 0.0
        return len(items) / span, self._bytes / span


class AppendStats:
    """Counted by the driver's peer side: append messages sent and received."""

    __slots__ = ("_recv", "_send", "received", "sent")

    def __init__(self) -> None:
        self.sent = 0
        self.received = 0
        self._send = _Recent()
        self._recv = _Recent()

    def on_send(self, size: int) -> None:
        self.sent += 1
        self._send.add(size)

    def on_receive(self, size: int) -> None:
        self.received += 1
        self._recv.add(size)

    def send_rates(self) -> tuple[float, float]:
        return self._send.rates()

    def receive_rates(self) -> tuple[float, float]:
        return self._recv.rates()
