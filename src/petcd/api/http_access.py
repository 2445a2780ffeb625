"""etcd's --cors and --host-whitelist for HTTP requests on the client URLs."""

from __future__ import annotations

import json
import logging
import urllib.parse

log = logging.getLogger("petcd.http")

Reply = tuple[int, list[tuple[bytes, bytes]], bytes]

_TEXT = (b"Content-Type", b"text/plain; charset=utf-8")
_NOSNIFF = (b"X-Content-Type-Options", b"nosniff")
_CORS = [
    (b"Access-Control-Allow-Headers", b"accept, content-type, authorization"),
    (b"Access-Control-Allow-Methods", b"POST, GET, OPTIONS, PUT, DELETE"),
    (b"Access-Control-Allow-Origin", b"*"),
]


class AccessControl:
    """etcd's --cors and --host-whitelist for HTTP requests on the client URLs."""

    def __init__(self, cors: tuple[str, ...], hosts: tuple[str, ...], tls: bool) -> None:
        self._any_origin = not cors or "*" in cors
        self._origins = frozenset(cors)
        self._any_host = tls or not hosts or "*" in hosts  # TLS requests: any host
        self._hosts = frozenset(hosts)

    def cors_headers(self, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        if self._any_origin:
            return _CORS
        origin = _header(headers, b"origin")
        if origin is not None and origin in self._origins:
            return [*_CORS[:2], (b"Access-Control-Allow-Origin", origin.encode("latin-1"))]
        return []

    def refuse(self, headers: list[tuple[bytes, bytes]]) -> Reply | None:
        if self._any_host:
            return None
        host = _header(headers, b"host") or ""
        name = urllib.parse.urlsplit("//" + host).hostname or host
        if name in self._hosts or host in self._hosts:
            return None
        log.warning("rejecting HTTP request to prevent DNS rebinding attacks (host %r)", name)
        # etcd's words (and Go's http.Error newline); 421 Misdirected Request.
        return 421, [_TEXT, _NOSNIFF], (
            "\netcd received your request, but the Host header was unrecognized.\n\n"
            "To fix this, choose one of the following options:\n"
            "- Enable TLS, then any HTTPS request will be allowed.\n"
            "- Add the hostname you want to use to the whitelist in settings.\n"
            f"  - e.g. etcd --host-whitelist {json.dumps(name)}\n\n"
            "This requirement has been added to help prevent \"DNS Rebinding\" attacks "
            "(CVE-2018-5702).\n\n").encode()


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for k, v in headers:
        if k == name:  # h11 lowercases names
            return v.decode("latin-1")
    return None
