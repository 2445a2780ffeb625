"""The lessor: every lease a member knows, its keys, and (on the leader) when it expires.

Two kinds of state, kept apart on purpose:

- Replicated state: lease ID, granted TTL, the keys attached to it (and, with lease
  checkpoints, the last checkpointed remaining TTL). It changes only by applying log
  entries (grant, revoke, checkpoint, and puts/deletes through the KV store's lease
  hook), inside the batch's LMDB write transaction: the `lease` DB holds ID -> (TTL,
  remaining TTL). Attached keys are not stored twice: they are rebuilt from the KV
  index at startup (`KVStore.lease_attachments`).
- Leader-local state: each lease's expiry time (monotonic clock) and a heap of them.
  Only the primary lessor (the leader's) has finite expiries; everyone else keeps
  leases alive forever until the leader's revocation reaches them through the log.
  Renewals (keep-alives) only move an expiry; they never enter the log.

Everything runs on the event loop thread: applying (which mutates the maps), renewals,
lookups and the expiry scan; so there is no lock (a grant is a dict insert, a heap push
and one LMDB put; a keep-alive a dict lookup and one attribute store).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import struct
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from petcd import errors

if TYPE_CHECKING:
    import lmdb

    from petcd.mvcc.backend import Backend, WriteBatch
    from petcd.mvcc.kvstore import KVStore

log = logging.getLogger("petcd.lease")

LEASE_DB = b"lease"
# etcd's ceiling on a lease's TTL (seconds); larger grants fail with LEASE_TTL_TOO_LARGE.
MAX_LEASE_TTL = 9_000_000_000
FOREVER = math.inf
# What `Lessor.renew` answers when it renewed nothing.
NOT_FOUND, EXPIRED, NOT_PRIMARY = 0, -1, -2

_ID_KEY = struct.Struct(">Q")  # the lease ID's 64 bits, big-endian (as etcd's bucket)
_U64 = 0xFFFF_FFFF_FFFF_FFFF
_RECORD = struct.Struct(">qq")  # granted TTL, checkpointed remaining TTL (0: none)
_MIN_DEAD = 1024  # dead heap entries tolerated whatever the heap's size


def min_lease_ttl(heartbeat_ms: int, election_ms: int) -> int:
    """The shortest TTL a lease gets, as etcd derives it: one and a half election
    timeouts (counted in whole heartbeat ticks), rounded up to whole seconds, so a
    lease cannot expire during a leader election."""
    ticks = max(1, election_ms // max(1, heartbeat_ms))
    return max(1, math.ceil((3 * ticks // 2) * heartbeat_ms / 1000))


def lease_record(ttl: int, remaining_ttl: int = 0) -> bytes:
    """A lease's stored record: granted TTL and checkpointed remaining TTL (0: none)."""
    return _RECORD.pack(ttl, remaining_ttl)


def parse_lease_record(raw: bytes) -> tuple[int, int]:
    ttl, remaining = _RECORD.unpack(raw)
    return ttl, remaining


def id_key(lease_id: int) -> bytes:
    return _ID_KEY.pack(lease_id & _U64)


class Lease:
    __slots__ = ("expiry", "id", "keys", "remaining_ttl", "ttl")

    def __init__(self, lease_id: int, ttl: int, remaining_ttl: int = 0) -> None:
        self.id = lease_id
        self.ttl = ttl
        # Last checkpointed remaining TTL (0: unset, the full TTL applies).
        self.remaining_ttl = remaining_ttl
        self.expiry = FOREVER  # monotonic seconds; finite only on the primary lessor
        # Attached keys; None until the first (an empty set is 216 bytes, and many
        # leases never get a key: sessions, benchmarks).
        self.keys: set[bytes] | None = None

    def add_key(self, key: bytes) -> None:
        if self.keys is None:
            self.keys = {key}
        else:
            self.keys.add(key)

    def sorted_keys(self) -> list[bytes]:
        return sorted(self.keys) if self.keys else []

    def renewal_ttl(self) -> int:
        """The TTL a promotion restarts the lease with."""
        return self.remaining_ttl if self.remaining_ttl > 0 else self.ttl

    def remaining(self, now: float) -> float:
        return self.expiry - now


