"""gRPC status in HTTP/2 trailers (grpc-status, percent-encoded grpc-message), and the
status messages grpc-go sends (etcd's clients may see them)."""

from __future__ import annotations

import grpc

from petcd.api.h2.hpack_codec import RESPONSE_HEADERS, encode_literal, status_line

OK_TRAILERS = encode_literal(b"grpc-status", b"0")

_CODE_VALUES: dict[grpc.StatusCode, int] = {c: int(c.value[0]) for c in grpc.StatusCode}
_SAFE = frozenset(range(0x20, 0x7F)) - {ord("%")}


def code_value(code: grpc.StatusCode) -> int:
    return _CODE_VALUES[code]


def percent_encode(message: str) -> bytes:
    """grpc-message encoding: UTF-8, then %XX for bytes outside printable ASCII and '%'."""
    raw = message.encode("utf-8", "surrogateescape")
    if all(b in _SAFE for b in raw):
        return raw
    return b"".join(bytes((b,)) if b in _SAFE else b"%%%02X" % b for b in raw)


def metadata_block(metadata: object) -> bytes:
    """Custom metadata as literal fields ('-bin' keys carry base64 of bytes values)."""
    import base64

    out = []
    for key, value in metadata or ():  # type: ignore[attr-defined]
        k = str(key).lower()
        if k.endswith("-bin"):
            v = base64.b64encode(value if isinstance(value, bytes) else
                                 str(value).encode()).rstrip(b"=")
        else:
            v = value if isinstance(value, bytes) else str(value).encode()
        out.append(encode_literal(k.encode("ascii"), v))
    return b"".join(out)


def status_block(code: grpc.StatusCode, message: str, trailing: bytes = b"") -> bytes:
    """Trailer fields for a status (after response headers were sent)."""
    if code is grpc.StatusCode.OK and not message:
        return OK_TRAILERS + trailing
    out = encode_literal(b"grpc-status", str(_CODE_VALUES[code]).encode())
    if message:
        out += encode_literal(b"grpc-message", percent_encode(message))
    return out + trailing


def trailers_only_block(code: grpc.StatusCode, message: str, trailing: bytes = b"",
                        http_status: int = 200) -> bytes:
    """A Trailers-Only response: one header block with status and content-type too."""
    head = RESPONSE_HEADERS if http_status == 200 else (
        status_line(http_status) + RESPONSE_HEADERS[1:])
    return head + status_block(code, message, trailing)
