"""HPACK (RFC 7541) for a gRPC server: a decoder with a cache, and the few encodings
the server sends.

Decoding: clients with a warm table (grpc-go's, grpcio's) send the same header block
call after call, made of indexed fields only; such a block decodes to the same list as
long as the dynamic table has not changed since, so it is cached (block bytes -> list,
checked against a table generation counter). Other blocks are decoded field by field;
Huffman strings are decoded by the `hpack` library and remembered (a varying
grpc-timeout value is the common case). The static table is the `hpack` library's.

Encoding: the server never inserts into its dynamic table (literal fields without
indexing only), so its header blocks do not depend on state and constant ones
(`:status 200` + content-type, `grpc-status: 0`) are pre-encoded once.
"""

from __future__ import annotations

from hpack.huffman_table import decode_huffman
from hpack.table import HeaderTable

Header = tuple[str, str]

_STATIC: tuple[Header, ...] = tuple(
    (n.decode("latin-1"), v.decode("latin-1")) for n, v in HeaderTable.STATIC_TABLE)
_STATIC_LEN = len(_STATIC)
_ENTRY_OVERHEAD = 32  # RFC 7541 4.1


class HpackError(Exception):
    """The header block cannot be decoded: a connection error (COMPRESSION_ERROR)."""


class Decoder:
    __slots__ = ("_block_cache", "_dynamic", "_generation", "_huffman_cache", "_size",
                 "max_size", "settings_max_size")

    def __init__(self, max_size: int = 4096) -> None:
        self._dynamic: list[Header] = []  # newest first
        self._size = 0
        self.max_size = max_size
        self.settings_max_size = max_size  # what we announced: the peer's upper bound
        self._generation = 0
        self._block_cache: dict[bytes, tuple[int, list[Header]]] = {}
        self._huffman_cache: dict[bytes, str] = {}

    def decode(self, block: bytes) -> list[Header]:
        """The header list of a block. Callers must not modify the returned list."""
        hit = self._block_cache.get(block)
        if hit is not None and hit[0] == self._generation:
            return hit[1]
        generation = self._generation
        headers = self._decode(block)
        if self._generation == generation:  # only indexed or non-indexing fields
            if len(self._block_cache) >= 256:
                self._block_cache.clear()
            self._block_cache[block] = (generation, headers)
        return headers

    def _field(self, index: int) -> Header:
        if index <= 0:
            raise HpackError("index 0")
        if index <= _STATIC_LEN:
            return _STATIC[index - 1]
        i = index - _STATIC_LEN - 1
        if i >= len(self._dynamic):
            raise HpackError(f"index {index} beyond the table")
        return self._dynamic[i]

    def _decode(self, data: bytes) -> list[Header]:
        out: list[Header] = []
        pos = 0
        end = len(data)
        first = True
        while pos < end:
            b = data[pos]
            if b & 0x80:  # indexed field
                index, pos = _integer(data, pos, 7)
                out.append(self._field(index))
                first = False
                continue
            if b & 0xE0 == 0x20:  # dynamic table size update: only before the first field
                size, pos = _integer(data, pos, 5)
                if not first or size > self.settings_max_size:
                    raise HpackError("bad dynamic table size update")
                self.max_size = size
                self._evict(0)
                self._generation += 1
                continue
            first = False
            if b & 0x40:  # literal with incremental indexing
                index, pos = _integer(data, pos, 6)
                indexing = True
            else:  # without indexing (0000) / never indexed (0001)
                index, pos = _integer(data, pos, 4)
                indexing = False
            if index:
                name = self._field(index)[0]
            else:
                name, pos = self._string(data, pos)
            value, pos = self._string(data, pos)
            out.append((name, value))
            if indexing:
                self._insert(name, value)
        return out

    def _string(self, data: bytes, pos: int) -> tuple[str, int]:
        if pos >= len(data):
            raise HpackError("truncated string")
        huffman = data[pos] & 0x80
        length, pos = _integer(data, pos, 7)
        stop = pos + length
        if stop > len(data):
            raise HpackError("truncated string")
        raw = data[pos:stop]
        if not huffman:
            return raw.decode("latin-1"), stop
        text = self._huffman_cache.get(raw)
        if text is None:
            try:
                text = decode_huffman(raw).decode("latin-1")
            except Exception as e:  # the library raises its own HPACKDecodingError
                raise HpackError(f"bad Huffman string: {e}") from None
            if len(self._huffman_cache) >= 1024:
                self._huffman_cache.clear()
            self._huffman_cache[raw] = text
        return text, stop

    def _insert(self, name: str, value: str) -> None:
        size = len(name) + len(value) + _ENTRY_OVERHEAD  # latin-1: one char per octet
        self._generation += 1
        if size > self.max_size:  # RFC 7541 4.4: empties the table, adds nothing
            self._dynamic.clear()
            self._size = 0
            return
        self._evict(size)
        self._dynamic.insert(0, (name, value))
        self._size += size

    def _evict(self, room: int) -> None:
        dyn = self._dynamic
        while dyn and self._size + room > self.max_size:
            n, v = dyn.pop()
            self._size -= len(n) + len(v) + _ENTRY_OVERHEAD


def _integer(data: bytes, pos: int, prefix_bits: int) -> tuple[int, int]:
    """RFC 7541 5.1: (value, position after it)."""
    mask = (1 << prefix_bits) - 1
    value = data[pos] & mask
    pos += 1
    if value < mask:
        return value, pos
    shift = 0
    while True:
        if pos >= len(data) or shift > 28:
            raise HpackError("bad integer")
        b = data[pos]
        pos += 1
        value += (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, pos


def encode_integer(value: int, prefix_bits: int, first: int = 0) -> bytes:
    mask = (1 << prefix_bits) - 1
    if value < mask:
        return bytes((first | value,))
    out = bytearray((first | mask,))
    value -= mask
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_literal(name: bytes, value: bytes) -> bytes:
    """A literal field without indexing, new name, no Huffman."""
    return (b"\x00" + encode_integer(len(name), 7) + name
            + encode_integer(len(value), 7) + value)


def _literal_indexed_name(index: int, value: bytes) -> bytes:
    return encode_integer(index, 4) + encode_integer(len(value), 7) + value


STATUS_200 = b"\x88"  # static index 8
CONTENT_TYPE_GRPC = _literal_indexed_name(31, b"application/grpc")  # 31: content-type
RESPONSE_HEADERS = STATUS_200 + CONTENT_TYPE_GRPC


def status_line(status: int) -> bytes:
    """`:status` for a non-200 HTTP answer (static index 8 is only 200)."""
    return _literal_indexed_name(8, str(status).encode())
