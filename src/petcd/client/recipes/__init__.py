"""Recipes with etcd's clientv3/concurrency (and contrib/recipes) semantics, built on
the blocking `Client`'s KV, Lease and Watch:

- `Session`: a lease kept alive; the other recipes tie their keys to it.
- `Lock`: a fair mutex (creation order); `is_owner()` is a Txn fencing condition.
- `Election`: campaign, proclaim, resign, leader, observe.
- `run_stm` / `STM`: transactions with serializable snapshot isolation, retried on
  conflict.
- `Queue`, `PriorityQueue`, `Barrier`, `DoubleBarrier`.

Each class's docstring has a short example. petcd.client.recipes.aio has the asyncio forms
of all of them (`AsyncSession`, `AsyncLock`, `AsyncElection` with `observe()`, `AsyncSTM`
and `run_stm_async`, `AsyncQueue`, `AsyncPriorityQueue`, `AsyncBarrier`,
`AsyncDoubleBarrier`): same keys, same semantics.
"""

from petcd.client.recipes.barrier import Barrier, DoubleBarrier, TooManyClientsError
from petcd.client.recipes.election import Election, NotLeaderError
from petcd.client.recipes.lock import Lock
from petcd.client.recipes.queue import PriorityQueue, Queue
from petcd.client.recipes.session import Session
from petcd.client.recipes.stm import STM, STMAbortedError, run_stm

__all__ = ["STM", "Barrier", "DoubleBarrier", "Election", "Lock", "NotLeaderError",
           "PriorityQueue", "Queue", "STMAbortedError", "Session", "TooManyClientsError",
           "run_stm"]
