"""The v2 store as records (what persistence writes into its database): one record per
node, keyed by its path; the index; the event history, keyed by event index. Records
hold no local times, so every member writes the same bytes for the same log."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable

from petcd.v2store.node import Event, Ext, Node, ttl_of
from petcd.v2store.store import Store
from petcd.v2store.watch import HISTORY

INDEX_KEY = b"\x00index"
EVENT_PREFIX = b"\x01"
_HEAD = struct.Struct(">cQQq")


def node_key(path: str) -> bytes:
    return path.encode("utf-8", "surrogateescape")


def event_key(index: int) -> bytes:
    return EVENT_PREFIX + index.to_bytes(8, "big")


def encode_node(n: Node) -> bytes:
    kind = b"d" if n.is_dir else b"f"
    return _HEAD.pack(kind, n.created, n.modified, n.expire) + n.value.encode(
        "utf-8", "surrogateescape")


def encode_index(index: int) -> bytes:
    return index.to_bytes(8, "big")


def _strip_ttl(e: Ext | None) -> Ext | None:
    if e is None:
        return None
    out = {k: v for k, v in e.items() if k != "ttl"}
    if "nodes" in out:
        out["nodes"] = [_strip_ttl(n) for n in out["nodes"]]
    return out


def encode_event(e: Event) -> bytes:
    return json.dumps([e.action, _strip_ttl(e.node), e.index, _strip_ttl(e.prev),
                       e.etcd_index, e.refresh], separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8", "surrogateescape")


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
    for key, value in records:
        if key == INDEX_KEY:
            store.index = int.from_bytes(value, "big")
            continue
        if key.startswith(EVENT_PREFIX):
            events.append(decode_event(value, now))
            continue
        path = key.decode("utf-8", "surrogateescape")
        kind, created, modified, expire = _HEAD.unpack_from(value)
        parent_path, name = path.rsplit("/", 1)
        parent = by_path[parent_path or "/"]
        n = Node(path, created, parent, expire, value[_HEAD.size:].decode(
            "utf-8", "surrogateescape"), kind == b"d")
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

    def walk(n: Node) -> None:
        assert n.children is not None
        for c in n.children.values():
            out.append((node_key(c.path), encode_node(c)))
            if c.children is not None:
                walk(c)
    for ns in (store.root.children or {}).values():
        walk(ns)
    out.sort()
    return out
