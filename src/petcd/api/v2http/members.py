"""/v2/members, /v2/machines and /v2/stats/{self,leader,store}: etcd 3.4's shapes
(members as {"id","name","peerURLs","clientURLs"}, IDs in hex)."""

from __future__ import annotations

import time
from typing import Any

from petcd.api.http import Reply
from petcd.server.node import Node
from petcd.v2store.errors import go_json
from petcd.v2store.node import rfc3339

from .keys import cluster_header, not_allowed

_JSON = (b"Content-Type", b"application/json")
_TEXT = (b"Content-Type", b"text/plain; charset=utf-8")


def _member(m: Any) -> dict[str, Any]:
    return {"id": f"{m.id:x}", "name": m.name, "peerURLs": list(m.peer_urls),
            "clientURLs": list(m.client_urls)}


def _http_error(node: Node | None, status: int, message: str) -> Reply:
    headers = [_JSON] if node is None else [cluster_header(node), _JSON]
    return status, headers, go_json({"message": message}) + b"\n"


def go_duration(seconds: float) -> str:
    """Go's time.Duration String() for a positive duration (e.g. 3m48.385250282s)."""
    ns = int(seconds * 1e9)
    if ns < 1000:
        return f"{ns}ns"
    if ns < 1_000_000:
        return f"{ns / 1000:g}µs"
    if ns < 1_000_000_000:
        return f"{ns / 1e6:.6f}".rstrip("0").rstrip(".") + "ms"
    h, rest = divmod(ns, 3600 * 10**9)
    m, rest = divmod(rest, 60 * 10**9)
    s, frac = divmod(rest, 10**9)
    out = f"{s}" + (("." + f"{frac:09d}".rstrip("0")) if frac else "") + "s"
    if h:
        return f"{h}h{m}m{out}"
    if m:
        return f"{m}m{out}"
    return out


class MembersHandler:
    def __init__(self, node: Node) -> None:
        self._node = node
        self._started = time.time_ns()
        self._leader = (0, time.time_ns())  # (leader ID, since when this member knows it)
        node.add_leader_listener(self._on_leader)

    def _on_leader(self, leader: int, _term: int) -> None:
        if leader != self._leader[0]:
            self._leader = (leader, time.time_ns())

    async def members(self, method: str, rest: str) -> Reply:
        node = self._node
        if method not in ("GET", "POST", "DELETE", "PUT"):
            return not_allowed(("GET", "POST", "DELETE", "PUT"))
        if method != "GET":
            return _http_error(node, 405, "Method Not Allowed")
        if rest == "":
            body = {"members": [_member(m) for m in node.membership.sorted()]}
            return 200, [cluster_header(node), _JSON], go_json(body) + b"\n"
        if rest == "leader":
            lead = node.leader_id
            m = node.membership.members.get(lead) if lead else None
            if m is None:
                return _http_error(node, 503, "During election")
            return 200, [cluster_header(node), _JSON], go_json(_member(m)) + b"\n"
        return _http_error(node, 404, "Not found")

    def machines(self, method: str) -> Reply:
        if method not in ("GET", "HEAD"):
            return not_allowed(("GET", "HEAD"))
        urls = sorted(u for m in self._node.membership.sorted() for u in m.client_urls)
        return 200, [_TEXT], ", ".join(urls).encode()

    def stats(self, method: str, which: str) -> Reply:
        if method != "GET":
            return not_allowed(("GET",))
        node = self._node
        if which == "store":
            s = node.v2.store
            body: dict[str, Any] = dict(s.stats)
            body["watchers"] = s.hub.count
            return 200, [_JSON], go_json(body)
        if which == "self":
            lead, since = self._leader
            now = time.time_ns()
            state = "StateLeader" if node.is_leader else (
                "StateFollower" if lead else "StateCandidate")
            member = node.membership.members.get(node.member_id)
            body = {"name": member.name if member is not None else node.opts.name,
                    "id": f"{node.member_id:x}", "state": state,
                    "startTime": rfc3339(self._started),
                    "leaderInfo": {"leader": f"{lead:x}" if lead else "",
                                   "uptime": go_duration((now - since) / 1e9),
                                   "startTime": rfc3339(since)},
                    "recvAppendRequestCnt": 0, "sendAppendRequestCnt": 0}
            return 200, [_JSON], go_json(body)
        if not node.is_leader:
            return _http_error(None, 403, "not current leader")
        zero = {"current": 0, "average": 0, "standardDeviation": 0, "minimum": 0,
                "maximum": 0}
        followers = {f"{m.id:x}": {"latency": dict(zero), "counts": {"fail": 0, "success": 0}}
                     for m in node.membership.sorted() if m.id != node.member_id}
        return 200, [_JSON], go_json({"leader": f"{node.member_id:x}", "followers": followers})

