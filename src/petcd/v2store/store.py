"""The v2 keys store: a tree of directories and keys with one index that every
successful change moves by one, TTLs, and the watcher hub. Pure and deterministic:
each change is applied from the log in the same order on every member, with times
chosen by the proposer (expirations, the leader's SYNC); the local clock (`now`)
only fills the `ttl` fields of answers. Changes are recorded in `journal` for the
persistence layer (v2store/persist.py)."""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable

from petcd.v2store import errors as E
from petcd.v2store.node import MIN_EXPIRE_NS, Event, Ext, Node, clean, ordered
from petcd.v2store.watch import Hub, Watcher

CLUSTER_PREFIX = "/0"  # etcd keeps its member list here (petcd does not: stays empty)
KEYS_PREFIX = "/1"  # the keys clients see: /v2/keys/a is /1/a
READ_ONLY = frozenset(("/", CLUSTER_PREFIX, KEYS_PREFIX))

STAT_FIELDS = ("getsSuccess", "getsFail", "setsSuccess", "setsFail", "deleteSuccess",
               "deleteFail", "updateSuccess", "updateFail", "createSuccess", "createFail",
               "compareAndSwapSuccess", "compareAndSwapFail", "compareAndDeleteSuccess",
               "compareAndDeleteFail", "expireCount")
_STAT = {"get": "gets", "set": "sets", "delete": "delete", "update": "update",
         "create": "create", "compareAndSwap": "compareAndSwap",
         "compareAndDelete": "compareAndDelete"}


def _compare_cause(n: Node, prev_value: str, prev_index: int) -> str | None:
    """None if the node matches; else etcd's cause text."""
    index_ok = prev_index == 0 or n.modified == prev_index
    value_ok = prev_value == "" or n.value == prev_value
    if index_ok and value_ok:
        return None
    if index_ok:
        return f"[{prev_value} != {n.value}]"
    if value_ok:
        return f"[{prev_index} != {n.modified}]"
    return f"[{prev_value} != {n.value}] [{prev_index} != {n.modified}]"


