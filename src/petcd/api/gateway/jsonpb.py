"""Protobuf <-> JSON as etcd 3.4's grpc-gateway does it (golang/protobuf jsonpb with
OrigName, defaults omitted, enums by name, 64-bit integers as strings, bytes as padded
standard base64). Parse errors carry the words Go's decoders use, since the gateway
sends those to clients verbatim.

Written by hand rather than with google.protobuf.json_format: json_format's text for
bad input is Python's, it rejects unknown fields etcd's gateway ignores, and its
printer walks descriptors slower than this encoder does."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterator
from typing import Any

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

_FD = FieldDescriptor
_INT64 = frozenset({_FD.TYPE_INT64, _FD.TYPE_SINT64, _FD.TYPE_SFIXED64})
_UINT64 = frozenset({_FD.TYPE_UINT64, _FD.TYPE_FIXED64})
_INT32 = frozenset({_FD.TYPE_INT32, _FD.TYPE_SINT32, _FD.TYPE_SFIXED32})
_UINT32 = frozenset({_FD.TYPE_UINT32, _FD.TYPE_FIXED32})
_FLOAT = frozenset({_FD.TYPE_DOUBLE, _FD.TYPE_FLOAT})
_GO_SCALAR = {
    **{t: "int64" for t in _INT64}, **{t: "uint64" for t in _UINT64},
    **{t: "int32" for t in _INT32}, **{t: "uint32" for t in _UINT32},
    _FD.TYPE_DOUBLE: "float64", _FD.TYPE_FLOAT: "float32", _FD.TYPE_BOOL: "bool",
    _FD.TYPE_STRING: "string", _FD.TYPE_BYTES: "[]uint8",
}
_RANGES = {"int64": (-2**63, 2**63 - 1), "uint64": (0, 2**64 - 1),
           "int32": (-2**31, 2**31 - 1), "uint32": (0, 2**32 - 1)}
_B64_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
_WS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


class JsonError(ValueError):
    """A request body the gateway cannot turn into a message; str() is Go's text."""


# -- decoding -------------------------------------------------------------------------

def _json_kind(v: object) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, str):
        return "string"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return "object"
    return "null"


def _quote_char(c: str) -> str:
    if c == "'":
        return "'\\''"
    if c == '"':
        return "'\"'"
    return "'" + json.dumps(c, ensure_ascii=False)[1:-1] + "'"


def _syntax_error(e: json.JSONDecodeError) -> JsonError:
    """Go's encoding/json words for the same mistake (the common ones)."""
    doc, pos = e.doc, e.pos
    if pos >= len(doc) or not doc[pos:].strip():
        return JsonError("unexpected EOF")
    c = _quote_char(doc[pos])
    msg = e.msg
    if msg.startswith("Expecting property name"):
        where = "looking for beginning of object key string"
    elif msg.startswith("Expecting ':'"):
        where = "after object key"
    elif msg.startswith("Expecting ','"):
        where = "after object key:value pair"
    elif msg.startswith("Invalid control character"):
        where = "in string literal"
    elif msg.startswith("Invalid \\escape"):
        where = "in string escape code"
    else:
        where = "looking for beginning of value"
    return JsonError(f"invalid character {c} {where}")


def iter_values(body: str) -> Iterator[Any]:
    """Successive JSON values of a body (a streaming request), as Go's json.Decoder
    reads them; a syntax error ends the sequence with JsonError."""
    pos = _WS.match(body, 0).end()  # type: ignore[union-attr]
    while pos < len(body):
        try:
            value, pos = _DECODER.raw_decode(body, pos)
        except json.JSONDecodeError as e:
            raise _syntax_error(e) from None
        yield value
        pos = _WS.match(body, pos).end()  # type: ignore[union-attr]


_NUMBER_PREFIX = re.compile(r"-?[0-9]*\.?[0-9]*(?:[eE][+-]?[0-9]*)?")


def next_value(text: str, pos: int, *, more: bool) -> tuple[Any, int] | None:
    """The JSON value after blanks at text[pos:] and where it ends; None if there is
    none yet. `more`: text is the start of a body still arriving, so a value cut short
    at its end is awaited (None) instead of being a syntax error."""
    pos = _WS.match(text, pos).end()  # type: ignore[union-attr]
    if pos >= len(text):
        return None
    try:
        return _DECODER.raw_decode(text, pos)  # type: ignore[no-any-return]
    except json.JSONDecodeError as e:
        if more and _cut_short(e):
            return None
        raise _syntax_error(e) from None


def _cut_short(e: json.JSONDecodeError) -> bool:
    rest = e.doc[e.pos:]
    if not rest.strip() or e.msg.startswith("Unterminated string"):
        return True
    if not e.msg.startswith("Expecting value"):
        return False
    return any(word.startswith(rest) for word in ("true", "false", "null")) or (
        _NUMBER_PREFIX.fullmatch(rest) is not None)


