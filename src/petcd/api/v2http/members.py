"""/v2/members, /v2/machines and /v2/stats/{self,leader,store}: etcd 3.4's shapes
(members as {"id","name","peerURLs","clientURLs"}, IDs in hex)."""

from __future__ import annotations

import json
import logging
import time
import urllib.parse
from typing import Any

from petcd import errors
from petcd.api.http import Reply
from petcd.errors import EtcdError
from petcd.server.node import Node
from petcd.v2store.errors import go_json
from petcd.v2store.node import rfc3339

from .keys import cluster_header, not_allowed

log = logging.getLogger("petcd.v2http")

_JSON = (b"Content-Type", b"application/json")
_TEXT = (b"Content-Type", b"text/plain; charset=utf-8")


def _member(m: Any) -> dict[str, Any]:
    return {"id": f"{m.id:x}", "name": m.name, "peerURLs": list(m.peer_urls),
            "clientURLs": list(m.client_urls)}


def _http_error(node: Node | None, status: int, message: str) -> Reply:
    """etcd's HTTPError: {"message": ...} with no newline."""
    headers = [_JSON] if node is None else [cluster_header(node), _JSON]
    return status, headers, go_json({"message": message})


def _peer_urls(body: bytes) -> list[str]:
    """etcd's MemberCreateRequest: {"peerURLs": [...]}, each a bare http(s)/unix(s)
    URL with host:port. Raises ValueError with etcd's words."""
    try:
        doc = json.loads(body)
    except ValueError:
        raise ValueError("unexpected end of JSON input" if not body.strip() else
                         "invalid character in JSON input") from None
    urls = doc.get("peerURLs") if isinstance(doc, dict) else None
    if not isinstance(urls, list) or not urls:
        raise ValueError("no valid URLs given")
    for u in urls:
        parts = urllib.parse.urlsplit(str(u))
        if parts.scheme not in ("http", "https", "unix", "unixs"):
            raise ValueError(f"URL scheme must be http, https, unix, or unixs: {u}")
        if parts.port is None and ":" not in parts.netloc:
            raise ValueError(f'URL address does not have the form "host:port": {u}')
        if parts.path not in ("", "/"):
            raise ValueError(f"URL must not contain a path: {u}")
    return sorted(str(u) for u in urls)


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

    async def _change(self, method: str, rest: str, content_type: str | None,
                      body: bytes) -> Reply:
        """POST (add), DELETE /<id> (remove), PUT /<id> (new peer URLs), as etcd's v2."""
        node = self._node
        member_id = 0
        if method != "POST":
            if rest == "":
                return 405, [cluster_header(node), _TEXT, (b"X-Content-Type-Options",
                                                          b"nosniff")], b"Method Not Allowed\n"
            try:
                member_id = int(rest, 16)
                if not 0 <= member_id < 1 << 64:
                    raise ValueError(rest)
            except ValueError:
                return _http_error(node, 404, f"No such member: {rest}")
            if method == "DELETE":
                if node.was_removed(member_id):
                    return _http_error(node, 410, f"Member permanently removed: {rest}")
                try:
                    await node.remove_member(member_id)
                except EtcdError as e:
                    return self._failed(e, f"{member_id:x}")
                return 204, [cluster_header(node)], b""
        ctype = content_type or ""
        if ";" in ctype:
            ctype = ctype.split(";", 1)[0].strip().lower()
        if ctype != "application/json":
            return _http_error(node, 415, f"Bad Content-Type {ctype}, accept application/json")
        try:
            urls = _peer_urls(body)
        except ValueError as e:
            return _http_error(node, 400, str(e))
        try:
            if method == "PUT":
                await node.update_member(member_id, urls)
                return 204, [cluster_header(node)], b""
            taken = {u for m in node.member_list() for u in m.peer_urls}
            if taken.intersection(urls):  # (etcd's new IDs include the time: never taken)
                return _http_error(node, 409, "membership: peerURL exists")
            added, _ = await node.add_member(urls, False)
        except EtcdError as e:
            return self._failed(e, f"{member_id:x}")
        assert added is not None
        return 201, [cluster_header(node), _JSON], go_json(_member(added)) + b"\n"

    def _failed(self, e: EtcdError, member: str) -> Reply:
        if e.kind is errors.MEMBER_NOT_FOUND:
            return _http_error(self._node, 404, f"No such member: {member}")
        if e.kind is errors.MEMBER_EXIST:
            return _http_error(self._node, 409, "membership: ID exists")
        if e.kind is errors.PEER_URL_EXIST:
            return _http_error(self._node, 409, "membership: peerURL exists")
        log.warning("v2 membership change of %s failed: %s", member, e.message)
        return _http_error(self._node, 500, "Internal Server Error")

    async def members(self, method: str, rest: str, content_type: str | None = None,
                      body: bytes = b"") -> Reply:
        node = self._node
        if method not in ("GET", "POST", "DELETE", "PUT"):
            return not_allowed(("GET", "POST", "DELETE", "PUT"))
        if method != "GET":
            return await self._change(method, rest, content_type, body)
        if rest == "":
            doc = {"members": [_member(m) for m in node.member_list()]}
            return 200, [cluster_header(node), _JSON], go_json(doc) + b"\n"
        if rest == "leader":
            lead = node.leader_id
            m = node.member(lead) if lead else None
            if m is None:
                return _http_error(node, 503, "During election")
            return 200, [cluster_header(node), _JSON], go_json(_member(m)) + b"\n"
        return _http_error(node, 404, "Not found")

    def machines(self, method: str) -> Reply:
        if method not in ("GET", "HEAD"):
            return not_allowed(("GET", "HEAD"))
        urls = sorted(u for m in self._node.member_list() for u in m.client_urls)
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
            member = node.member(node.member_id)
            stats = node.append_stats
            body = {"name": member.name if member is not None else node.opts.name,
                    "id": f"{node.member_id:x}", "state": state,
                    "startTime": rfc3339(self._started),
                    "leaderInfo": {"leader": f"{lead:x}" if lead else "",
                                   "uptime": go_duration((now - since) / 1e9),
                                   "startTime": rfc3339(since)},
                    "recvAppendRequestCnt": stats.received}
            # etcd leaves the rates out while they are zero (omitempty)
            recv_pkg, recv_bytes = stats.receive_rates()
            if recv_pkg:
                body["recvPkgRate"] = recv_pkg
            if recv_bytes:
                body["recvBandwidthRate"] = recv_bytes
            body["sendAppendRequestCnt"] = stats.sent
            send_pkg, send_bytes = stats.send_rates()
            if send_pkg:
                body["sendPkgRate"] = send_pkg
            if send_bytes:
                body["sendBandwidthRate"] = send_bytes
            return 200, [_JSON], go_json(body)
        if not node.is_leader:
            return _http_error(None, 403, "not current leader")
        zero = {"current": 0, "average": 0, "standardDeviation": 0, "minimum": 0,
                "maximum": 0}
        followers = {f"{m.id:x}": {"latency": dict(zero), "counts": {"fail": 0, "success": 0}}
                     for m in node.member_list() if m.id != node.member_id}
        return 200, [_JSON], go_json({"leader": f"{node.member_id:x}", "followers": followers})

