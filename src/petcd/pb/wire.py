"""Protobuf wire-format pieces that hot paths and file formats write by hand (a varint
length or field, instead of building a message to serialize it)."""

from __future__ import annotations


_ONE_BYTE = [bytes((i,)) for i in range(0x80)]


def varint(n: int) -> bytes:
    """Base-128 varint of a non-negative int (mask a negative int64 to 64 bits first)."""
    # Most are lengths and small numbers: one or two bytes without a loop; revisions
    # (three or four bytes up to 268 million) without one either.
    if 0 <= n < 0x80:
        return _ONE_BYTE[n]
    if n < 0x4000:
        return bytes(((n & 0x7F) | 0x80, n >> 7))
    if n < 0x200000:
        return bytes(((n & 0x7F) | 0x80, (n >> 7 & 0x7F) | 0x80, n >> 14))
    if n < 0x10000000:
        return bytes(((n & 0x7F) | 0x80, (n >> 7 & 0x7F) | 0x80, (n >> 14 & 0x7F) | 0x80,
                      n >> 21))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def varint_len(n: int) -> int:
    return max(1, (n.bit_length() + 6) // 7)


def read_varint(buf: bytes, i: int) -> tuple[int, int]:
    """(value, position after it) of the varint at buf[i]; ValueError if it is cut
    short or longer than ten bytes."""
    n = shift = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise ValueError("malformed varint")
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        if b < 0x80:
            return n, i
        shift += 7


class LazyMessage:
    """A serialized message made in pieces as it is sent, for a response too large to
    hold at once: its `size` is known before the first piece (gRPC's length prefix
    comes first). A server that cannot send pieces calls `read_all()`."""

    __slots__ = ("size",)

    def __init__(self, size: int) -> None:
        self.size = size

    def next_chunk(self) -> bytes | bytearray | None:
        """The next piece (None after the last); may raise the error that ends the call."""
        raise NotImplementedError

    def read_all(self) -> bytearray:
        """The whole message in one buffer (what streaming it avoids)."""
        out = bytearray(self.size)
        view = memoryview(out)
        at = 0
        while (chunk := self.next_chunk()) is not None:
            view[at:at + len(chunk)] = chunk  # (raises if it would not fit)
            at += len(chunk)
        if at != self.size:
            raise RuntimeError(f"lazy message of {at} bytes, not {self.size}")
        return out
