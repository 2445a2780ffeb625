"""etcd 3.4's v2 HTTP API on the client URLs, served with --enable-v2: /v2/keys
(keys.py, form.py), /v2/members, /v2/machines, /v2/stats (members.py). The store is
petcd.v2store, applied from the log by petcd.server.v2."""

from __future__ import annotations

import html
import urllib.parse

from petcd.api.http import Reply, Streamer
from petcd.server.node import Node
from petcd.v2store.node import clean

from .form import FormError, unescape
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
        try:
            path = unescape(raw_path, plus=False)
        except FormError:  # Go's server refuses a request line it cannot decode
            return 400, [(b"Content-Type", b"text/plain; charset=utf-8"),
                         (b"Connection", b"close")], b"400 Bad Request"
        tidy = _clean_path(path)
        if tidy != path:  # Go's ServeMux sends unclean paths to their clean form
            return _redirect(method, tidy + ("?" + query if query else ""))
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


def _clean_path(path: str) -> str:
    """Go's ServeMux cleanPath: path.Clean, keeping a trailing slash."""
    tidy = clean(path)
    if path.endswith("/") and tidy != "/":
        tidy += "/"
    return tidy


def _redirect(method: str, location: str) -> Reply:
    target = urllib.parse.quote(location, safe="/?=&%:@!$'()*+,;~", errors="surrogateescape")
    headers = [(b"Location", target.encode())]
    if method not in ("GET", "HEAD"):
        return 301, headers, b""
    escaped = html.escape(target, quote=True).replace("&#x27;", "&#39;")
    return 301, [(b"Content-Type", b"text/html; charset=utf-8"), *headers], (
        f'<a href="{escaped}">Moved Permanently</a>.\n\n').encode()
