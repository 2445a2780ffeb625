"""Election: leader election with etcd's concurrency.Election semantics."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from petcd.client.errors import DeadlineExceededError, EtcdError
from petcd.client.ops import Bytes, Compare, CreateRevision, Delete, Put, Txn, to_bytes
from petcd.client.recipes._claim import claim, place
from petcd.client.recipes._wait import deadline_of, wait_deletes
from petcd.client.recipes.session import Session
from petcd.client.types import EventType, KeyValue


class NotLeaderError(EtcdError):
    """proclaim/resign by a candidate that is not (or no longer) the leader."""


class Election:
    """Candidates put `name/<lease>` under their session's lease; the oldest key is the
    leader and its value the leader's proclamation. A crashed leader's key expires with
    its session, and the next candidate in creation order takes over.

        with Session(client, ttl=5) as s:
            e = Election(s, "service/leader")
            e.campaign("node-1")          # blocks until elected
            e.proclaim("node-1 at v2")    # change the announced value
            e.resign()

        for kv in Election(session, "service/leader").observe():
            print("leader is now", kv.value)
    """

    def __init__(self, session: Session, name: str) -> None:
        self.session = session
        self.client = session.client
        self.prefix = name + "/"
        self.key = ""
        self.revision = -1

    def campaign(self, value: Bytes, timeout: float | None = None) -> None:
        """Become leader (blocks until then; DeadlineExceededError after `timeout`, and
        the candidacy is withdrawn)."""
        deadline = deadline_of(timeout)
        self.key, txn = claim(self.prefix, self.session.lease, value)
        self.revision, before = place(self.client.txn(txn))
        if before is not None and before.value != to_bytes(value):
            self.proclaim(value)
        try:
            wait_deletes(self.client, self.prefix, self.revision - 1, deadline)
        except (DeadlineExceededError, EtcdError):
            with contextlib.suppress(EtcdError):
                self.resign()
            raise

    def is_leader(self) -> Compare:
        """A Txn condition that holds only while this candidate leads."""
        return CreateRevision(self.key or "\0") == self.revision

    def proclaim(self, value: Bytes) -> None:
        """Announce a new value without a new election."""
        if not self.key:
            raise NotLeaderError("election: not leader")
        r = self.client.txn(Txn().when(self.is_leader())
                            .then(Put(self.key, value, lease=self.session.lease)))
        if not r.succeeded:
            self.key = ""
            raise NotLeaderError("election: not leader")

    def resign(self) -> None:
        """Give up leadership (or candidacy)."""
        if not self.key:
            return
        self.client.txn(Txn().when(self.is_leader()).then(Delete(self.key)))
        self.key, self.revision = "", -1

    def leader(self) -> KeyValue | None:
        """The current leader's key and value (None: no leader)."""
        r = self.client.get(self.prefix, prefix=True, sort_target="create",
                            sort_order="ascend", limit=1)
        return r.kvs[0] if r.kvs else None

    def observe(self) -> Iterator[KeyValue]:
        """Every leader and every proclamation, in order, as they happen (a generator;
        close it to stop)."""
        while True:
            r = self.client.get(self.prefix, prefix=True, sort_target="create",
                                sort_order="ascend", limit=1)
            rev = r.header.revision + 1
            if not r.kvs:  # no leader yet: wait for the first candidate
                with self.client.watch(self.prefix, prefix=True, start_revision=rev) as w:
                    first = next(e for e in w.events() if e.type is EventType.PUT)
                leader = first.kv
                rev = first.kv.mod_revision + 1
            else:
                leader = r.kvs[0]
            yield leader
            with self.client.watch(leader.key, start_revision=rev) as w:
                for e in w.events():
                    if e.type is EventType.DELETE:
                        break
                    yield e.kv
