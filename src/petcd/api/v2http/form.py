"""A v2 keys request as etcd 3.4 reads it from the URL and the form (Go's ParseForm:
body values of a form-encoded PUT/POST first, then the query; strconv's bools and
unsigned integers), checked in etcd's order with etcd's error codes and causes."""

from __future__ import annotations

import time

from petcd.pb.internalpb.internal_pb2 import V2Request
from petcd.v2store import errors as E
from petcd.v2store.node import clean
from petcd.v2store.store import KEYS_PREFIX

Form = dict[str, list[str]]

_TRUE = frozenset(("1", "t", "T", "TRUE", "true", "True"))
_FALSE = frozenset(("0", "f", "F", "FALSE", "false", "False"))
_HEX = "0123456789abcdefABCDEF"


class FormError(ValueError):
    pass


def unescape(s: str, *, plus: bool = True) -> str:
    """Go's url.QueryUnescape (percent escapes and '+'); bytes that are not UTF-8 are
    kept (surrogateescape)."""
    if "%" not in s and not (plus and "+" in s):
        return s
    out = bytearray()
    raw = s.encode("utf-8", "surrogateescape")
    i = 0
    while i < len(raw):
        c = raw[i]
        if c == 0x25:  # %
            h = raw[i + 1:i + 3].decode("latin-1")
            if len(h) < 2 or h[0] not in _HEX or h[1] not in _HEX:
                bad = raw[i:i + 3].decode("utf-8", "surrogateescape")
                raise FormError(f'invalid URL escape "{bad}"')
            out.append(int(h, 16))
            i += 3
            continue
        out.append(0x20 if (c == 0x2B and plus) else c)
        i += 1
    return out.decode("utf-8", "surrogateescape")


def parse_query(q: str, form: Form) -> None:
    """Go's url.ParseQuery into `form` (the first error is raised after parsing all)."""
    first: FormError | None = None
    for part in q.split("&"):
        if not part:
            continue
        if ";" in part:
            first = first or FormError("invalid semicolon separator in query")
            continue
        key, _, value = part.partition("=")
        try:
            k, v = unescape(key), unescape(value)
        except FormError as e:
            first = first or e
            continue
        form.setdefault(k, []).append(v)
    if first is not None:
        raise first


def parse_form(method: str, query: str, content_type: str | None, body: bytes) -> Form:
    form: Form = {}
    err: FormError | None = None
    if method in ("POST", "PUT", "PATCH") and content_type is not None and \
            content_type.split(";", 1)[0].strip().lower() == "application/x-www-form-urlencoded":
        try:
            parse_query(body.decode("utf-8", "surrogateescape"), form)
        except FormError as e:
            err = e
    query_form: Form = {}
    try:
        parse_query(query, query_form)
    except FormError as e:
        err = err or e
    for k, vs in query_form.items():
        form.setdefault(k, []).extend(vs)
    if err is not None:
        raise err
    return form


def _bool(form: Form, key: str) -> bool:
    vals = form.get(key)
    if not vals:
        return False
    if vals[0] in _TRUE:
        return True
    if vals[0] in _FALSE:
        return False
    raise ValueError(key)


def _uint(form: Form, key: str) -> int:
    vals = form.get(key)
    if not vals:
        return 0
    v = vals[0]
    if not v or not v.isascii() or not v.isdigit() or int(v) >= 1 << 64:
        raise ValueError(key)
    return int(v)


def _value(form: Form, key: str) -> str:
    vals = form.get(key)
    return vals[0] if vals else ""


class KeyRequest:
    """The parsed request: the log entry to propose (or read), and the HTTP-only
    options."""

    __slots__ = ("no_value", "path", "req", "since", "stream", "wait")

    def __init__(self, req: V2Request, path: str, wait: bool, since: int, stream: bool,
                 no_value: bool) -> None:
        self.req = req
        self.path = path  # the store path (/1/...)
        self.wait = wait
        self.since = since
        self.stream = stream
        self.no_value = no_value


_FLAGS = ("recursive", "sorted", "wait", "dir", "quorum", "stream")  # etcd's order


def _field(cause: str) -> E.V2Error:
    return E.V2Error(E.INVALID_FIELD, cause)


def parse_key_request(method: str, key_path: str, form: Form) -> KeyRequest:
    """key_path: the URL path after /v2/keys (decoded). Raises V2Error (index 0)."""
    path = _join(KEYS_PREFIX, key_path)
    if not form or (len(form) == 1 and "value" in form):
        # A plain get or set (most requests): what the checks below come to for them.
        vals = form.get("value")
        return KeyRequest(V2Request(method=method, path=_raw(path),
                                    val=_raw(vals[0]) if vals else b""),
                          path, False, 0, False, False)
    try:
        prev_index = _uint(form, "prevIndex")
    except ValueError:
        raise E.V2Error(E.INDEX_NAN, 'invalid value for "prevIndex"') from None
    try:
        wait_index = _uint(form, "waitIndex")
    except ValueError:
        raise E.V2Error(E.INDEX_NAN, 'invalid value for "waitIndex"') from None
    flags = dict.fromkeys(_FLAGS, False)
    for name in _FLAGS:
        if name in form:  # (most requests carry none of them)
            try:
                flags[name] = _bool(form, name)
            except ValueError:
                raise _field(f'invalid value for "{name}"') from None
    if flags["wait"] and method != "GET":
        raise _field('"wait" can only be used with GET requests')
    prev_value = _value(form, "prevValue")
    if "prevValue" in form and prev_value == "":
        raise E.V2Error(E.PREV_VALUE_REQUIRED, '"prevValue" cannot be empty')
    try:
        no_value = _bool(form, "noValueOnSuccess")
    except ValueError:
        raise _field('invalid value for "noValueOnSuccess"') from None
    ttl: int | None = None
    if _value(form, "ttl"):
        try:
            ttl = _uint(form, "ttl")
        except ValueError:
            raise E.V2Error(E.TTL_NAN, 'invalid value for "ttl"') from None
    req = V2Request(method=method, path=_raw(path), val=_raw(_value(form, "value")),
                    dir=flags["dir"], prev_value=_raw(prev_value), prev_index=prev_index,
                    recursive=flags["recursive"], sorted=flags["sorted"])
    if "prevExist" in form:
        try:
            req.prev_exist = _bool(form, "prevExist")
        except ValueError:
            raise _field("invalid value for prevExist") from None
    if "refresh" in form:
        try:
            req.refresh = _bool(form, "refresh")
        except ValueError:
            raise _field("invalid value for refresh") from None
        if req.refresh:
            if "value" in form and _value(form, "value") != "":
                raise E.V2Error(E.REFRESH_VALUE, "A value was provided on a refresh")
            if ttl is None:
                raise E.V2Error(E.REFRESH_TTL_REQUIRED, "No TTL value set")
    if ttl is not None:
        # Go's int64 arithmetic, overflow included (a huge ttl wraps, as in etcd)
        req.expiration = _int64(time.time_ns() + _int64(_int64(ttl) * 1_000_000_000))
    if method == "GET" and flags["quorum"]:
        req.method = "QGET"
    return KeyRequest(req, path, flags["wait"], wait_index, flags["stream"], no_value)


def _int64(x: int) -> int:
    x &= (1 << 64) - 1
    return x - (1 << 64) if x >= 1 << 63 else x


def _raw(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _join(prefix: str, p: str) -> str:
    """Go's path.Join(prefix, p) for a rooted prefix."""
    return clean(prefix + "/" + p)
