"""A small HTTP/1.1 client for the v2 API tests (http.client: every header and status
as sent), and the normalisation that lets etcd's and petcd's answers be compared:
store indexes relative to each member's index at the start, times and TTLs masked."""

from __future__ import annotations

import http.client
import json
import re
import urllib.parse
from typing import Any

FORM = "application/x-www-form-urlencoded"
_HEADERS = ("content-type", "allow", "transfer-encoding")
_PRESENT = ("x-raft-index", "x-raft-term", "x-etcd-cluster-id")


class Resp:
    def __init__(self, status: int, headers: dict[str, str], raw: bytes) -> None:
        self.status = status
        self.headers = headers
        self.raw = raw

    @property
    def json(self) -> Any:
        return json.loads(self.raw)

    def __repr__(self) -> str:
        return f"<{self.status} {self.headers} {self.raw[:300]!r}>"


def _conn(url: str, timeout: float) -> http.client.HTTPConnection:
    u = urllib.parse.urlsplit(url)
    assert u.hostname is not None
    return http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)


def call(url: str, method: str, path: str, body: str | None = None, *,
         ctype: str | None = FORM, timeout: float = 30.0) -> Resp:
    c = _conn(url, timeout)
    try:
        headers = {"Content-Type": ctype} if (body is not None and ctype) else {}
        c.request(method, path, body=body, headers=headers)
        r = c.getresponse()
        raw = r.read()
        return Resp(r.status, {k.lower(): v for k, v in r.getheaders()}, raw)
    finally:
        c.close()


class LongPoll:
    """A wait=true request whose headers have arrived (so the watch is registered);
    `result()` reads the event."""

    def __init__(self, url: str, path: str, timeout: float = 30.0) -> None:
        self._c = _conn(url, timeout)
        self._c.request("GET", path)
        self._r = self._c.getresponse()
        self.status = self._r.status
        self.headers = {k.lower(): v for k, v in self._r.getheaders()}

    def result(self) -> Resp:
        try:
            if self.headers.get("transfer-encoding") == "chunked":
                raw = self._r.readline()
            else:
                raw = self._r.read()
            return Resp(self.status, self.headers, raw)
        finally:
            self.close()

    def result_line(self) -> Any:
        """One event of a stream=true wait (the response goes on)."""
        return json.loads(self._r.readline())

    def close(self) -> None:
        self._c.close()


def index(url: str) -> int:
    return int(call(url, "GET", "/v2/keys/").headers["x-etcd-index"])


class Norm:
    """Makes one member's answers comparable with another's (see module docstring)."""

    def __init__(self, base: int) -> None:
        self.base = base

    def rel(self, v: int) -> int:
        return v - self.base if v else 0

    def _text(self, s: str) -> str:
        s = re.sub(r"\d{20}", lambda m: f"{self.rel(int(m.group())):020d}", s)
        return s

    def _cause(self, s: str) -> str:
        s = self._text(s)
        s = re.sub(r"\[(\d+) != (\d+)\]",
                   lambda m: f"[{self.rel(int(m.group(1)))} != {self.rel(int(m.group(2)))}]", s)
        return re.sub(r"\[(\d+)/(\d+)\]",
                      lambda m: f"[{self.rel(int(m.group(1)))}/{self.rel(int(m.group(2)))}]", s)

    def body(self, v: Any, ttl: bool = False) -> Any:
        if isinstance(v, dict):
            out = {}
            for k, x in v.items():
                if k in ("modifiedIndex", "createdIndex", "index"):
                    out[k] = self.rel(x)
                elif k == "expiration":
                    out[k] = "EXP"
                elif k == "ttl" and not ttl:
                    out[k] = "TTL"
                elif k == "key":
                    out[k] = self._text(x)
                elif k == "cause":
                    out[k] = self._cause(x)
                else:
                    out[k] = self.body(x, ttl)
            return out
        if isinstance(v, list):
            return [self.body(x, ttl) for x in v]
        return v

    def resp(self, r: Resp, ttl: bool = False) -> tuple[Any, ...]:
        h = {k: r.headers.get(k) for k in _HEADERS}
        h.update({k: k in r.headers for k in _PRESENT})
        if "x-etcd-index" in r.headers:
            h["x-etcd-index"] = str(self.rel(int(r.headers["x-etcd-index"])))
        try:
            body: Any = self.body(json.loads(r.raw), ttl) if r.raw.strip() else r.raw
        except ValueError:
            body = r.raw
        return r.status, h, body
