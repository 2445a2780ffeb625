"""etcd's v2 keys store (served behind --enable-v2): the tree, its index, TTLs, the
watcher hub and event history (store.py, node.py, watch.py), etcd's v2 errors
(errors.py) and the records it persists as (codec.py). Pure: no IO, no asyncio; the
server applies log entries to it and the API renders its events."""

from petcd.v2store.errors import V2Error
from petcd.v2store.node import Event
from petcd.v2store.store import KEYS_PREFIX, Store
from petcd.v2store.watch import Watcher

__all__ = ["KEYS_PREFIX", "Event", "Store", "V2Error", "Watcher"]
