"""Watchers of the v2 store and its event history (the last HISTORY events), as etcd's
watcher hub: a watch first looks for its event in the history, then waits for the
next matching event. Pure: a watcher calls `wake` when it has an event to deliver."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from petcd.v2store import errors as E
from petcd.v2store.node import Event, clean

HISTORY = 1000  # events kept for waitIndex (etcd's window)
WATCHER_QUEUE = 100  # events a stream watcher may hold undelivered before it is dropped


class History:
    """The last `capacity` events, whose indexes are consecutive."""

    def __init__(self, capacity: int = HISTORY) -> None:
        self.events: deque[Event] = deque(maxlen=capacity)
        self.start = 0  # index of the oldest event kept (0: none yet)
        self.last = 0

    def add(self, e: Event) -> None:
        self.events.append(e)
        self.last = e.index
        self.start = self.events[0].index

    def scan(self, key: str, recursive: bool, index: int) -> Event | None:
        """The first event at or after `index` that a watch of `key` sees; None if there
        is none yet. Raises EVENT_INDEX_CLEARED if `index` is older than the window."""
        if index < self.start:
            raise E.V2Error(E.EVENT_INDEX_CLEARED,
                            f"the requested history has been cleared [{self.start}/{index}]")
        if index > self.last:
            return None
        prefix = clean(key)
        if not prefix.endswith("/"):
            prefix += "/"
        for i in range(index - self.start, len(self.events)):
            e = self.events[i]
            if e.refresh:
                continue
            k = e.key
            if k == key or (recursive and k.startswith(prefix)):
                return e
            if e.action in ("delete", "expire") and e.prev is not None and \
                    e.prev.get("dir") and key.startswith(e.prev["key"]):
                return e
        return None


class Watcher:
    """One watch. `events` holds what is to be delivered; `wake` (set by whoever waits)
    is called when one arrives. A non-stream watcher is done after one event."""

    __slots__ = (
        "_hub",
        "events",
        "key",
        "recursive",
        "removed",
        "since",
        "start_index",
        "stream",
        "wake",
    )

    def __init__(self, hub: Hub | None, key: str, recursive: bool, stream: bool, since: int,
                 start_index: int) -> None:
        self._hub = hub
        self.key = key
        self.recursive = recursive
        self.stream = stream
        self.since = since
        self.start_index = start_index  # the store index when the watch began
        self.events: deque[Event] = deque()
        self.removed = False
        self.wake: Callable[[], None] | None = None

    def offer(self, e: Event, original: bool, deleted: bool) -> bool:
        if not (self.recursive or original or deleted) or e.index < self.since:
            return False
        if len(self.events) >= WATCHER_QUEUE:
            self.remove()  # a stream reader this far behind is dropped, as etcd does
        else:
            self.events.append(e)
        if self.wake is not None:
            self.wake()
        return True

    def remove(self) -> None:
        if self.removed:
            return
        self.removed = True
        if self._hub is not None:
            self._hub.discard(self)


class Hub:
    def __init__(self, capacity: int = HISTORY) -> None:
        self.history = History(capacity)
        self._watchers: dict[str, dict[int, Watcher]] = {}
        self.count = 0

    def watch(self, key: str, recursive: bool, stream: bool, since: int,
              store_index: int) -> Watcher:
        try:
            found = self.history.scan(key, recursive, since)
        except E.V2Error as err:
            err.index = store_index
            raise
        if found is not None:
            w = Watcher(None, key, recursive, stream, since, store_index)
            w.events.append(Event(found.action, found.node, found.index, found.prev,
                                  store_index, found.refresh))
            w.removed = True  # never registered: it has its one event
            return w
        w = Watcher(self, key, recursive, stream, since, store_index)
        self._watchers.setdefault(key, {})[id(w)] = w
        self.count += 1
        return w

    def discard(self, w: Watcher) -> None:
        group = self._watchers.get(w.key)
        if group is not None and group.pop(id(w), None) is not None:
            self.count -= 1
            if not group:
                del self._watchers[w.key]

    def add(self, e: Event) -> None:
        """Into the history only (a refresh: watchers are not told)."""
        self.history.add(e)

    def notify(self, e: Event) -> None:
        self.history.add(e)
        if not self._watchers:
            return
        path = ""
        for segment in e.key.split("/"):
            path = clean(path + "/" + segment)
            self.notify_path(e, path, False)

    def notify_path(self, e: Event, path: str, deleted: bool) -> None:
        group = self._watchers.get(path)
        if not group:
            return
        original = e.key == path
        if not original and _hidden(path, e.key):
            return
        for w in list(group.values()):
            if w.offer(e, original, deleted) and not w.stream:
                w.remove()


def _hidden(watch_path: str, key: str) -> bool:
    """Whether `key` lies under a hidden (_name) node below `watch_path`."""
    if len(watch_path) > len(key):
        return False
    return "/_" in clean("/" + key[len(watch_path):])