def parse(body: bytes, cls: type[Message]) -> Message:
    """The first JSON value of the body as a `cls` (an empty body: an empty message)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        text = body.decode("utf-8", "replace")
    for value in iter_values(text):
        return from_value(value, cls)
    return cls()


def from_value(value: Any, cls: type[Message]) -> Message:
    msg = cls()
    _fill(msg, value)
    return msg


def _fill(msg: Message, value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        raise JsonError(f"json: cannot unmarshal {_json_kind(value)} into Go value of type "
                        "map[string]json.RawMessage")
    fields = _field_names(msg.DESCRIPTOR)  # type: ignore[arg-type]
    for name, v in value.items():
        fd = fields.get(name)
        if fd is None or v is None:
            continue  # etcd's gateway ignores unknown fields
        if fd.is_repeated:
            if not isinstance(v, list):
                raise JsonError(f"json: cannot unmarshal {_json_kind(v)} into Go value of "
                                f"type []{_go_type(fd)}")
            target = getattr(msg, fd.name)
            for item in v:
                if fd.type == _FD.TYPE_MESSAGE:
                    _fill(target.add(), item)
                else:
                    target.append(_scalar(fd, item))
        elif fd.type == _FD.TYPE_MESSAGE:
            sub = getattr(msg, fd.name)
            sub.SetInParent()
            _fill(sub, v)
        else:
            setattr(msg, fd.name, _scalar(fd, v))


_NAMES: dict[str, dict[str, FieldDescriptor]] = {}


def _field_names(d: Descriptor) -> dict[str, FieldDescriptor]:
    names = _NAMES.get(d.full_name)
    if names is None:
        names = {}
        for fd in d.fields:
            names[fd.json_name] = fd
            names[fd.name] = fd
        _NAMES[d.full_name] = names
    return names


def _go_type(fd: FieldDescriptor) -> str:
    if fd.message_type is not None:
        return "*" + _go_name(fd.message_type.full_name, fd.message_type.file.package)
    if fd.enum_type is not None:
        return _go_name(fd.enum_type.full_name, fd.enum_type.file.package)
    return _GO_SCALAR[fd.type]


def _go_name(full_name: str, package: str) -> str:
    local = full_name[len(package) + 1:] if package else full_name
    return f"{package}.{local.replace('.', '_')}" if package else local


def _scalar(fd: FieldDescriptor, v: Any) -> Any:
    t = fd.type
    if fd.enum_type is not None:
        return _enum(fd.enum_type, v)
    if t == _FD.TYPE_BOOL:
        if not isinstance(v, bool):
            raise _type_error(v, "bool")
        return v
    if t == _FD.TYPE_STRING:
        if not isinstance(v, str):
            raise _type_error(v, "string")
        return v
    if t == _FD.TYPE_BYTES:
        if not isinstance(v, str):
            raise _type_error(v, "[]uint8")
        return go_b64decode(v)
    go = _GO_SCALAR[t]
    if isinstance(v, str) and (t in _INT64 or t in _UINT64 or t in _FLOAT):
        # jsonpb takes 64-bit integers and floats quoted too: the text inside is JSON.
        if not v.strip():
            raise JsonError("unexpected end of JSON input")
        try:
            v = json.loads(v)
        except json.JSONDecodeError as e:
            raise _syntax_error(e) from None
        if isinstance(v, str):
            raise _type_error(v, go)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _type_error(v, go)
    if t in _FLOAT:
        return float(v)
    lo, hi = _RANGES[go]
    if isinstance(v, float) or not lo <= v <= hi:
        raise JsonError(f"json: cannot unmarshal number {_go_number(v)} into Go value of "
                        f"type {go}")
    return v


def _go_number(v: float) -> str:
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e21:
        return str(int(v))
    return repr(v)


def _type_error(v: Any, go: str) -> JsonError:
    return JsonError(f"json: cannot unmarshal {_json_kind(v)} into Go value of type {go}")


def _enum(ed: EnumDescriptor, v: Any) -> int:
    if isinstance(v, str):
        ev = ed.values_by_name.get(v)
        if ev is None:
            raise JsonError(f"unknown value {json.dumps(v)} for enum "
                            f"{_go_name(ed.full_name, ed.file.package)}")
        return int(ev.number)
    if isinstance(v, bool) or not isinstance(v, int):
        if isinstance(v, float):
            raise JsonError(f"json: cannot unmarshal number {_go_number(v)} into Go value "
                            "of type int32")
        raise _type_error(v, _go_name(ed.full_name, ed.file.package))
    return v


def go_b64decode(s: str) -> bytes:
    """Go's base64.StdEncoding: padding required, CR/LF skipped, the error naming the
    byte offset Go names."""
    raw = s.encode("utf-8", "surrogatepass")
    n = len(raw)
    if n % 4 == 0 and raw.find(b"=") in (-1, n - 1, n - 2):  # the common case, in C
        try:
            return binascii.a2b_base64(raw, strict_mode=True)
        except binascii.Error:
            pass
    bad = _b64_error_offset(raw)
    if bad is not None:
        raise JsonError(f"illegal base64 data at input byte {bad}")
    if b"\n" in raw or b"\r" in raw:
        raw = raw.replace(b"\n", b"").replace(b"\r", b"")
    return base64.b64decode(raw)


def _b64_error_offset(src: bytes) -> int | None:
    """Where Go's decoder stops on this input, or None if it decodes (Go's
    decodeQuantum, reduced to its error cases)."""
    si, n = 0, len(src)
    while True:
        j = 0
        while j < 4:
            if si == n:
                return None if j == 0 else si - j
            c = src[si]
            si += 1
            if c in _B64_CHARS:
                j += 1
                continue
            if c in (10, 13):
                continue
            if c != 61 or j < 2:  # not '=', or padding too early
                return si - 1
            if j == 2:  # "==" expected: the second '=' must follow
                while si < n and src[si] in (10, 13):
                    si += 1
                if si == n:
                    return n
                if src[si] != 61:
                    return si - 1
                si += 1
            while si < n and src[si] in (10, 13):
                si += 1
            return si if si < n else None  # after padding only the end may follow


# -- encoding -------------------------------------------------------------------------

_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026",
            "\u2028": "\\u2028", "\u2029": "\\u2029"}
_HTML = re.compile("[<>&\u2028\u2029]")


def _go_string(s: str) -> str:
    out = json.dumps(s, ensure_ascii=False)
    if _HTML.search(out):
        out = _HTML.sub(lambda m: _ESCAPES[m.group()], out)
    return out


def to_json(msg: Message) -> str:
    """The message as grpc-gateway's JSONPb marshaler (OrigName) writes it."""
    parts: list[str] = []
    _encode(msg, parts)
    return "".join(parts)


