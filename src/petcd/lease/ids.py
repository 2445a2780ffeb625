"""Lease IDs chosen by the server when the client leaves LeaseGrantRequest.ID at 0.

Same shape as etcd's request ID generator, so IDs look alike: the top 16 bits come
from the member ID, the next 40 from the wall clock in milliseconds at startup, the
low 8 are a counter; each new ID adds one to the low 48 bits (a carry into the
clock part is fine: it only makes the start time look later). Kept to 63 bits so
IDs are positive int64. Unique per member across restarts unless a member issues
more than 256 IDs per millisecond of downtime, and unique across members by prefix.
"""

from __future__ import annotations

import itertools
import time

_LOW_BITS = 48
_LOW_MASK = (1 << _LOW_BITS) - 1
_CLOCK_MASK = (1 << 40) - 1
_POSITIVE = (1 << 63) - 1


class LeaseIdGenerator:
    def __init__(self, member_id: int, now_ms: int | None = None) -> None:
        if now_ms is None:
            now_ms = time.time_ns() // 1_000_000
        self._prefix = (member_id & 0xFFFF) << _LOW_BITS
        self._counter = itertools.count(((now_ms & _CLOCK_MASK) << 8) + 1)

    def next(self) -> int:
        lease_id = (self._prefix | (next(self._counter) & _LOW_MASK)) & _POSITIVE
        return lease_id or self.next()  # (0 is "no lease": skipped)
