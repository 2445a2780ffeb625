"""Protobuf wire-format pieces that hot paths and file formats write by hand (a varint
length or field, instead of building a message to serialize it)."""

from __future__ import annotations


def varint(n: int) -> bytes:
    """Base-128 varint of a non-negative int (mask a negative int64 to 64 bits first)."""
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def varint_len(n: int) -> int:
    return max(1, (n.bit_length() + 6) // 7)
