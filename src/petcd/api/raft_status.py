"""GET /debug/raft on the client URLs: a read-only JSON view of this member's Raft state,
for operators and for the playground page.

It is computed on request from what the member already holds in memory (Raft's status and
the in-memory log), so it costs the write path nothing. Log entries are summarised (the
kind of request, its key, sizes), never shown with their values.

    {"id": "8e9e05c52164694d", "name": "m1", "role": "leader", "term": 2, "vote": "...",
     "leader": "...", "commit": 9, "applied": 9, "firstIndex": 1, "lastIndex": 9,
     "lastTerm": 2, "revision": 4, "members": [{"id", "name", "learner"}],
     "entries": [{"index": 9, "term": 2, "type": "normal", "summary": "put key=a (1 bytes)"}],
     "progress": {"<id>": {"match", "next", "state", "paused", "recentActive", "learner",
                           "inflight"}}}     (progress: only on the leader)

IDs are hex strings, as etcd prints them (a JSON number loses 64-bit IDs in JavaScript).
"""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

from google.protobuf.message import DecodeError

from petcd.auth.tokens import SimpleTokens
from petcd.pb.internalpb.internal_pb2 import InternalRequest
from petcd.raft import ConfChangeType, Entry, EntryType, ProgressState, Role, decode_conf_change
from petcd.raft.codec import CodecError
from petcd.server.node import Node

PATH = "/debug/raft"
DEFAULT_TAIL = 32  # log entries shown unless ?tail=N asks for another number
MAX_TAIL = 256  # the bound on ?tail: the answer stays small whatever is asked
_KEY_CHARS = 40  # a key longer than this is cut (with "...")

_ROLES = {Role.FOLLOWER: "follower", Role.CANDIDATE: "candidate", Role.LEADER: "leader",
          Role.PRE_CANDIDATE: "pre-candidate"}
_PROGRESS = {ProgressState.PROBE: "probe", ProgressState.REPLICATE: "replicate",
             ProgressState.SNAPSHOT: "snapshot"}
_CONF = {ConfChangeType.ADD_NODE: "add", ConfChangeType.REMOVE_NODE: "remove",
         ConfChangeType.UPDATE_NODE: "update", ConfChangeType.ADD_LEARNER_NODE: "add learner"}


def authorized(node: Node, headers: list[tuple[bytes, bytes]]) -> bool:
    """With auth enabled the log tail names keys: only a user with the root role may read
    it, named by a token in the Authorization header (as the JSON gateway takes it)."""
    if not node.auth.enabled:
        return True
    token = next((v.decode("latin-1") for k, v in headers if k == b"authorization"), "")
    if token[:7].lower() == "bearer ":
        token = token[7:]
    if not token:
        return False
    tokens = node.tokens
    if isinstance(tokens, SimpleTokens):
        user = tokens.lookup(token)
    else:
        info = tokens.parse(token)
        user = None if info is None else info.user
    return user is not None and node.auth.is_admin(user) is None


def tail_from(target: str) -> int:
    query = urllib.parse.parse_qs(target.partition("?")[2])
    try:
        tail = int(query.get("tail", [str(DEFAULT_TAIL)])[0])
    except ValueError:
        tail = DEFAULT_TAIL
    return max(0, min(MAX_TAIL, tail))


def render(node: Node, tail: int) -> bytes:
    st, entries = node.raft_status(tail)
    last = entries[-1] if entries else None
    members = node.members()
    local = next((m for m in members if node.member_id == m.ID), None)
    role = "learner" if node.is_learner else _ROLES.get(st.role, str(st.role))
    doc: dict[str, Any] = {
        "id": f"{st.id:x}",
        "name": local.name if local is not None else "",
        "role": role,
        "term": st.term,
        "vote": f"{st.vote:x}",
        "leader": f"{st.lead:x}",
        "commit": st.commit,
        "applied": node.applied_index,
        "firstIndex": st.first_index,
        "lastIndex": st.last_index,
        "lastTerm": last.term if last is not None and last.index == st.last_index else None,
        "revision": node.revision,
        "members": [{"id": f"{m.ID:x}", "name": m.name, "learner": m.isLearner}
                    for m in members],
        "entries": [{"index": e.index, "term": e.term,
                     "type": "conf-change" if e.type == EntryType.CONF_CHANGE else "normal",
                     "summary": summarize(e)} for e in entries],
    }
    if st.progress:
        doc["progress"] = {
            f"{mid:x}": {"match": pr.match, "next": pr.next,
                         "state": _PROGRESS.get(pr.state, str(pr.state)), "paused": pr.paused,
                         "recentActive": pr.recent_active, "learner": pr.is_learner,
                         "inflight": pr.inflight}
            for mid, pr in sorted(st.progress.items())}
    return json.dumps(doc, separators=(",", ":")).encode()


def summarize(e: Entry) -> str:
    """One line saying what an entry asks for: kind, key and sizes, never a value."""
    if e.type == EntryType.CONF_CHANGE:
        try:
            cc = decode_conf_change(e.data)
        except CodecError:
            return f"conf change ({len(e.data)} bytes)"
        return f"conf change: {_CONF.get(cc.type, str(cc.type))} member {cc.node_id:x}"
    if not e.data:
        return "empty (a new leader's first entry)"
    req = InternalRequest()
    try:
        req.ParseFromString(e.data)
    except DecodeError:
        return f"undecodable ({len(e.data)} bytes)"
    kind = req.WhichOneof("request")
    if kind == "put":
        return f"put key={_key(req.put.key)} ({len(req.put.value)} bytes)"
    if kind == "delete_range":
        dr = req.delete_range
        return f"delete key={_key(dr.key)}" + (" (range)" if dr.range_end else "")
    if kind == "txn":
        t = req.txn
        return (f"txn ({len(t.compare)} compares, {len(t.success)} then, "
                f"{len(t.failure)} else)")
    if kind == "compaction":
        return f"compact revision={req.compaction.revision}"
    if kind == "range":
        return f"range key={_key(req.range.key)}"
    if kind == "lease_grant":
        return f"lease grant id={req.lease_grant.ID:x} ttl={req.lease_grant.TTL}"
    if kind == "lease_revoke":
        return f"lease revoke id={req.lease_revoke.ID:x}"
    if kind == "lease_checkpoint":
        return f"lease checkpoint ({len(req.lease_checkpoint.checkpoints)} leases)"
    if kind == "v2":
        v2 = req.v2
        if v2.method == "SYNC":
            return "v2 expire TTL keys due"
        return f"v2 {v2.method} key={_key(v2.path[2:] or b'/')} ({len(v2.val)} bytes)"
    if kind is None:
        return f"unknown request ({len(e.data)} bytes)"
    return str(kind).replace("_", " ")  # alarms, auth: the kind only (never a password)


def _key(key: bytes) -> str:
    text = key.decode("utf-8", "backslashreplace")
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= _KEY_CHARS else f"{text[:_KEY_CHARS]}..."
