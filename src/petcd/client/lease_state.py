"""The background keep-alive's rules without IO (shared by `KeepAlive` and
`AsyncKeepAlive`): refresh at a third of the TTL; the lease is lost when an answer says
its TTL is <= 0, when the member says it does not exist, or when no refresh succeeded
for a whole TTL (the lease may have expired meanwhile)."""

from __future__ import annotations

import time

from petcd.client.errors import EtcdError, LeaseExpiredError, LeaseNotFoundError
from petcd.client.types import LeaseKeepAlive

RETRY_PAUSE = 0.2  # after a failed refresh


class KeepAliveState:
    def __init__(self, lease_id: int) -> None:
        self.lease_id = lease_id
        self.ttl: int | None = None
        self._last_ok = time.monotonic()

    def call_timeout(self) -> float:
        """The deadline of one refresh: a third of the TTL (at least 1 s)."""
        return max(1.0, (self.ttl or 3) / 3)

    def answered(self, r: LeaseKeepAlive) -> tuple[EtcdError | None, float]:
        """(the loss, or None; the pause before the next refresh)."""
        if r.ttl <= 0:
            return LeaseExpiredError(f"lease {self.lease_id:x} expired or revoked"), 0.0
        self.ttl, self._last_ok = r.ttl, time.monotonic()
        return None, max(0.1, r.ttl / 3)

    def failed(self, e: EtcdError) -> tuple[EtcdError | None, float]:
        if isinstance(e, LeaseNotFoundError):
            return e, 0.0
        ttl = self.ttl
        if ttl is not None and time.monotonic() - self._last_ok > ttl:
            return LeaseExpiredError(
                f"lease {self.lease_id:x} not refreshed for {ttl}s: {e.message}"), 0.0
        return None, RETRY_PAUSE
