"""Session: a lease kept alive for as long as the session lives."""

from __future__ import annotations

import contextlib

from petcd.client.errors import EtcdError
from petcd.client.streams import KeepAlive
from petcd.client.sync import Client


class Session:
    """A lease with a background keep-alive. Locks and elections tie their keys to it, so
    a crashed holder's keys vanish after `ttl` seconds.

        with Session(client, ttl=10) as s:
            ...                      # s.lease is kept alive
        # closing revokes the lease: the session's keys are gone at once

    `done` becomes true when the lease is lost (expired, revoked, unreachable for a TTL).
    """

    def __init__(self, client: Client, ttl: int = 60, *, lease_id: int = 0) -> None:
        self.client = client
        self.ttl = ttl
        self.lease = lease_id or client.lease_grant(ttl).id
        self._keepalive: KeepAlive = client.keep_alive(self.lease)

    @property
    def done(self) -> bool:
        return self._keepalive.lost is not None

    def wait_done(self, timeout: float | None = None) -> EtcdError | None:
        """Block until the lease is lost (or timeout): the reason, or None."""
        return self._keepalive.wait_lost(timeout)

    def orphan(self) -> None:
        """Stop refreshing without revoking: the keys expire after the TTL."""
        self._keepalive.stop()

    def close(self) -> None:
        """Stop refreshing and revoke the lease (its keys are deleted now)."""
        self._keepalive.stop()
        with contextlib.suppress(EtcdError):
            self.client.lease_revoke(self.lease)

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