# Per field: its '"name":' prefix, how its values are written, enum names by number.
_MESSAGE, _BYTES, _QUOTED, _BOOL, _STRING, _ENUM, _NUMBER = range(7)
_FieldInfo = tuple[str, int, bool, int, dict[int, str] | None]
_INFO: dict[FieldDescriptor, _FieldInfo] = {}


def _info(fd: FieldDescriptor) -> _FieldInfo:
    info = _INFO.get(fd)
    if info is None:
        t = fd.type
        names = None
        if t == _FD.TYPE_MESSAGE:
            kind = _MESSAGE
        elif t == _FD.TYPE_BYTES:
            kind = _BYTES
        elif t in _INT64 or t in _UINT64:
            kind = _QUOTED
        elif t == _FD.TYPE_BOOL:
            kind = _BOOL
        elif t == _FD.TYPE_STRING:
            kind = _STRING
        elif fd.enum_type is not None:
            kind = _ENUM
            names = {v.number: v.name for v in fd.enum_type.values}
        else:
            kind = _NUMBER
        info = _INFO[fd] = (f'"{fd.name}":', kind, fd.is_repeated, fd.index, names)
    return info


def _encode(msg: Message, out: list[str]) -> None:
    append = out.append
    append("{")
    fields = [(_info(fd), v) for fd, v in msg.ListFields()]
    if len(fields) > 1:
        fields.sort(key=lambda f: f[0][3])  # declaration order, as Go's struct
    first = True
    for (prefix, kind, repeated, _, names), value in fields:
        if first:
            first = False
        else:
            append(",")
        append(prefix)
        if repeated:
            append("[")
            for i, item in enumerate(value):
                if i:
                    append(",")
                _value(kind, names, item, out)
            append("]")
        else:
            _value(kind, names, value, out)
    append("}")


def _value(kind: int, names: dict[int, str] | None, v: Any, out: list[str]) -> None:
    if kind == _MESSAGE:
        _encode(v, out)
    elif kind == _BYTES:
        out.append('"' + base64.b64encode(v).decode("ascii") + '"')
    elif kind == _QUOTED:
        out.append(f'"{v}"')
    elif kind == _BOOL:
        out.append("true" if v else "false")
    elif kind == _STRING:
        out.append(_go_string(v))
    elif kind == _ENUM:
        name = names.get(v) if names is not None else None
        out.append(f'"{name}"' if name is not None else str(v))
    else:
        out.append(json.dumps(v))
