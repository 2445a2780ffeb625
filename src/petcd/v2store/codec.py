"""The v2 store as records (what persistence writes into its database): one record per
node, keyed by its path; the index; the event history, keyed by event index. Records
hold no local times, so every member writes the same bytes for the same log."""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterable

from petcd.v2store.node import Event, Ext, Node, ttl_of
from petcd.v2store.store import Store
from petcd.v2store.watch import HISTORY

INDEX_KEY = b"\x00index"
EVENT_PREFIX = b"\x01"
_HEAD = struct.Struct(">cQQq")
_PATH_LEN = struct.Struct(">I")
# LMDB keys stop at 511 bytes: a longer path is keyed by its first KEEP bytes and a
# hash, and its record carries the whole path (kinds "D"/"F" instead of "d"/"f").
KEEP = 400
_LONG = b"\xff"


def _bytes(path: str) -> bytes:
    return path.encode("utf-8", "surrogateescape")


def node_key(path: str) -> bytes:
    raw = _bytes(path)
    if len(raw) <= KEEP:
        return raw
    return raw[:KEEP] + _LONG + hashlib.sha256(raw).digest()[:16]


def subtree_scan(path: str) -> tuple[bytes, bytes]:
    """(the key prefix to scan, the path prefix a record must have) for everything
    under the directory `path`."""
    prefix = _bytes(path) + b"/"
    return prefix[:KEEP], prefix


def record_path(key: bytes, value: bytes) -> bytes:
    """The whole path of a node record."""
    if value[:1] in (b"D", b"F"):
        (n,) = _PATH_LEN.unpack_from(value, _HEAD.size)
        start = _HEAD.size + _PATH_LEN.size
        return value[start:start + n]
    return key


def event_key(index: int) -> bytes:
    return EVENT_PREFIX + index.to_bytes(8, "big")


def encode_node(n: Node) -> bytes:
    raw = _bytes(n.path)
    value = _bytes(n.value)
    if len(raw) <= KEEP:
        return _HEAD.pack(b"d" if n.is_dir else b"f", n.created, n.modified, n.expire) + value
    return _HEAD.pack(b"D" if n.is_dir else b"F", n.created, n.modified, n.expire) + \
        _PATH_LEN.pack(len(raw)) + raw + value


def encode_index(index: int) -> bytes:
    return index.to_bytes(8, "big")


def _strip_ttl(e: Ext | None) -> Ext | None:
    if e is None or ("ttl" not in e and "nodes" not in e):
        return e  # (read only: nothing to take out)
    out = {k: v for k, v in e.items() if k != "ttl"}
    if "nodes" in out:
        out["nodes"] = [_strip_ttl(n) for n in out["nodes"]]
    return out


def encode_event(e: Event) -> bytes:
    return _ENCODER.encode([e.action, _strip_ttl(e.node), e.index, _strip_ttl(e.prev),
                            e.etcd_index, e.refresh]).encode("utf-8", "surrogateescape")


# (one encoder: json.dumps with options builds a new one on every call)
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def _with_ttl(e: Ext | None, now: int) -> Ext | None:
    if e is None:
        return None
    out: Ext = {}
    for k, v in e.items():
        out[k] = v
        if k == "expiration" and v:
            out["ttl"] = ttl_of(v, now)
    if "nodes" in out:
        out["nodes"] = [_with_ttl(n, now) for n in out["nodes"]]
    return out


def decode_event(raw: bytes, now: int) -> Event:
    action, node, index, prev, etcd_index, refresh = json.loads(
        raw.decode("utf-8", "surrogateescape"))
    return Event(action, _with_ttl(node, now) or {}, index, _with_ttl(prev, now), etcd_index,
                 refresh)


def load(store: Store, records: Iterable[tuple[bytes, bytes]]) -> None:
    """Rebuild `store` from its records (in key order: parents before children)."""
    store.reset()
    now = store.clock()
    events: list[Event] = []
    by_path: dict[str, Node] = {"/": store.root}
    assert store.root.children is not None
    for ns in store.root.children.values():
        by_path[ns.path] = ns
    nodes: list[tuple[bytes, bytes]] = []
    for key, value in records:
        if key == INDEX_KEY:
            store.index = int.from_bytes(value, "big")
        elif key.startswith(EVENT_PREFIX):
            events.append(decode_event(value, now))
        else:
            nodes.append((record_path(key, value), value))
    nodes.sort()  # by whole path: a directory before what is in it
    for raw_path, value in nodes:
        path = raw_path.decode("utf-8", "surrogateescape")
        kind, created, modified, expire = _HEAD.unpack_from(value)
        body = value[_HEAD.size:]
        if kind in (b"D", b"F"):
            body = body[_PATH_LEN.size + len(raw_path):]
        parent_path, name = path.rsplit("/", 1)
        parent = by_path[parent_path or "/"]
        n = Node(path, created, parent, expire, body.decode("utf-8", "surrogateescape"),
                 kind in (b"d", b"D"))
        n.modified = modified
        assert parent.children is not None
        parent.children[name] = n
        by_path[path] = n
        if expire:
            store._push_ttl(n)
    for e in events[-HISTORY:]:
        store.hub.add(e)
    store.journal.clear()
    store.new_events.clear()


def dump(store: Store) -> list[tuple[bytes, bytes]]:
    """Every record of the store (for tests and a full rewrite)."""
    out: list[tuple[bytes, bytes]] = [(INDEX_KEY, encode_index(store.index))]
    out.extend((event_key(e.index), encode_event(e)) for e in store.hub.history.events)
    todo = list((store.root.children or {}).values())
    while todo:
        n = todo.pop()
        for c in (n.children or {}).values():
            out.append((node_key(c.path), encode_node(c)))
            todo.append(c)
    out.sort()
    return out