class Store:
    def __init__(self, clock: Callable[[], int] = time.time_ns) -> None:
        self.clock = clock
        self.hub = Hub()
        self.stats = dict.fromkeys(STAT_FIELDS, 0)
        # etcd's etcd_debugging_store_* counters: ("reads"|"writes", action) -> count
        # (failures included), and watch requests
        self.actions: dict[tuple[str, str], int] = {}
        self.watch_requests = 0
        self.reset()

    def reset(self) -> None:
        """Empty, with the namespaces (a restore loads into this)."""
        self.index = 0
        self.root = Node("/", 0, None, 0, is_dir=True)
        assert self.root.children is not None
        for ns in (CLUSTER_PREFIX, KEYS_PREFIX):
            self.root.children[ns[1:]] = Node(ns, 0, self.root, 0, is_dir=True)
        self._ttl: list[tuple[int, str, int, Node]] = []
        self._seq = 0
        # (path, node) for a created or changed node, (path, None) for a removed one
        # (with everything under it); drained by the persistence layer.
        self.journal: list[tuple[str, Node | None]] = []
        self.new_events: list[Event] = []  # events for the history, also drained there

    # -- reads
    def get(self, path: str, recursive: bool = False, sort: bool = False) -> Event:
        read = ("reads", "getRecursive" if recursive else "get")
        self.actions[read] = self.actions.get(read, 0) + 1
        try:
            n = self._find(path)
        except E.V2Error:
            self._stat("get", False)
            raise
        self._stat("get", True)
        node: Ext = {"key": path}
        now = self.clock()
        if n.children is not None:
            node["dir"] = True
            node["nodes"] = n.list(recursive, sort, now)
        else:
            node["value"] = n.value
        n.add_ttl(node, now)
        node["modifiedIndex"] = n.modified
        node["createdIndex"] = n.created
        if n.children is not None:  # (a key's fields are in Go's order already)
            node = ordered(node)
        return Event("get", node, n.modified, etcd_index=self.index)

    def watch(self, key: str, recursive: bool, stream: bool, since: int) -> Watcher:
        key = clean(key)
        self.watch_requests += 1
        return self.hub.watch(key, recursive, stream, since or self.index + 1, self.index)

    def has_ttl_keys(self) -> bool:
        self._drop_stale_ttl()
        return bool(self._ttl)

    # -- changes
    def create(self, path: str, is_dir: bool, value: str, unique: bool,
               expire: int) -> Event:
        return self._counted("create", lambda: self._create(
            path, is_dir, value, unique, False, expire, "create"), notify=True)

    def set(self, path: str, is_dir: bool, value: str, expire: int,
            refresh: bool = False) -> Event:
        def run() -> Event:
            try:
                prev: Node | None = self._find(path)
            except E.V2Error as err:
                if err.code != E.KEY_NOT_FOUND or refresh:
                    raise
                prev = None
            prev_ext = None
            val = value
            if prev is not None:
                prev_ext = prev.ext(False, False, self.clock())
                if refresh:
                    val = prev.value
            e = self._create(path, is_dir, val, False, True, expire, "set")
            e.prev = prev_ext
            return e
        return self._counted("set", run, notify=not refresh, refresh=refresh)

    def update(self, path: str, value: str, expire: int, refresh: bool = False) -> Event:
        def run() -> Event:
            p = clean(path)
            self._writable(p)
            n = self._find(p)
            if n.is_dir and value:
                raise E.V2Error(E.NOT_FILE, p, self.index)
            nxt = self.index + 1
            val = n.value if refresh else value
            prev = n.ext(False, False, self.clock())
            if not n.is_dir:
                n.value, n.modified = val, nxt
            self._set_expire(n, expire)
            node: Ext = {"key": p, "modifiedIndex": nxt, "createdIndex": n.created}
            if n.is_dir:
                node["dir"] = True
            else:
                node["value"] = val
            n.add_ttl(node, self.clock())
            self.index = nxt
            self.journal.append((n.path, n))
            return Event("update", ordered(node), nxt, prev, nxt)
        return self._counted("update", run, notify=not refresh, refresh=refresh)

    def compare_and_swap(self, path: str, prev_value: str, prev_index: int, value: str,
                         expire: int, refresh: bool = False) -> Event:
        def run() -> Event:
            p = clean(path)
            self._writable(p)
            n = self._matching_file(p, prev_value, prev_index)
            val = n.value if refresh else value
            self.index += 1
            prev = n.ext(False, False, self.clock())
            n.value, n.modified = val, self.index
            self._set_expire(n, expire)
            node: Ext = {"key": p, "value": val, "modifiedIndex": self.index,
                         "createdIndex": n.created}
            n.add_ttl(node, self.clock())
            self.journal.append((n.path, n))
            return Event("compareAndSwap", ordered(node), self.index, prev, self.index)
        return self._counted("compareAndSwap", run, notify=not refresh, refresh=refresh)

    def delete(self, path: str, is_dir: bool, recursive: bool) -> Event:
        def run() -> Event:
            p = clean(path)
            self._writable(p)
            n = self._find(p)
            if n.children is not None:
                if not (is_dir or recursive):
                    raise E.V2Error(E.NOT_FILE, n.path, self.index)
                if n.children and not recursive:
                    raise E.V2Error(E.DIR_NOT_EMPTY, n.path, self.index)
            nxt = self.index + 1
            node: Ext = {"key": p, "modifiedIndex": nxt, "createdIndex": n.created}
            if n.is_dir:
                node["dir"] = True
            e = Event("delete", ordered(node), nxt, n.ext(False, False, self.clock()), nxt)
            self._remove(n, e)
            self.index = nxt
            return e
        return self._counted("delete", run, notify=True)

    def compare_and_delete(self, path: str, prev_value: str, prev_index: int) -> Event:
        def run() -> Event:
            p = clean(path)
            n = self._matching_file(p, prev_value, prev_index)
            self.index += 1
            node: Ext = {"key": p, "modifiedIndex": self.index, "createdIndex": n.created}
            e = Event("compareAndDelete", node, self.index,
                      n.ext(False, False, self.clock()), self.index)
            self._remove(n, e)
            return e
        return self._counted("compareAndDelete", run, notify=True)

    def delete_expired(self, cutoff: int) -> list[Event]:
        """Expire every node whose time is <= cutoff (the leader's SYNC), oldest first."""
        out: list[Event] = []
        while True:
            self._drop_stale_ttl()
            if not self._ttl or self._ttl[0][0] > cutoff:
                return out
            n = heapq.heappop(self._ttl)[3]
            self.index += 1
            node: Ext = {"key": n.path, "modifiedIndex": self.index, "createdIndex": n.created}
            if n.is_dir:
                node["dir"] = True
            e = Event("expire", ordered(node), self.index, n.ext(False, False, self.clock()),
                      self.index)
            self._remove(n, e)
            self.stats["expireCount"] += 1
            self.hub.notify(e)
            self.new_events.append(e)
            out.append(e)

    # -- internals
    def _counted(self, op: str, run: Callable[[], Event], *, notify: bool,
                 refresh: bool = False) -> Event:
        try:
            e = run()
        except E.V2Error:
            self._stat(op, False)
            raise
        self._stat(op, True)
        if refresh:
            e.refresh = True
        if notify:
            self.hub.notify(e)
        else:
            self.hub.add(e)
        self.new_events.append(e)
        return e

    def _stat(self, op: str, ok: bool) -> None:
        if op != "get":
            write = ("writes", op)
            self.actions[write] = self.actions.get(write, 0) + 1
        base = _STAT[op]
        self.stats[base + ("Success" if ok else "Fail")] += 1

    def _writable(self, p: str) -> None:
        if p in READ_ONLY:
            raise E.V2Error(E.ROOT_READ_ONLY, "/", self.index)

    def _matching_file(self, p: str, prev_value: str, prev_index: int) -> Node:
        """The file at p if it passes a compare-and-* test; else etcd's error."""
        n = self._find(p)
        if n.is_dir:
            raise E.V2Error(E.NOT_FILE, p, self.index)
        cause = _compare_cause(n, prev_value, prev_index)
        if cause is not None:
            raise E.V2Error(E.TEST_FAILED, cause, self.index)
        return n

    def _find(self, path: str) -> Node:
        cur = self.root
        for name in clean(path).split("/")[1:]:
            if not name:
                break
            if cur.children is None:
                raise E.V2Error(E.NOT_DIR, cur.path, self.index)
            child = cur.children.get(name)
            if child is None:
                raise E.V2Error(E.KEY_NOT_FOUND, _join(cur.path, name), self.index)
            cur = child
        return cur

    def _create(self, path: str, is_dir: bool, value: str, unique: bool, replace: bool,
                expire: int, action: str) -> Event:
        cur_index, nxt = self.index, self.index + 1
        if unique:
            path += f"/{nxt:020d}"
        p = clean(path)
        if p in READ_ONLY:
            raise E.V2Error(E.ROOT_READ_ONLY, "/", cur_index)
        if expire < MIN_EXPIRE_NS:
            expire = 0
        dir_path, name = p.rsplit("/", 1)
        parent, made = self._walk_dirs(dir_path, nxt)
        node: Ext = {"key": p, "modifiedIndex": nxt, "createdIndex": nxt}
        assert parent.children is not None
        old = parent.children.get(name)
        if old is not None:
            if not replace:
                raise E.V2Error(E.NODE_EXIST, p, cur_index)
            if old.is_dir:
                raise E.V2Error(E.NOT_FILE, p, cur_index)
            self._detach(old)
        if made:  # the missing directories on the way, created only on success
            first = made[0]
            assert first.parent is not None and first.parent.children is not None
            first.parent.children[first.name] = first
            self.journal.extend((d.path, d) for d in made)
        n = Node(p, nxt, parent, expire, value, is_dir)
        parent.children[name] = n
        if is_dir:
            node["dir"] = True
        else:
            node["value"] = value
        if expire:
            self._push_ttl(n)
            n.add_ttl(node, self.clock())
        self.index = nxt
        self.journal.append((p, n))
        return Event(action, ordered(node), nxt, etcd_index=nxt)

    def _walk_dirs(self, dir_path: str, index: int) -> tuple[Node, list[Node]]:
        """The directory at dir_path and the directories to create on the way to it
        (each new one already hangs off the one before; the first is attached by the
        caller once the change succeeds)."""
        cur = self.root
        made: list[Node] = []
        for name in dir_path.split("/")[1:]:
            if not name:
                continue
            assert cur.children is not None
            child = cur.children.get(name)
            if child is None:
                child = Node(_join(cur.path, name), index, cur, 0, is_dir=True)
                if made:
                    cur.children[name] = child
                made.append(child)
            elif child.children is None:
                self.stats["setsFail"] += 1  # etcd counts this failure twice
                raise E.V2Error(E.NOT_DIR, child.path, self.index)
            cur = child
        return cur, made

    def _set_expire(self, n: Node, expire: int) -> None:
        n.expire = expire
        if expire:
            self._push_ttl(n)

    def _push_ttl(self, n: Node) -> None:
        self._seq += 1
        heapq.heappush(self._ttl, (n.expire, n.path, self._seq, n))

    def _drop_stale_ttl(self) -> None:
        heap = self._ttl
        while heap and (heap[0][3].dead or heap[0][3].expire != heap[0][0]):
            heapq.heappop(heap)

    def _detach(self, n: Node) -> None:
        assert n.parent is not None and n.parent.children is not None
        if n.parent.children.get(n.name) is n:
            del n.parent.children[n.name]
        self._mark_dead(n)
        self.journal.append((n.path, None))

    def _mark_dead(self, n: Node) -> None:
        todo = [n]  # (no recursion: a tree may be as deep as a request line is long)
        while todo:
            m = todo.pop()
            m.dead = True
            if m.children:
                todo.extend(m.children.values())

    def _remove(self, n: Node, e: Event) -> None:
        """Remove n (and all under it), telling watchers of each removed path, children
        before their directory."""
        todo: list[tuple[Node, bool]] = [(n, False)]
        while todo:
            m, expanded = todo.pop()
            if expanded or not m.children:
                self.hub.notify_path(e, m.path, True)
                continue
            todo.append((m, True))
            todo.extend((c, False) for c in reversed(list(m.children.values())))
        self._detach(n)


def _join(parent: str, name: str) -> str:
    return parent + name if parent == "/" else parent + "/" + name
