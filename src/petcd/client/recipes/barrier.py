"""Barrier and DoubleBarrier (etcd's contrib/recipes semantics)."""

from __future__ import annotations

import time

from petcd.client.errors import EtcdError
from petcd.client.ops import Put, Txn, Version
from petcd.client.recipes._wait import deadline_of, wait_event
from petcd.client.recipes.session import Session
from petcd.client.sync import Client
from petcd.client.types import EventType


class Barrier:
    """Holds everyone who waits on it until it is released.

        b = Barrier(client, "deploy/gate")
        b.hold()          # coordinator
        b.wait()          # workers block here...
        b.release()       # ...until this
    """

    def __init__(self, client: Client, name: str) -> None:
        self.client = client
        self.key = name

    def hold(self) -> bool:
        """Raise the barrier (False if it was already up)."""
        return self.client.txn(Txn().when(Version(self.key) == 0)
                               .then(Put(self.key, ""))).succeeded

    def release(self) -> None:
        self.client.delete(self.key)

    def wait(self, timeout: float | None = None) -> None:
        """Return once the barrier is down (at once if it is not up)."""
        r = self.client.get(self.key)
        if not r.kvs:
            return
        wait_event(self.client, self.key, r.header.revision + 1, (EventType.DELETE,),
                   deadline_of(timeout))


class TooManyClientsError(EtcdError):
    """More than `count` participants entered a DoubleBarrier."""


class DoubleBarrier:
    """`count` participants enter together and leave together: `enter()` blocks until
    all `count` have entered, `leave()` until all have left. Each participant's key is
    tied to its session, so a crashed one does not block the others forever.

        with Session(client, ttl=10) as s:
            b = DoubleBarrier(s, "compute/round-1", 3)
            b.enter(); do_work(); b.leave()
    """

    def __init__(self, session: Session, name: str, count: int) -> None:
        self.session = session
        self.client = session.client
        self.name = name
        self.count = count
        self.my_key = ""
        self.my_rev = 0

    def enter(self, timeout: float | None = None) -> None:
        waiters = self.name + "/waiters/"
        while True:
            key = f"{waiters}{time.time_ns()}"
            r = self.client.txn(Txn().when(Version(key) == 0)
                                .then(Put(key, "", lease=self.session.lease)))
            if r.succeeded:
                self.my_key, self.my_rev = key, r.header.revision
                break
        n = self.client.get(waiters, prefix=True, count_only=True).count
        if n > self.count:
            raise TooManyClientsError(f"double barrier: more than {self.count} entered")
        if n == self.count:
            self.client.put(self.name + "/ready", "")
            return
        wait_event(self.client, self.name + "/ready", self.my_rev, (EventType.PUT,),
                   deadline_of(timeout))

    def leave(self, timeout: float | None = None) -> None:
        deadline = deadline_of(timeout)
        waiters = self.name + "/waiters/"
        while True:
            r = self.client.get(waiters, prefix=True)
            if not r.kvs:
                return
            lowest = min(r.kvs, key=lambda kv: kv.mod_revision)
            highest = max(r.kvs, key=lambda kv: kv.mod_revision)
            me = self.my_key.encode()
            if len(r.kvs) == 1 and r.kvs[0].key == me:
                # the last one out lowers the ready flag for the next round
                self.client.delete(self.name + "/ready")
                self.client.delete(self.my_key)
                return
            if lowest.key == me:
                # wait for the newest to go, then look again
                wait_event(self.client, highest.key, r.header.revision + 1,
                           (EventType.DELETE,), deadline)
                continue
            self.client.delete(self.my_key)
            wait_event(self.client, lowest.key, r.header.revision + 1, (EventType.DELETE,),
                       deadline)
            return
