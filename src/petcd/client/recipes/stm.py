"""STM: software transactional memory over etcd, with serializable snapshot isolation.

`STMCore` holds everything but the IO (the read set, the write buffer, the snapshot
revision, the commit's conditions); `STM` (blocking) and `AsyncSTM`
(petcd.client.recipes.aio_stm) only add the reads and the commit."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Literal, TypeVar

from petcd.client.errors import EtcdError
from petcd.client.ops import Bytes, Compare, Delete, Get, ModRevision, Put, Txn, to_bytes
from petcd.client.sync import Client
from petcd.client.types import GetResult, TxnResult

T = TypeVar("T")
Isolation = Literal["serializable_snapshot", "serializable", "repeatable_reads",
                    "read_committed"]


class STMAbortedError(EtcdError):
    """The transaction function gave up (raised), or the retry budget ran out."""


class STMCore:
    """The state of one STM run, without IO (shared by `STM` and `AsyncSTM`)."""

    def __init__(self, isolation: Isolation) -> None:
        self._isolation = isolation
        self._reads: dict[bytes, GetResult] = {}
        self._writes: dict[bytes, Put | Delete] = {}
        self._prefetch: dict[bytes, GetResult] = {}
        self._snapshot_rev = 0

    def _reset(self) -> None:
        self._reads, self._writes = {}, {}

    def put(self, key: Bytes, value: Bytes, *, lease: int = 0) -> None:
        """Buffer a write (applied by the commit, if it succeeds)."""
        self._writes[to_bytes(key)] = Put(key, value, lease=lease)

    def delete(self, key: Bytes) -> None:
        self._writes[to_bytes(key)] = Delete(key)

    def _buffered(self, k: bytes) -> Put | Delete | None:
        return self._writes.get(k)

    def _known(self, k: bytes) -> GetResult | None:
        """The read already made (or prefetched by a failed commit), or None."""
        r = self._reads.get(k)
        if r is None:
            r = self._prefetch.pop(k, None)
            if r is not None:
                self._record(k, r)
        return r

    def _read_args(self) -> dict[str, Any]:
        """How to read a key not read yet: pinned to the snapshot once there is one."""
        pinned = self._isolation.startswith("serializable") and bool(self._reads)
        return {"revision": self._snapshot_rev if pinned else 0,
                "serializable": pinned
                or self._isolation in ("repeatable_reads", "read_committed")}

    def _record(self, k: bytes, r: GetResult) -> None:
        if not self._reads:
            self._snapshot_rev = r.header.revision
        self._reads[k] = r

    def _conflicts(self) -> list[Compare]:
        if self._isolation == "read_committed":
            return []
        cmps = [ModRevision(k) == (r.kvs[0].mod_revision if r.kvs else 0)
                for k, r in self._reads.items()]
        if self._isolation == "serializable_snapshot":
            first = min((r.header.revision for r in self._reads.values()),
                        default=2**63 - 2)
            cmps += [ModRevision(k) < first + 1 for k in self._writes]
        return cmps

    def _commit_txn(self) -> tuple[Txn, list[bytes]]:
        keys = list(self._reads)
        return Txn(self._conflicts(), list(self._writes.values()),
                   [Get(k) for k in keys]), keys

    def _committed(self, keys: list[bytes], r: TxnResult) -> TxnResult | None:
        if r.succeeded:
            return r
        # Lost a race: the next run starts from what the failed commit read.
        self._prefetch = {k: g for k, g in zip(keys, r.responses, strict=True)
                          if isinstance(g, GetResult)}
        self._snapshot_rev = 0
        return None

    @staticmethod
    def _value(w: Put | Delete) -> bytes | None:
        return to_bytes(w.value) if isinstance(w, Put) else None


class STM(STMCore):
    """What a transaction function sees: reads and buffered writes. With the default
    isolation ("serializable_snapshot", etcd's default) every read sees one snapshot
    (the revision of the first read) and the commit fails (and the function runs
    again) if any key read or written changed since."""

    def __init__(self, client: Client, isolation: Isolation) -> None:
        super().__init__(isolation)
        self._client = client

    def get(self, key: Bytes) -> bytes | None:
        """The key's value as of the snapshot (or as written earlier in this run)."""
        k = to_bytes(key)
        w = self._buffered(k)
        if w is not None:
            return self._value(w)
        r = self._fetch(k)
        return r.kvs[0].value if r.kvs else None

    def rev(self, key: Bytes) -> int:
        """The key's mod revision in the snapshot (0: absent)."""
        r = self._fetch(to_bytes(key))
        return r.kvs[0].mod_revision if r.kvs else 0

    def _fetch(self, k: bytes) -> GetResult:
        r = self._known(k)
        if r is None:
            r = self._client.get(k, **self._read_args())
            self._record(k, r)
        return r

    def _commit(self) -> TxnResult | None:
        txn, keys = self._commit_txn()
        return self._committed(keys, self._client.txn(txn))


def run_stm(client: Client, apply: Callable[[STM], T], *,
            isolation: Isolation = "serializable_snapshot",
            prefetch: Iterable[Bytes] = (), max_retries: int | None = None
            ) -> tuple[T, TxnResult]:
    """Run `apply(stm)` and commit its writes atomically, re-running it whenever a
    concurrent change conflicts. Returns (what apply returned, the commit's TxnResult).

        def transfer(stm):
            a, b = int(stm.get("acct/a")), int(stm.get("acct/b"))
            stm.put("acct/a", str(a - 10))
            stm.put("acct/b", str(b + 10))
        run_stm(client, transfer)
    """
    stm = STM(client, isolation)
    pre = list(prefetch)
    attempt = 0
    while True:
        stm._reset()
        for k in pre:
            stm.get(k)
        out = apply(stm)
        committed = stm._commit()
        if committed is not None:
            return out, committed
        attempt += 1
        if max_retries is not None and attempt > max_retries:
            raise STMAbortedError(f"stm: gave up after {attempt} conflicting commits")
