"""Lock: a distributed mutex, fair by creation revision (etcd's concurrency.Mutex)."""

from __future__ import annotations

import contextlib

from petcd.client.errors import DeadlineExceededError, EtcdError
from petcd.client.ops import Compare, CreateRevision, Txn
from petcd.client.recipes._claim import claim, holds, place
from petcd.client.recipes._wait import deadline_of, wait_deletes
from petcd.client.recipes.session import Session
from petcd.client.types import Header


class Lock:
    """A mutex on `name`: each contender puts `name/<lease>` under its session's lease;
    the key created first holds the lock, the others wait, in creation order, for the
    keys before theirs to go. A holder that crashes loses the lock when its lease
    expires.

        with Session(client, ttl=10) as s:
            lock = Lock(s, "jobs/lock")
            with lock:
                # fencing: the write happens only while we still hold the lock
                client.txn(Txn().when(lock.is_owner()).then(Put("jobs/state", "done")))

    The same key layout as etcd's concurrency.Mutex, so Go and Python clients exclude
    each other.
    """

    def __init__(self, session: Session, name: str) -> None:
        self.session = session
        self.client = session.client
        self.prefix = name + "/"
        self.key = ""
        self.revision = -1
        self.header: Header | None = None

    def acquire(self, timeout: float | None = None) -> bool:
        """Wait for the lock (up to `timeout` seconds: False when it passed)."""
        deadline = deadline_of(timeout)
        self.key, txn = claim(self.prefix, self.session.lease, "", with_holder=True)
        r = self.client.txn(txn)
        # (queued before, or holding it: this session keeps its place)
        self.revision, _ = place(r)
        if holds(r, self.revision):
            self.header = r.header
            return True
        try:
            self.header = wait_deletes(self.client, self.prefix, self.revision - 1, deadline)
        except DeadlineExceededError:
            self._abandon()
            return False
        except BaseException:
            self._abandon()
            raise
        return True

    def _abandon(self) -> None:
        with contextlib.suppress(EtcdError):
            self.client.delete(self.key)
        self.key, self.revision = "", -1

    def release(self) -> None:
        self.client.delete(self.key)
        self.key, self.revision = "", -1

    def is_owner(self) -> Compare:
        """A Txn condition that holds only while this lock is held (a fencing token)."""
        return CreateRevision(self.key or "\0") == self.revision

    def is_acquired(self) -> bool:
        if not self.key:
            return False
        return self.client.txn(Txn().when(self.is_owner())).succeeded

    def __enter__(self) -> Lock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
