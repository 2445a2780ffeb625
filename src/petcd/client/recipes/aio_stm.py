"""`AsyncSTM` and `run_stm_async`: the asyncio form of petcd.client.recipes.stm (same
isolation levels, same conflict rules: the state lives in the shared `STMCore`).

    async def transfer(stm: AsyncSTM) -> None:
        a, b = int(await stm.get("acct/a")), int(await stm.get("acct/b"))
        stm.put("acct/a", str(a - 10))
        stm.put("acct/b", str(b + 10))
    await run_stm_async(client, transfer)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

from petcd.client.aio import AsyncClient
from petcd.client.ops import Bytes, to_bytes
from petcd.client.recipes.stm import Isolation, STMAbortedError, STMCore
from petcd.client.types import GetResult, TxnResult

T = TypeVar("T")


class AsyncSTM(STMCore):
    """What an async transaction function sees; see `STM`."""

    def __init__(self, client: AsyncClient, isolation: Isolation) -> None:
        super().__init__(isolation)
        self._client = client

    async def get(self, key: Bytes) -> bytes | None:
        k = to_bytes(key)
        w = self._buffered(k)
        if w is not None:
            return self._value(w)
        r = await self._fetch(k)
        return r.kvs[0].value if r.kvs else None

    async def rev(self, key: Bytes) -> int:
        r = await self._fetch(to_bytes(key))
        return r.kvs[0].mod_revision if r.kvs else 0

    async def _fetch(self, k: bytes) -> GetResult:
        r = self._known(k)
        if r is None:
            r = await self._client.get(k, **self._read_args())
            self._record(k, r)
        return r

    async def _commit(self) -> TxnResult | None:
        txn, keys = self._commit_txn()
        return self._committed(keys, await self._client.txn(txn))


async def run_stm_async(client: AsyncClient, apply: Callable[[AsyncSTM], Awaitable[T]], *,
                        isolation: Isolation = "serializable_snapshot",
                        prefetch: Iterable[Bytes] = (), max_retries: int | None = None
                        ) -> tuple[T, TxnResult]:
    """Run `await apply(stm)` and commit its writes atomically, re-running it on
    conflict; see `run_stm`."""
    stm = AsyncSTM(client, isolation)
    pre = list(prefetch)
    attempt = 0
    while True:
        stm._reset()
        for k in pre:
            await stm.get(k)
        out = await apply(stm)
        committed = await stm._commit()
        if committed is not None:
            return out, committed
        attempt += 1
        if max_retries is not None and attempt > max_retries:
            raise STMAbortedError(f"stm: gave up after {attempt} conflicting commits")
