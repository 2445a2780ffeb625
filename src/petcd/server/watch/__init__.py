"""The watch hub: every committed change, in revision order, exactly once, to every
watcher whose key or range it touches, from any start revision (etcd's watchable
store and watch streams).

The hub runs on the event loop and is fed by `notify(events, revision)`, once per
applied batch, synchronously at the end of the batch's apply (`commit_listener`), and
hands the responses to the streams' outlets at once when their clients keep up. It
knows nothing of the apply loop; all it reads is the MVCC store's applied state
(`KVStore.read`, on the loop thread).

- A watcher is *synced* when it has been given every event up to the hub's revision:
  each new batch is matched against the synced group and delivered at once.
- An *unsynced* watcher (its start revision is in the past, or its stream was full)
  catches up from the store, one bounded window of history per round, the rounds
  interleaved with everything else on the loop; once it reaches the hub's revision it
  joins the synced group. A start revision below the compacted one ends the watcher
  with `compact_revision` set, as etcd does.
- Each stream's outbound queue is bounded: a watcher whose stream is over its limit
  moves to the unsynced group instead of queueing more, so a slow reader costs store
  reads later, not memory now.

Responses are encoded by hand from the store's serialized KeyValues: an event's wire
bytes are built once per batch and shared by every watcher that receives it.
Ordering on a stream is its queue's order: a watcher's created response, then its
events by revision, then its cancel.
"""

from petcd.server.watch.hub import WatchHub, WatchMetrics
from petcd.server.watch.stream import WatchStream
from petcd.server.watch.watchers import (
    ERR_DUPLICATE_ID,
    ERR_EMPTY_RANGE,
    INVALID_WATCH_ID,
    Watcher,
    prefix_end,
)

__all__ = [
    "ERR_DUPLICATE_ID",
    "ERR_EMPTY_RANGE",
    "INVALID_WATCH_ID",
    "WatchHub",
    "WatchMetrics",
    "WatchStream",
    "Watcher",
    "prefix_end",
]
