"""Nodes of the v2 tree and their external form (etcd's NodeExtern, as a dict in the
order Go's encoder writes its fields), events, and Go's path and time formats."""

from __future__ import annotations

import datetime
from json.encoder import encode_basestring
from typing import Any

# A node as clients see it: key, value | dir, expiration (Unix ns here; RFC 3339 when
# rendered), ttl, nodes, modifiedIndex, createdIndex. Empty fields are left out.
Ext = dict[str, Any]

SECOND = 1_000_000_000
# Expiration times before this are taken as "no TTL" (as etcd: a zero time from JSON).
MIN_EXPIRE_NS = 946_684_800 * SECOND  # 2000-01-01T00:00:00Z


class Node:
    """A key (children is None) or a directory. `expire` is Unix ns, 0 = permanent."""

    __slots__ = ("children", "created", "dead", "expire", "modified", "parent", "path",
                 "value")

    def __init__(self, path: str, created: int, parent: Node | None, expire: int,
                 value: str = "", is_dir: bool = False) -> None:
        self.path = path
        self.created = created
        self.modified = created
        self.parent = parent
        self.expire = expire
        self.value = value
        self.children: dict[str, Node] | None = {} if is_dir else None
        self.dead = False  # removed from the tree (stale TTL heap entries check this)

    @property
    def is_dir(self) -> bool:
        return self.children is not None

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[1]

    @property
    def hidden(self) -> bool:
        return self.name.startswith("_")

    def ext(self, recursive: bool, sort: bool, now: int) -> Ext:
        """etcd's Repr: a directory lists its children only when recursive."""
        out = self._shallow(now)
        if recursive and self.children is not None:
            out["nodes"] = self.list(True, sort, now)
        return out

    def _shallow(self, now: int) -> Ext:
        out: Ext = {"key": self.path}
        if self.children is None:
            out["value"] = self.value
        else:
            out["dir"] = True
        self.add_ttl(out, now)
        out["modifiedIndex"] = self.modified
        out["createdIndex"] = self.created
        return out

    def list(self, recursive: bool, sort: bool, now: int) -> list[Ext]:
        """The children that are not hidden (with theirs when recursive). No recursion:
        a tree may be as deep as a request line is long."""
        top: list[Ext] = []
        todo: list[tuple[Node, list[Ext]]] = [(self, top)]
        while todo:
            n, into = todo.pop()
            assert n.children is not None
            for c in n.children.values():
                if c.hidden:
                    continue
                e = c._shallow(now)
                into.append(e)
                if recursive and c.children is not None:
                    e["nodes"] = []
                    todo.append((c, e["nodes"]))
            if sort:
                into.sort(key=lambda x: x["key"])
        return top

    def add_ttl(self, out: Ext, now: int) -> None:
        if self.expire:
            out["expiration"] = self.expire
            out["ttl"] = ttl_of(self.expire, now)


def ttl_of(expire: int, now: int) -> int:
    """Seconds left, rounded up (Go: truncate toward zero, +1 if a positive remainder)."""
    left = expire - now
    q = abs(left) // SECOND * (1 if left >= 0 else -1)
    if left - q * SECOND > 0:
        q += 1
    return q


def ordered(e: Ext) -> Ext:
    """The fields of an Ext in Go's order (builders may set them in any order)."""
    return {k: e[k] for k in _ORDER if k in e}


_ORDER = ("key", "value", "dir", "expiration", "ttl", "nodes", "modifiedIndex", "createdIndex")


class Event:
    __slots__ = ("action", "etcd_index", "index", "node", "prev", "refresh")

    def __init__(self, action: str, node: Ext, index: int, prev: Ext | None = None,
                 etcd_index: int = 0, refresh: bool = False) -> None:
        self.action = action
        self.node = node
        self.index = index  # the event's modifiedIndex
        self.prev = prev
        self.etcd_index = etcd_index
        self.refresh = refresh

    @property
    def key(self) -> str:
        return str(self.node["key"])

    @property
    def created(self) -> bool:
        """A 201 answer: a create, or a set of a key that did not exist."""
        return self.action == "create" or (self.action == "set" and self.prev is None)


