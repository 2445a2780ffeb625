"""The v2 API's errors: etcd's numeric codes, their messages and HTTP statuses (the
JSON body is {"errorCode","message","cause","index"})."""

from __future__ import annotations

import json
import re

KEY_NOT_FOUND = 100
TEST_FAILED = 101
NOT_FILE = 102
NOT_DIR = 104
NODE_EXIST = 105
ROOT_READ_ONLY = 107
DIR_NOT_EMPTY = 108
UNAUTHORIZED = 110
PREV_VALUE_REQUIRED = 201
TTL_NAN = 202
INDEX_NAN = 203
INVALID_FIELD = 209
INVALID_FORM = 210
REFRESH_VALUE = 211
REFRESH_TTL_REQUIRED = 212
RAFT_INTERNAL = 300
LEADER_ELECT = 301
EVENT_INDEX_CLEARED = 401

MESSAGES: dict[int, str] = {
    KEY_NOT_FOUND: "Key not found",
    TEST_FAILED: "Compare failed",
    NOT_FILE: "Not a file",
    103: "Reached the max number of peers in the cluster",
    NOT_DIR: "Not a directory",
    NODE_EXIST: "Key already exists",
    106: "The prefix of given key is a keyword in etcd",
    ROOT_READ_ONLY: "Root is read only",
    DIR_NOT_EMPTY: "Directory not empty",
    109: "Peer address has existed",
    UNAUTHORIZED: "The request requires user authentication",
    200: "Value is Required in POST form",
    PREV_VALUE_REQUIRED: "PrevValue is Required in POST form",
    TTL_NAN: "The given TTL in POST form is not a number",
    INDEX_NAN: "The given index in POST form is not a number",
    204: "Value or TTL is required in POST form",
    205: "The given timeout in POST form is not a number",
    206: "Name is required in POST form",
    207: "Index or value is required",
    208: "Index and value cannot both be specified",
    INVALID_FIELD: "Invalid field",
    INVALID_FORM: "Invalid POST form",
    REFRESH_VALUE: "Value provided on refresh",
    REFRESH_TTL_REQUIRED: "A TTL must be provided on refresh",
    RAFT_INTERNAL: "Raft Internal Error",
    LEADER_ELECT: "During Leader Election",
    400: "watcher is cleared due to etcd recovery",
    EVENT_INDEX_CLEARED: "The event in requested index is outdated and cleared",
    402: "Standby Internal Error",
    403: "Invalid active size",
    404: "Standby remove delay",
    500: "Client Internal Error",
}

_STATUS: dict[int, int] = {
    KEY_NOT_FOUND: 404,
    NOT_FILE: 403,
    DIR_NOT_EMPTY: 403,
    UNAUTHORIZED: 401,
    TEST_FAILED: 412,
    NODE_EXIST: 412,
    RAFT_INTERNAL: 500,
    LEADER_ELECT: 500,
}


class V2Error(Exception):
    """A v2 error; `index` is the store index when it happened (0 for request errors)."""

    def __init__(self, code: int, cause: str = "", index: int = 0) -> None:
        super().__init__(f"{MESSAGES.get(code, '')} ({cause})")
        self.code = code
        self.cause = cause
        self.index = index

    @property
    def message(self) -> str:
        return MESSAGES.get(self.code, "")

    @property
    def status(self) -> int:
        return _STATUS.get(self.code, 400)

    def body(self) -> bytes:
        """The JSON body etcd writes (field order and omitted empty cause as Go's)."""
        out: dict[str, object] = {"errorCode": self.code, "message": self.message}
        if self.cause:
            out["cause"] = self.cause
        out["index"] = self.index
        return go_json(out) + b"\n"


def go_json(value: object) -> bytes:
    """JSON as Go's encoding/json writes it: compact, UTF-8, with <, >, &, U+2028 and
    U+2029 escaped, \\b and \\f as \\u0008 and \\u000c, and each byte that is not UTF-8
    (kept by surrogateescape) as \\ufffd."""
    return go_text(_ENCODER.encode(value))


def go_text(text: str) -> bytes:
    """Compact JSON text (as json.dumps writes it, ensure_ascii off) in Go's form."""
    if text.isascii() and "\\" not in text and "<" not in text and ">" not in text \
            and "&" not in text:
        return text.encode()  # nothing to rewrite (the common case: no regex pass)
    return _GO_ESCAPES.sub(_go_escape, text).encode("utf-8")


# (one encoder: json.dumps with options builds a new one on every call)
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


_GO_ESCAPES = re.compile(r'\\.|[<>&\u2028\u2029\udc80-\udcff]')
_GO_SHORT = {"\\b": "\\u0008", "\\f": "\\u000c"}


def _go_escape(m: re.Match[str]) -> str:
    s = m.group()
    if s[0] == "\\":
        return _GO_SHORT.get(s, s)
    if "\udc80" <= s <= "\udcff":
        return "\\ufffd"
    return f"\\u{ord(s):04x}"
