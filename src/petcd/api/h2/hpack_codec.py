"""HPACK (RFC 7541) for a gRPC server: a decoder with a cache, and the few encodings
the server sends.

Decoding: clients with a warm table (grpc-go's, grpcio's) send the same header block
call after call, made of indexed fields only; such a block decodes to the same list as
long as the dynamic table has not changed since, so it is cached (block bytes -> list,
checked against a table generation counter). Other blocks are decoded field by field;
Huffman strings are decoded by the `hpack` library and remembered (a varying
grpc-timeout value is the common case). The static table is the `hpack` library's.

Bounds (per connection, so a client cannot grow them): the dynamic table is the
4096 octets we announce; a decoded list may not exceed max_list_size (checked field
by field, so a small block of references to one big entry is stopped too); the block
cache holds only blocks of <= 1 KiB whose list is <= 8 KiB, at most 256 of them and
128 KiB in all; the Huffman cache only strings of <= 64 octets, at most 256.

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


CACHED_BLOCK_MAX = 1024  # block bytes
CACHED_LIST_MAX = 8192  # decoded list size (RFC 9113 accounting)
CACHE_ENTRIES = 256
CACHE_BYTES = 128 * 1024  # block bytes + list sizes of all cached entries
HUFFMAN_CACHED_MAX = 64
HUFFMAN_ENTRIES = 256


class HpackError(Exception):
    """The header block cannot be decoded: a connection error (COMPRESSION_ERROR)."""


class HeaderListTooLarge(Exception):
    """The decoded list exceeds max_list_size. The whole block was decoded (the dynamic
    table stays in step with the client's) but the list kept: the request is refused."""


class Block:
    """A decoded header block: its list, the list's size (RFC 9113 6.5.2), and `head`
    for the caller to cache what it derives."""

    __slots__ = ("head", "headers", "size")

    def __init__(self, headers: list[Header], size: int) -> None:
        self.headers = headers
        self.size = size
        self.head: object = None


class Decoder:
    __slots__ = ("_cache_bytes", "_dynamic", "_huffman_cache", "_size", "block_cache",
                 "generation", "max_list_size", "max_size", "settings_max_size")

    def __init__(self, max_size: int = 4096, max_list_size: int = 64 * 1024) -> None:
        self._dynamic: list[Header] = []  # newest first
        self._size = 0
        self.max_size = max_size
        self.settings_max_size = max_size  # what we announced: the peer's upper bound
        self.max_list_size = max_list_size
        # Blocks decoded before -> (the table generation they were decoded at, their
        # list): valid while the generation is the same (read by the connection too).
        self.generation = 0
        self.block_cache: dict[bytes, tuple[int, Block]] = {}
        self._cache_bytes = 0
        self._huffman_cache: dict[bytes, str] = {}

    def decode(self, block: bytes) -> Block:
        """The header list of a block (raises HpackError, HeaderListTooLarge). Callers
        must not modify the returned list."""
        hit = self.block_cache.get(block)
        if hit is not None and hit[0] == self.generation:
            return hit[1]
        generation = self.generation
        headers, size = self._decode(block)
        blk = Block(headers, size)
        # Cached only when no field changed the table, and small: a client repeating
        # its block gets the fast path, one sending many distinct blocks costs no memory.
        if (self.generation == generation and len(block) <= CACHED_BLOCK_MAX
                and size <= CACHED_LIST_MAX):
            cost = len(block) + size
            cache = self.block_cache
            if len(cache) >= CACHE_ENTRIES or self._cache_bytes + cost > CACHE_BYTES:
                cache.clear()
                self._cache_bytes = 0
            cache[block] = (generation, blk)
            self._cache_bytes += cost
        return blk

    def _field(self, index: int) -> Header:
        if index <= 0:
            raise HpackError("index 0")
        if index <= _STATIC_LEN:
            return _STATIC[index - 1]
        i = index - _STATIC_LEN - 1
        if i >= len(self._dynamic):
            raise HpackError(f"index {index} beyond the table")
        return self._dynamic[i]

    def _decode(self, data: bytes) -> tuple[list[Header], int]:
        out: list[Header] = []
        append = out.append
        pos = 0
        end = len(data)
        first = True
        size = 0  # the list's size as RFC 9113 6.5.2 counts it (names, values, 32 each)
        limit = self.max_list_size
        while pos < end:
            b = data[pos]
            if b & 0x80:  # indexed field
                index, pos = _integer(data, pos, 7)
                field = self._field(index)
                size += len(field[0]) + len(field[1]) + _ENTRY_OVERHEAD
                if size > limit:
                    append = _discard  # keep decoding for the table, keep nothing
                append(field)
                first = False
                continue
            if b & 0xE0 == 0x20:  # dynamic table size update: only before the first field
                size, pos = _integer(data, pos, 5)
                if not first or size > self.settings_max_size:
                    raise HpackError("bad dynamic table size update")
                self.max_size = size
                self._evict(0)
                self.generation += 1
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
            size += len(name) + len(value) + _ENTRY_OVERHEAD
            if size > limit:
                append = _discard
            append((name, value))
            if indexing:
                self._insert(name, value)
        if size > limit:
            raise HeaderListTooLarge(f"header list of {size} bytes exceeds {limit}")
        return out, size

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
            if len(raw) <= HUFFMAN_CACHED_MAX:
                if len(self._huffman_cache) >= HUFFMAN_ENTRIES:
                    self._huffman_cache.clear()
                self._huffman_cache[raw] = text
        return text, stop

    def _insert(self, name: str, value: str) -> None:
        size = len(name) + len(value) + _ENTRY_OVERHEAD  # latin-1: one char per octet
        self.generation += 1
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


def _discard(field: Header) -> None:
    pass


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