class Lessor:
    """Implements the KV store's `LeaseHook` (lease_exists / attach / detach)."""

    def __init__(self, backend: Backend, *, min_ttl: int = 1, persist_checkpoints: bool = False,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.backend = backend
        self.min_ttl = max(1, min_ttl)  # (a lease lives at least a second)
        self.persist_checkpoints = persist_checkpoints
        self.clock = clock
        self._leases: dict[int, Lease] = {}
        # (expiry, tie-breaker, lease): at most one live entry per lease; an entry is
        # never later than its lease's expiry (renewals only push expiries out, and the
        # scan re-files an entry that turns out early).
        self._heap: list[tuple[float, int, Lease]] = []
        self._seq = itertools.count()
        # Entries of revoked leases still in the heap: dropped when they come up, or all
        # at once when they are most of it (a revoked lease must not stay referenced
        # until its old expiry, up to its TTL later).
        self._dead = 0
        self._primary = False
        # Counters for /metrics (plain ints: renewals must stay cheap).
        self.granted_count = self.revoked_count = self.renewed_count = 0
        self.expired_count = 0  # revoked because they expired (counted by the driver)
        self.on_grant: Callable[[Lease], None] | None = None
        self._db: lmdb._Database = backend.open_db(LEASE_DB)
        backend.reopen_hooks.append(self._reopen)

    def _reopen(self) -> None:
        self._db = self.backend.open_db(LEASE_DB)

    # -- startup ---------------------------------------------------------------------

    def recover(self, store: KVStore) -> None:
        """Load leases from the `lease` DB and their keys from the KV index (at startup,
        or after the backend was replaced by a snapshot). Leases come back with no
        expiry; promotion gives them one."""
        leases: dict[int, Lease] = {}
        with self.backend.read() as txn:
            for raw_id, raw in txn.cursor(db=self._db):
                lease_id = _ID_KEY.unpack(raw_id)[0]
                if lease_id >= 1 << 63:
                    lease_id -= 1 << 64
                ttl, remaining = _RECORD.unpack(raw)
                leases[lease_id] = Lease(lease_id, max(ttl, self.min_ttl), remaining)
        # (Without leases no key can hold one: spare the scan of every key.)
        for lease_id, key in store.lease_attachments() if leases else ():
            lease = leases.get(lease_id)
            if lease is None:
                log.warning("key %r is attached to lease %x which does not exist", key,
                            lease_id)
                continue
            lease.add_key(key)
        self._leases = leases
        self._heap = []
        self._dead = 0
        if self._primary:
            self._refresh_all(0.0)

    # -- LeaseHook (applying, called by the KV store) ---------------------------------

    def lease_exists(self, lease_id: int) -> bool:
        return lease_id in self._leases

    def attach(self, lease_id: int, key: bytes) -> None:
        lease = self._leases.get(lease_id)
        if lease is None:  # the KV applier checks existence first; never expected
            log.error("attach of %r to missing lease %x", key, lease_id)
            return
        lease.add_key(key)

    def detach(self, lease_id: int, key: bytes) -> None:
        lease = self._leases.get(lease_id)
        if lease is not None and lease.keys:
            lease.keys.discard(key)

    # -- applying log entries (inside `batch`) ----------------------------------------

    def grant(self, batch: WriteBatch, lease_id: int, ttl: int) -> Lease:
        leases = self._leases
        if lease_id == 0:
            raise errors.LEASE_NOT_FOUND()
        if ttl > MAX_LEASE_TTL:
            raise errors.LEASE_TTL_TOO_LARGE()
        if lease_id in leases:
            raise errors.LEASE_EXIST()
        if ttl < self.min_ttl:
            ttl = self.min_ttl
        lease = Lease(lease_id, ttl)
        batch.txn.put(_ID_KEY.pack(lease_id & _U64), _RECORD.pack(ttl, 0), db=self._db)
        leases[lease_id] = lease
        if self._primary:
            lease.expiry = expiry = self.clock() + ttl
            heapq.heappush(self._heap, (expiry, next(self._seq), lease))
        self.granted_count += 1
        if self.on_grant is not None:
            self.on_grant(lease)
        return lease

    def revoke(self, batch: WriteBatch, store: KVStore, lease_id: int) -> None:
        """Delete the lease and every key attached to it, all keys in ONE revision (in
        key order, so every member writes identical records)."""
        lease = self._leases.get(lease_id)
        if lease is None:
            raise errors.LEASE_NOT_FOUND()
        keys = lease.sorted_keys()
        if keys:
            tw = store.write(batch)
            try:
                for key in keys:
                    tw.delete_range(key)
            except BaseException:
                tw.abort()
                raise
            tw.end()  # detaches the keys (the lease still exists here)
        batch.txn.delete(id_key(lease_id), db=self._db)
        del self._leases[lease_id]
        lease.expiry = -FOREVER  # anyone holding it sees it as gone
        if self._primary:  # (its heap entry is dead now)
            self._dead += 1
            if self._dead > _MIN_DEAD and 2 * self._dead > len(self._heap):
                self._drop_dead()
        self.revoked_count += 1

    def checkpoint(self, batch: WriteBatch, lease_id: int, remaining_ttl: int) -> None:
        """Record the leader's view of a lease's remaining TTL, which a new leader
        restarts the lease with (instead of the full TTL)."""
        lease = self._leases.get(lease_id)
        if lease is None:
            return
        lease.remaining_ttl = remaining_ttl
        if self.persist_checkpoints:
            batch.txn.put(id_key(lease_id), _RECORD.pack(lease.ttl, remaining_ttl),
                          db=self._db)

    # -- reads -------------------------------------------------------------------------

    def get(self, lease_id: int) -> Lease | None:
        return self._leases.get(lease_id)

    def keys_of(self, lease: Lease) -> list[bytes]:
        return lease.sorted_keys()

    def leases(self) -> list[Lease]:
        """Every lease, soonest expiry first (as etcd lists them)."""
        out = list(self._leases.values())
        out.sort(key=lambda le: le.expiry)
        return out

    def __len__(self) -> int:
        return len(self._leases)

    # -- the primary (leader) side ------------------------------------------------------

    @property
    def primary(self) -> bool:
        return self._primary

    def promote(self, extend: float) -> None:
        """This member became leader: every lease gets a fresh expiry, now + its TTL (or
        checkpointed remaining TTL) + `extend`, so no lease expires because of the
        failover. If very many leases would expire in the same second, later ones are
        spread out so that revocations stay within the revoke rate."""
        self._primary = True
        self._refresh_all(extend)

    def _refresh_all(self, extend: float) -> None:
        now = self.clock()
        for lease in self._leases.values():
            lease.expiry = now + extend + lease.renewal_ttl()
        self._spread_expiries(now)
        seq = self._seq
        self._heap = [(le.expiry, next(seq), le) for le in self._leases.values()]
        heapq.heapify(self._heap)
        self._dead = 0

    def _drop_dead(self) -> None:
        """Rebuild the heap without the entries of revoked leases."""
        leases = self._leases
        self._heap = [e for e in self._heap if leases.get(e[2].id) is e[2]]
        heapq.heapify(self._heap)
        self._dead = 0

    SPREAD_PER_SECOND = 750  # 3/4 of the default revoke rate, as etcd aims for

    def _spread_expiries(self, now: float) -> None:
        per_second = self.SPREAD_PER_SECOND
        if len(self._leases) <= per_second:
            return
        ordered = sorted(self._leases.values(), key=lambda le: le.expiry)
        # Walk one-second windows; past `per_second` leases in a window, push each
        # lease out so that the pile-up drains at that rate.
        window_start = ordered[0].expiry
        window_end = window_start + 1.0
        count = 0
        for lease in ordered:
            if lease.expiry > window_end:
                window_start = lease.expiry
                window_end = window_start + 1.0
                count = 1
                continue
            count += 1
            if count <= per_second:
                continue
            target = window_start + count / per_second
            if target > lease.expiry:
                lease.expiry = target
            window_end = max(window_end, lease.expiry)

    def demote(self) -> None:
        """No longer leader: nothing expires here until promoted again."""
        self._primary = False
        for lease in self._leases.values():
            lease.expiry = FOREVER
        self._heap = []
        self._dead = 0

    def renew(self, lease_id: int) -> int:
        """Keep-alive on the primary: the lease's expiry moves to now + TTL. Returns the
        TTL; NOT_FOUND (0) if the lease does not exist; EXPIRED (-1) if it is past its
        expiry (being revoked: the caller waits for that); NOT_PRIMARY (-2) if this
        lessor is not the leader's (the caller forwards the renewal)."""
        if not self._primary:
            return NOT_PRIMARY
        lease = self._leases.get(lease_id)
        if lease is None:
            return NOT_FOUND
        now = self.clock()
        if lease.expiry <= now:
            return EXPIRED
        lease.expiry = now + lease.ttl
        self.renewed_count += 1
        return lease.ttl

    def expired(self, limit: int, retry_after: float = 3.0) -> list[Lease]:
        """Up to `limit` leases past their expiry (primary only). Each is re-filed to be
        reported again after `retry_after` seconds, in case its revocation is lost."""
        out: list[Lease] = []
        if not self._primary:
            return out
        now = self.clock()
        heap = self._heap
        leases = self._leases
        while heap and len(out) < limit:
            when, _, lease = heap[0]
            if when > now:
                break
            if leases.get(lease.id) is not lease:  # revoked (maybe granted again)
                heapq.heappop(heap)
                self._dead = max(0, self._dead - 1)
                continue
            if lease.expiry > now:  # renewed since it was filed
                heapq.heapreplace(heap, (lease.expiry, next(self._seq), lease))
                continue
            heapq.heapreplace(heap, (now + retry_after, next(self._seq), lease))
            out.append(lease)
        return out

    def next_deadline(self) -> float:
        """Monotonic time of the earliest heap entry (inf if none)."""
        heap = self._heap
        return heap[0][0] if heap else FOREVER
