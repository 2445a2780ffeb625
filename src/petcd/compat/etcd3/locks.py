"""python-etcd3's `etcd3.locks.Lock`: the same keys (/locks/<name>, a UUID value, a
lease of `ttl`), so it excludes python-etcd3 processes using the same name."""

from __future__ import annotations

import time
import uuid
from typing import Any

from petcd.client.errors import DeadlineExceededError
from petcd.client.recipes._wait import wait_event
from petcd.client.types import EventType


class Lock:
    lock_prefix = "/locks/"

    def __init__(self, name: str, ttl: int = 60, etcd_client: Any = None) -> None:
        self.name = name
        self.ttl = ttl
        if etcd_client is not None:
            self.etcd_client = etcd_client
        self.key = self.lock_prefix + self.name
        self.lease: Any = None
        self.uuid = uuid.uuid1().bytes
        self.revision = 0

    def acquire(self, timeout: float | None = 10) -> bool:
        """True once held; False if `timeout` seconds (None: forever) passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._try_acquire():
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            try:
                wait_event(self.etcd_client.petcd, self.key, self.revision + 1,
                           (EventType.DELETE,), deadline)
            except DeadlineExceededError:
                return False

    def _try_acquire(self) -> bool:
        c = self.etcd_client
        self.lease = c.lease(self.ttl)
        ok, responses = c.transaction(
            compare=[c.transactions.create(self.key) == 0],
            success=[c.transactions.put(self.key, self.uuid, lease=self.lease)],
            failure=[c.transactions.get(self.key)])
        if ok:
            self.revision = responses[0].response_put.header.revision
            return True
        self.lease.revoke()
        self.lease = None
        if responses[0]:
            self.revision = responses[0][0][1].mod_revision
        return False

    def release(self) -> bool:
        c = self.etcd_client
        ok, _ = c.transaction(compare=[c.transactions.value(self.key) == self.uuid],
                              success=[c.transactions.delete(self.key)], failure=[])
        return bool(ok)

    def refresh(self) -> Any:
        if self.lease is not None:
            return self.lease.refresh()
        raise ValueError("No lease associated with this lock - have you acquired the "
                         "lock yet?")

    def is_acquired(self) -> bool:
        value, _ = self.etcd_client.get(self.key)
        return value is not None and bool(value == self.uuid)

    def __enter__(self) -> Lock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