def clean(path: str) -> str:
    """Go's path.Clean of a rooted path (path.Join("/", p))."""
    if path[:1] == "/" and "//" not in path and "/." not in path and (
            len(path) == 1 or path[-1] != "/"):
        return path  # already clean (the common case: a few C scans)
    out: list[str] = []
    for part in path.split("/"):
        if part == "" or part == ".":
            continue
        if part == "..":
            if out:
                out.pop()
            continue
        out.append(part)
    return "/" + "/".join(out)


def rfc3339(ns: int) -> str:
    """Go's time.Time JSON form in UTC: RFC 3339 with nanoseconds, trailing zeros cut."""
    secs, frac = divmod(ns, SECOND)
    base = datetime.datetime.fromtimestamp(secs, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if frac:
        base += "." + f"{frac:09d}".rstrip("0")
    return base + "Z"


def render(e: Ext | None, prefix: str) -> Ext | None:
    """A node for JSON: the store prefix cut from keys, empty fields left out."""
    if e is None:
        return None
    out: Ext = {}
    key = e.get("key", "")
    if key.startswith(prefix):
        key = key[len(prefix):]
    if key:
        out["key"] = key
    if "value" in e:
        out["value"] = e["value"]
    if e.get("dir"):
        out["dir"] = True
    exp = e.get("expiration")
    if exp:
        out["expiration"] = rfc3339(exp)
    if e.get("ttl"):
        out["ttl"] = e["ttl"]
    nodes = e.get("nodes")
    if nodes:
        out["nodes"] = [render(n, prefix) for n in nodes]
    if e.get("modifiedIndex"):
        out["modifiedIndex"] = e["modifiedIndex"]
    if e.get("createdIndex"):
        out["createdIndex"] = e["createdIndex"]
    return out


def render_event(ev: Event, prefix: str, *, no_value: bool = False) -> Ext:
    out: Ext = {"action": ev.action}
    if not no_value:
        node = render(ev.node, prefix)
        if node is not None:
            out["node"] = node
        prev = render(ev.prev, prefix)
        if prev is not None:
            out["prevNode"] = prev
    return out  # (etcd's answers never carry "refresh": its copy of the event drops it)


def event_json(ev: Event, prefix: str, *, no_value: bool = False) -> str | None:
    """render_event's JSON text (compact, as json.dumps writes it, not yet Go-escaped)
    written directly, without the dicts; None for an event with a listing (render_event
    then)."""
    parts = ['{"action":', encode_basestring(ev.action)]
    if not no_value:
        parts.append(',"node":')
        if not _node_json(ev.node, prefix, parts):
            return None
        if ev.prev is not None:
            parts.append(',"prevNode":')
            if not _node_json(ev.prev, prefix, parts):
                return None
    parts.append("}")
    return "".join(parts)


def _node_json(e: Ext, prefix: str, parts: list[str]) -> bool:
    """render(e) as JSON onto parts; False if it has a listing (or an unexpected type)."""
    if e.get("nodes"):
        return False
    fields: list[str] = []
    key = e.get("key", "")
    if key.startswith(prefix):
        key = key[len(prefix):]
    if key:
        fields.append('"key":' + encode_basestring(key))
    if "value" in e:
        value = e["value"]
        if type(value) is not str:
            return False
        fields.append('"value":' + encode_basestring(value))
    if e.get("dir"):
        fields.append('"dir":true')
    exp = e.get("expiration")
    if exp:
        fields.append('"expiration":"' + rfc3339(exp) + '"')
    for name in ("ttl", "modifiedIndex", "createdIndex"):
        n = e.get(name)
        if n:
            if type(n) is not int:
                return False
            fields.append(f'"{name}":{n}')
    parts.append("{" + ",".join(fields) + "}")
    return True
