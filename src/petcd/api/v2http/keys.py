"""/v2/keys: etcd 3.4's v2 keys API. Writes and quorum reads are proposed through the
log (a follower's go to the leader with Raft's proposal forwarding) and answered
from this member's apply; plain reads and waits are served from this member's store.
A wait is a long-poll: headers at once, then the first matching event."""

from __future__ import annotations

import asyncio
from typing import Any

from petcd.api.http import Reply, ResponseStream, Streamer
from petcd.errors import EtcdError
from petcd.server.node import Node
from petcd.server.v2 import V2
from petcd.v2store import Event, V2Error
from petcd.v2store import errors as E
from petcd.v2store.node import event_json, render_event
from petcd.v2store.store import KEYS_PREFIX

from .form import FormError, parse_form, parse_key_request

Headers = list[tuple[bytes, bytes]]

METHODS = ("HEAD", "GET", "PUT", "POST", "DELETE")
_JSON = (b"Content-Type", b"application/json")
_NO_VALUE_ACTIONS = frozenset(("set", "compareAndSwap", "create", "update"))


def not_allowed(methods: tuple[str, ...]) -> Reply:
    return 405, [(b"Allow", ",".join(methods).encode()),
                 (b"Content-Type", b"text/plain; charset=utf-8"),
                 (b"X-Content-Type-Options", b"nosniff")], b"Method Not Allowed\n"


def cluster_header(node: Node) -> tuple[bytes, bytes]:
    return b"X-Etcd-Cluster-Id", f"{node.cluster_id:x}".encode()


def error_reply(node: Node, err: V2Error) -> Reply:
    cause = err.cause
    if cause.startswith(KEYS_PREFIX):
        cause = cause[len(KEYS_PREFIX):]
    body = V2Error(err.code, cause, err.index).body()
    return err.status, [cluster_header(node), _JSON,
                        (b"X-Etcd-Index", str(err.index).encode())], body


def event_body(event: Event, *, no_value: bool = False) -> bytes:
    """An event as etcd writes it (one JSON line)."""
    text = event_json(event, KEYS_PREFIX, no_value=no_value)
    if text is None:  # a listing: through the dicts
        return E.go_json(render_event(event, KEYS_PREFIX, no_value=no_value)) + b"\n"
    return E.go_text(text) + b"\n"


class KeysHandler:
    def __init__(self, node: Node) -> None:
        self._node = node

    def _raft_headers(self) -> Headers:
        node = self._node
        return [(b"X-Raft-Index", str(node.committed_index).encode()),
                (b"X-Raft-Term", str(node.term).encode())]

    async def handle(self, method: str, key_path: str, query: str, content_type: str | None,
                     body: bytes) -> Reply | Streamer:
        node = self._node
        if method not in METHODS:
            return not_allowed(METHODS)
        try:
            form = parse_form(method, query, content_type, body)
        except FormError as e:
            return error_reply(node, V2Error(E.INVALID_FORM, str(e)))
        try:
            kr = parse_key_request(method, key_path, form)
        except V2Error as e:
            return error_reply(node, e)
        req = kr.req
        store = node.v2.store
        if kr.wait and req.method == "GET":  # (quorum=true: a read through the log)
            try:
                watcher = store.watch(kr.path, req.recursive, kr.stream, kr.since)
            except V2Error as e:
                return error_reply(node, e)
            return self._long_poll(watcher, kr.stream)
        if req.method in ("GET", "HEAD"):
            try:
                event = store.get(kr.path, req.recursive, req.sorted)
            except V2Error as e:
                return error_reply(node, e)
            return self._event_reply(event, no_value=False)
        result: Any = await node.propose(V2, req.SerializeToString(), req)
        if isinstance(result, V2Error):
            return error_reply(node, result)
        if isinstance(result, EtcdError) or not isinstance(result, Event):
            text = result.message if isinstance(result, EtcdError) else "no event"
            return error_reply(node, V2Error(E.RAFT_INTERNAL, text))
        return self._event_reply(result, no_value=kr.no_value)

    def _event_reply(self, event: Event, *, no_value: bool) -> Reply:
        """(for HEAD the HTTP server sends the headers of this answer only)"""
        headers = [cluster_header(self._node), _JSON,
                   (b"X-Etcd-Index", str(event.etcd_index).encode()), *self._raft_headers()]
        status = 201 if event.created else 200
        try:
            body = event_body(event, no_value=no_value and event.action in _NO_VALUE_ACTIONS)
        except RecursionError:  # a listing nested deeper than Python renders
            return error_reply(self._node, V2Error(E.RAFT_INTERNAL, "tree too deep to list"))
        return status, headers, body

    def _long_poll(self, watcher: Any, stream: bool) -> Streamer:
        node = self._node

        async def run(out: ResponseStream) -> None:
            loop = asyncio.get_running_loop()
            ready: asyncio.Future[None] | None = None

            def wake() -> None:
                if ready is not None and not ready.done():
                    ready.set_result(None)
            watcher.wake = wake
            try:
                out.start(200, [cluster_header(node), _JSON,
                                (b"X-Etcd-Index", str(watcher.start_index).encode()),
                                *self._raft_headers()])
                await out.write(b"")
                while True:
                    while not watcher.events:
                        if watcher.removed:
                            return  # dropped (a stream reader too far behind)
                        ready = loop.create_future()
                        await ready
                    event = watcher.events.popleft()
                    await out.write(event_body(event))
                    if not stream:
                        return
            finally:
                watcher.wake = None
                watcher.remove()  # the client went away or got its event: free it now
        return run
