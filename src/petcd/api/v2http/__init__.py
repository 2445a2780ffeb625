"""etcd 3.4's v2 HTTP API on the client URLs, served with --enable-v2: /v2/keys
(keys.py, form.py), /v2/members, /v2/machines, /v2/stats (members.py). The store is
petcd.v2store, applied from the log by petcd.server.v2."""

from __future__ import annotations

import urllib.parse

from petcd.api.http import Reply, Streamer
from petcd.server.node import Node

from .keys import KeysHandler
from .members import MembersHandler

KEYS = "/v2/keys"
_OTHER = ("/v2/members", "/v2/machines", "/v2/stats/store", "/v2/stats/self",
          "/v2/stats/leader")


class V2Http:
    def __init__(self, node: Node) -> None:
        self._keys = KeysHandler(node)
        self._members = MembersHandler(node)

    @staticmethod
    def serves(path: str) -> bool:
        return path == KEYS or path.startswith(KEYS + "/") or path in _OTHER or \
            path.startswith("/v2/members/")

    async def handle(self, method: str, target: str, headers: list[tuple[bytes, bytes]],
                     body: bytes) -> Reply | Streamer:
        raw_path, _, query = target.partition("?")
        path = urllib.parse.unquote(raw_path, errors="surrogateescape")
        content_type = None
        for k, v in headers:
            if k == b"content-type":
                content_type = v.decode("latin-1")
        if path == KEYS or path.startswith(KEYS + "/"):
            return await self._keys.handle(method, path[len(KEYS):], query, content_type,
                                           body)
        if path.startswith("/v2/members"):
            return await self._members.members(method, path[len("/v2/members"):].lstrip("/"),
                                               content_type, body)
        if path == "/v2/machines":
            return self._members.machines(method)
        return self._members.stats(method, path.rsplit("/", 1)[1])
