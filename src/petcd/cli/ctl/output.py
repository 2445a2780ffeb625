"""How etcdctl 3.4 prints: Go's %q quoting, --hex byte strings, encoding/json of the
gogo-generated structs (proto field names, omitempty, bytes as base64, enums as
numbers, a oneof under its Go field name), the `fields` format's header lines, and
the unsupported-format error. Imports protobuf only when a message is printed."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from petcd.cli.ctl.common import EXIT_BAD_FEATURE, CtlError, render_table

_ESC = {7: "\\a", 8: "\\b", 12: "\\f", 10: "\\n", 13: "\\r", 9: "\\t", 11: "\\v",
        34: '\\"', 92: "\\\\"}


def go_quote(data: bytes | str) -> str:
    """Go's strconv.Quote of a byte string."""
    if isinstance(data, str):
        data = data.encode()
    out = ['"']
    i = 0
    text = data
    while i < len(text):
        b = text[i]
        if b < 0x80:
            if b in _ESC:
                out.append(_ESC[b])
            elif b < 0x20 or b == 0x7F:
                out.append(f"\\x{b:02x}")
            else:
                out.append(chr(b))
            i += 1
            continue
        # a UTF-8 sequence: printable runes stay, invalid bytes are \xNN
        n = 2 if b >> 5 == 0b110 else 3 if b >> 4 == 0b1110 else 4 if b >> 3 == 0b11110 else 0
        try:
            ch = text[i:i + n].decode() if n else ""
        except UnicodeDecodeError:
            ch = ""
        if not ch:
            out.append(f"\\x{b:02x}")
            i += 1
            continue
        cp = ord(ch)
        if ch.isprintable():
            out.append(ch)
        elif cp < 0x10000:
            out.append(f"\\u{cp:04x}")
        else:
            out.append(f"\\U{cp:08x}")
        i += n
    out.append('"')
    return "".join(out)


def hexed(data: bytes) -> str:
    return "".join(f"\\x{b:02x}" for b in data)


def text(data: bytes) -> str:
    """Bytes printed as Go prints a string (raw bytes)."""
    return data.decode("utf-8", "surrogateescape")


def write(s: str) -> None:
    sys.stdout.buffer.write(s.encode("utf-8", "surrogateescape"))


def unsupported(fmt: str) -> CtlError:
    return CtlError(f"{fmt} not supported as output format", EXIT_BAD_FEATURE)


# Fields etcd 3.5 added that etcdctl 3.4 does not know (it drops them when decoding).
_NOT_IN_34 = {"hash_revision"}


def go_json_value(msg: Any) -> dict[str, Any]:
    """A protobuf message as Go's encoding/json writes etcd's gogo struct."""
    out: dict[str, Any] = {}
    for fd in msg.DESCRIPTOR.fields:
        if fd.name in _NOT_IN_34:
            continue
        if fd.containing_oneof is not None:
            if msg.WhichOneof(fd.containing_oneof.name) != fd.name:
                continue
            value = getattr(msg, fd.name)
            go_name = "".join(p.capitalize() for p in fd.containing_oneof.name.split("_"))
            field_go = "".join(p[:1].upper() + p[1:] for p in fd.name.split("_"))
            out[go_name] = {field_go: go_json_value(value)}
            continue
        value = getattr(msg, fd.name)
        if fd.is_repeated:
            if not len(value):
                continue
            out[fd.name] = [_scalar(fd, v) for v in value]
        elif fd.type == fd.TYPE_MESSAGE:
            if not msg.HasField(fd.name):
                continue
            out[fd.name] = go_json_value(value)
        else:
            if not value:
                continue
            out[fd.name] = _scalar(fd, value)
    return out


def _scalar(fd: Any, v: Any) -> Any:
    if fd.type == fd.TYPE_MESSAGE:
        return go_json_value(v)
    if fd.type == fd.TYPE_BYTES:
        import base64  # (json output only: kept out of start-up)

        return base64.b64encode(v).decode()
    return v


def dumps(value: Any) -> str:
    """Compact JSON as Go writes it (no spaces; <, >, & escaped as Go does)."""
    import json

    s = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return s.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def print_json(value: Any) -> None:
    write(dumps(value) + "\n")


def print_pb(msg: Any) -> None:
    sys.stdout.buffer.write(msg.SerializeToString())


def header_fields(h: Any) -> str:
    return (f'"ClusterID" : {h.cluster_id}\n"MemberID" : {h.member_id}\n'
            f'"Revision" : {h.revision}\n"RaftTerm" : {h.raft_term}\n')


def kv_fields(kv: Any, pfx: str = "") -> str:
    return (f'"{pfx}Key" : {go_quote(kv.key)}\n'
            f'"{pfx}CreateRevision" : {kv.create_revision}\n'
            f'"{pfx}ModRevision" : {kv.mod_revision}\n'
            f'"{pfx}Version" : {kv.version}\n'
            f'"{pfx}Value" : {go_quote(kv.value)}\n'
            f'"{pfx}Lease" : {kv.lease}\n')


def kv_simple(kv: Any, is_hex: bool, value_only: bool = False) -> str:
    k, v = (hexed(kv.key), hexed(kv.value)) if is_hex else (text(kv.key), text(kv.value))
    return (v + "\n") if value_only else f"{k}\n{v}\n"


def go_bool(b: bool) -> str:
    return "true" if b else "false"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    return render_table(header, rows) if rows else _empty_table(header)


def _empty_table(header: Sequence[str]) -> str:
    header = [h.upper() for h in header]
    line = "+" + "+".join("-" * (len(h) + 2) for h in header) + "+"
    return "\n".join([line, "|" + "|".join(f" {h} " for h in header) + "|", line, line]) \
        + "\n"
