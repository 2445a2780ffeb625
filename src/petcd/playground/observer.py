"""What the page shows, gathered from the members as a client would: each member's
GET /debug/raft polled 5 times a second (one task per member, so a paused member slows
nobody), a timeline of what changed, and the keys and values kept live by a watch.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import grpc

from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.pb.mvccpb.kv_pb2 import KeyValue
from petcd.playground.runner import ELECTION_MS, Cluster, Member

log = logging.getLogger("petcd.playground")

POLL_INTERVAL = 0.2  # seconds between two status requests to one member (5 Hz)
POLL_TIMEOUT = 1.0
FRESH = 1.2  # a status older than this (seconds) is stale: the member did not answer
# Longer than a member's own request timeout (5 s + 2 election timeouts), so that a write
# that fails has been answered by the member itself and is no longer pending anywhere.
PUT_TIMEOUT = 5.0 + 2 * ELECTION_MS / 1000 + 2.0
MAX_EVENTS = 200
MAX_KEYS = 500  # keys the KV browser holds (the rest of a large keyspace is not shown)
MAX_KEY_BYTES = 1024  # longer keys are not shown (nor held)
MAX_VALUE_CHARS = 200  # values are held and shown cut to this
MAX_RECEIVE = 64 << 20  # a range of MAX_KEYS keys with large values still fits
MAX_PUT_BYTES = 64 * 1024


class Observer:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.status: dict[str, dict[str, Any]] = {}  # member -> its last /debug/raft
        self.status_at: dict[str, float] = {}  # member -> monotonic time of that answer
        self.names: dict[str, str] = {}  # hex member ID -> name
        self.events: deque[dict[str, Any]] = deque(maxlen=MAX_EVENTS)
        self.kv: dict[bytes, dict[str, Any]] = {}  # key -> its row in the KV browser
        self.kv_revision = 0
        self.kv_source = ""
        self._roles: dict[str, str] = {}
        self._serving: dict[str, bool] = {}
        self._leader = ""
        self._term = 0
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle
    def start(self) -> None:
        loop = asyncio.get_running_loop()
        for m in self.cluster.members.values():
            self._tasks.append(loop.create_task(self._poll(m)))
        self._tasks.append(loop.create_task(self._watch_loop()))
        self._tasks.append(loop.create_task(self._tick_loop()))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for ch in self._channels.values():
            await ch.close(None)

    def event(self, kind: str, text: str) -> None:
        self.events.append({"t": int(time.time() * 1000), "kind": kind, "text": text})

    # -- polling
    async def _poll(self, m: Member) -> None:
        while True:
            if m.state != "killed":
                try:
                    doc = await asyncio.wait_for(_get_json(m.client_port, "/debug/raft"),
                                                 POLL_TIMEOUT)
                except (OSError, TimeoutError, ValueError):
                    pass
                else:
                    self.status[m.name] = doc
                    self.status_at[m.name] = time.monotonic()
                    self._learn_ids(m, doc)
            await asyncio.sleep(POLL_INTERVAL)

    def _learn_ids(self, m: Member, doc: dict[str, Any]) -> None:
        mid = str(doc.get("id", ""))
        if mid:
            self.names[mid] = m.name
            m.member_id = int(mid, 16)
        for entry in doc.get("members", ()):
            if entry.get("name"):
                self.names[str(entry["id"])] = str(entry["name"])
                other = self.cluster.members.get(str(entry["name"]))
                if other is not None and not other.member_id:
                    other.member_id = int(str(entry["id"]), 16)

    def fresh(self, name: str) -> dict[str, Any] | None:
        m = self.cluster.members[name]
        at = self.status_at.get(name)
        if m.state == "killed" or at is None or time.monotonic() - at > FRESH:
            return None
        return self.status.get(name)

    async def _tick_loop(self) -> None:
        """Turns what the polls saw into timeline events, 5 times a second."""
        while True:
            for m in self.cluster.poll_exits():
                self.event("down", f"{m.name} exited (code {m.exit_code}); see {m.log_path}")
            self._observe()
            await asyncio.sleep(POLL_INTERVAL)

    def _observe(self) -> None:
        leader, leader_term, top_term = "", -1, self._term
        for name, m in self.cluster.members.items():
            doc = self.fresh(name)
            serving = doc is not None
            if serving != self._serving.get(name, False) and m.state != "paused":
                if serving and name in self._serving:
                    self.event("up", f"{name} is answering again")
                self._serving[name] = serving
            if doc is None:
                continue
            role, term = str(doc["role"]), int(doc["term"])
            top_term = max(top_term, term)
            if role != self._roles.get(name):
                self._roles[name] = role
                if role == "candidate":
                    self.event("election", f"{name} starts an election for term {term}")
                elif role == "pre-candidate":
                    self.event("election", f"{name} asks for pre-votes (term {term})")
                elif role == "leader":
                    self.event("election", f"{name} won the election for term {term}")
            if role == "leader" and term > leader_term:
                leader, leader_term = name, term
        if top_term > self._term:
            self.event("term", f"term {top_term} begins")
            self._term = top_term
        if leader != self._leader:
            if leader:
                self.event("leader", f"leader is now {leader} (term {leader_term})"
                           + (f", was {self._leader}" if self._leader else ""))
            else:
                self.event("leader", f"no leader (was {self._leader})")
            self._leader = leader

    # -- what the page gets
    def snapshot(self) -> dict[str, Any]:
        members = []
        for name, m in self.cluster.members.items():
            doc = self.status.get(name)
            fresh = self.fresh(name) is not None
            card: dict[str, Any] = {
                "name": name, "state": m.state, "clientUrl": m.client_url,
                "peerUrl": m.peer_url, "pid": m.proc.pid if m.proc else None,
                "stale": not fresh, "exitCode": m.exit_code, "paused": m.paused,
                "isolated": m.isolated,
                "role": "none", "term": None, "commit": None, "applied": None,
                "lastIndex": None, "leader": "", "entries": [], "progress": {},
            }
            if doc is not None:
                card.update(
                    role=doc["role"] if m.state != "killed" else "none",
                    term=doc["term"], commit=doc["commit"], applied=doc["applied"],
                    lastIndex=doc["lastIndex"], revision=doc.get("revision"),
                    leader=self.names.get(str(doc["leader"]), ""),
                    vote=self.names.get(str(doc["vote"]), ""),
                    entries=doc["entries"],
                    progress={self.names.get(k, k): v
                              for k, v in doc.get("progress", {}).items()})
            members.append(card)
        kvs = [self.kv[k] for k in sorted(self.kv)]
        return {"members": members, "leader": self._leader, "term": self._term,
                "events": list(self.events), "kv": kvs, "kvRevision": self.kv_revision,
                "kvSource": self.kv_source}

    # -- client calls
    def _channel(self, m: Member) -> grpc.aio.Channel:
        ch = self._channels.get(m.name)
        if ch is None:
            ch = grpc.aio.insecure_channel(f"127.0.0.1:{m.client_port}", options=[
                ("grpc.max_receive_message_length", MAX_RECEIVE)])
            self._channels[m.name] = ch
        return ch

    def _pick(self) -> Member | None:
        """A member to talk to: the leader if it can reach its peers, else any member
        that runs (the request may well fail: that is what the page shows)."""
        ms = self.cluster.members
        if self._leader and ms[self._leader].state == "running":
            return ms[self._leader]
        for state in ("running", "isolated"):
            for m in ms.values():
                if m.state == state:
                    return m
        return None

    async def put(self, key: str, value: str, member: str) -> dict[str, Any]:
        if not key:
            return {"ok": False, "error": "the key is empty"}
        if len(key) + len(value) > MAX_PUT_BYTES:
            return {"ok": False, "error": "too large for the playground"}
        m = self.cluster.member(member) if member else self._pick()
        if m is None or m.state == "killed":
            err = "no member is running" if m is None else f"{m.name} is not running"
            self.event("put", f"put {key} failed: {err}")
            return {"ok": False, "error": err}
        put = self._channel(m).unary_unary(
            "/etcdserverpb.KV/Put", request_serializer=rpc.PutRequest.SerializeToString,
            response_deserializer=rpc.PutResponse.FromString)
        try:
            resp = await put(rpc.PutRequest(key=key.encode(), value=value.encode()),
                             timeout=PUT_TIMEOUT)
        except grpc.aio.AioRpcError as e:
            err = f"{e.code().name}: {e.details()}"
            self.event("put", f"put {key} via {m.name} failed: {err}")
            return {"ok": False, "member": m.name, "error": err}
        self.event("put", f"put {key} via {m.name}: ok, revision {resp.header.revision}")
        return {"ok": True, "member": m.name, "revision": resp.header.revision}

    async def _watch_loop(self) -> None:
        """Keeps self.kv equal to a member's keyspace: a range, then a watch from the
        revision after it; starts over on another member when that one stops serving."""
        while True:
            m = self._pick()
            if m is None or m.state != "running" or self.fresh(m.name) is None:
                await asyncio.sleep(POLL_INTERVAL)
                continue
            try:
                await self._follow(m)
            except grpc.aio.AioRpcError as e:
                log.debug("watch on %s ended: %s", m.name, e.code())
            await asyncio.sleep(POLL_INTERVAL)

    async def _follow(self, m: Member) -> None:
        ch = self._channel(m)
        range_ = ch.unary_unary(
            "/etcdserverpb.KV/Range", request_serializer=rpc.RangeRequest.SerializeToString,
            response_deserializer=rpc.RangeResponse.FromString)
        resp = await range_(
            rpc.RangeRequest(key=b"\0", range_end=b"\0", serializable=True, limit=MAX_KEYS),
            timeout=2)
        self.kv = {kv.key: _row(kv) for kv in resp.kvs if len(kv.key) <= MAX_KEY_BYTES}
        self.kv_revision = resp.header.revision
        self.kv_source = m.name

        done = asyncio.Event()

        async def requests() -> AsyncIterator[rpc.WatchRequest]:
            yield rpc.WatchRequest(create_request=rpc.WatchCreateRequest(
                key=b"\0", range_end=b"\0", start_revision=resp.header.revision + 1))
            await done.wait()  # the stream stays open until we leave it

        watch = ch.stream_stream(
            "/etcdserverpb.Watch/Watch", request_serializer=rpc.WatchRequest.SerializeToString,
            response_deserializer=rpc.WatchResponse.FromString)
        call = watch(requests())
        reader = asyncio.ensure_future(self._read_watch(call))
        try:
            while not reader.done():
                if m.state != "running" or self.fresh(m.name) is None:
                    break  # killed, paused or cut off: it would tell us nothing new
                await asyncio.wait([reader], timeout=POLL_INTERVAL)
        finally:
            done.set()
            call.cancel()
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                await reader

    async def _read_watch(self, call: Any) -> None:
        async for wresp in call:
            for ev in wresp.events:
                if ev.type == ev.DELETE:
                    self.kv.pop(ev.kv.key, None)
                elif len(ev.kv.key) <= MAX_KEY_BYTES and (
                        ev.kv.key in self.kv or len(self.kv) < MAX_KEYS):
                    self.kv[ev.kv.key] = _row(ev.kv)
            if wresp.header.revision:
                self.kv_revision = max(self.kv_revision, wresp.header.revision)


def _row(kv: KeyValue) -> dict[str, Any]:
    value = kv.value[:MAX_VALUE_CHARS * 4].decode("utf-8", "replace")
    if len(value) > MAX_VALUE_CHARS or len(kv.value) > MAX_VALUE_CHARS * 4:
        value = f"{value[:MAX_VALUE_CHARS]}..."
    return {"key": kv.key.decode("utf-8", "replace"), "value": value,
            "createRevision": kv.create_revision, "modRevision": kv.mod_revision,
            "version": kv.version}


async def _get_json(port: int, path: str) -> dict[str, Any]:
    """One HTTP/1.1 GET on a fresh connection (closed after the answer)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                     "Connection: close\r\n\r\n".encode())
        raw = await reader.read(-1)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise ValueError(head[:80].decode("latin-1", "replace"))
    doc = json.loads(body)
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    return doc
