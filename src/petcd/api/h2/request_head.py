"""A gRPC request's header list, checked as RFC 9113 8.2-8.3 requires and cut into the
fields the server uses. Pure functions, no IO; the connection caches the result with
the decoded block, so a client repeating its header block pays for the checks once."""

from __future__ import annotations

import re

import grpc

from petcd.api.h2.hpack_codec import Header

_TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}

# RFC 9113 8.2.1: lowercase token characters only (so no uppercase, controls, spaces,
# separators or non-ASCII); a value has no NUL/CR/LF and no leading/trailing SP/HTAB.
_BAD_NAME = re.compile(r"[^a-z0-9!#$%&'*+\-.^_`|~]")
_SPACE = " \t"
# Names already checked (shared by all connections; bounded).
_GOOD_NAMES: set[str] = {"content-type", "te", "grpc-timeout", "user-agent",
                         "grpc-accept-encoding", "grpc-encoding", "authorization", "token"}
_GOOD_NAMES_MAX = 4096
# RFC 9113 8.2.2: connection-specific fields make a request malformed (te: only "trailers").
_CONNECTION_SPECIFIC = frozenset({"connection", "proxy-connection", "keep-alive",
                                  "transfer-encoding", "upgrade"})
_REQUEST_PSEUDO = frozenset({":method", ":scheme", ":path", ":authority"})


def parse_timeout(value: str) -> float | None:
    """grpc-timeout (1-8 ASCII digits and a unit) in seconds; None if malformed.
    (str.isdigit() alone accepts digits such as U+00B2 that int() refuses.)"""
    unit = _TIMEOUT_UNITS.get(value[-1:])
    digits = value[:-1]
    if unit is None or not 1 <= len(digits) <= 8 or not (digits.isascii() and digits.isdigit()):
        return None
    return int(digits) * unit


class RequestHead:
    """What a gRPC server needs from a request's headers; `error` is set when the
    request is malformed (answered with RST_STREAM PROTOCOL_ERROR), `rejected` when it
    is well-formed HTTP/2 but not a gRPC request we take (a Trailers-Only answer)."""

    __slots__ = ("content_type", "encoding", "encoding_error", "error", "lookups", "method",
                 "path", "rejected", "timeout", "timeout_seconds")

    def __init__(self) -> None:
        self.path: str | None = None
        self.method: str | None = None
        self.content_type: str | None = None
        self.timeout: str | None = None
        self.timeout_seconds: float | None = None  # -1.0: malformed
        self.encoding: str | None = None
        self.encoding_error: str | None = None  # grpc-go's words for an encoding we lack
        self.error: str | None = None
        self.rejected: tuple[grpc.StatusCode, str, int] | None = None
        # Metadata values looked up by key (ServerContext.metadata_value), remembered with
        # the cached block: the keys are the server's own few, not the client's.
        self.lookups: dict[str, str | None] = {}


def parse_request_head(headers: list[Header]) -> RequestHead:
    head = RequestHead()
    regular = False
    scheme = False
    seen: set[str] = set()
    good = _GOOD_NAMES
    for name, value in headers:
        if name[:1] == ":":
            if regular:
                head.error = f"pseudo-header {name} after regular fields"
                return head
            if name not in _REQUEST_PSEUDO or name in seen:
                head.error = f"unexpected or repeated pseudo-header {name}"
                return head
            seen.add(name)
            if name == ":path":
                head.path = value
            elif name == ":method":
                head.method = value
            elif name == ":scheme":
                scheme = True
        else:
            regular = True
            if name not in good and not _good_name(name):
                head.error = f"invalid header name {name!r}"
                return head
            if name == "content-type":
                head.content_type = value
            elif name == "grpc-timeout":
                head.timeout = value
            elif name == "grpc-encoding":
                head.encoding = value
            elif name in _CONNECTION_SPECIFIC or (name == "te" and value != "trailers"):
                head.error = f"connection-specific header {name}"
                return head
        if value and (value[0] in _SPACE or value[-1] in _SPACE):
            head.error = f"invalid value of header {name}"
            return head
    values = "".join([v for _, v in headers])  # str `in` is a memchr: one pass each
    if "\0" in values or "\r" in values or "\n" in values:
        head.error = "invalid header value"
    elif not head.path or head.method is None or not scheme:
        head.error = "missing :path, :method or :scheme"
    else:
        _check_grpc(head)
    return head


def _check_grpc(head: RequestHead) -> None:
    """gRPC's request rules (grpc-go's answers): POST, an application/grpc content-type,
    a well-formed grpc-timeout (checked once the method is known: -1.0 if malformed)."""
    if head.method != "POST":
        head.rejected = (grpc.StatusCode.INTERNAL, f"invalid method {head.method!r}", 405)
        return
    ctype = head.content_type
    if ctype is None or not ctype.startswith("application/grpc"):
        head.rejected = (grpc.StatusCode.INTERNAL,
                         f"invalid gRPC request content-type {ctype!r}", 415)
        return
    if head.timeout is not None:
        seconds = parse_timeout(head.timeout)
        head.timeout_seconds = -1.0 if seconds is None else seconds
    encoding = head.encoding
    if encoding is not None and encoding != "identity":
        head.encoding_error = (
            f'grpc: Decompressor is not installed for grpc-encoding "{encoding}"')


def _good_name(name: str) -> bool:
    if not name or _BAD_NAME.search(name) is not None:
        return False
    if len(_GOOD_NAMES) < _GOOD_NAMES_MAX and len(name) <= 64:
        _GOOD_NAMES.add(name)  # names repeat call after call: checked once
    return True
