"""The byte layout of WAL segments (our own format, little-endian).

A segment is a sequence of frames, each starting at a multiple of 8:

    header (16 bytes): u16 check | u8 type | u8 0 | u32 length | u32 prev_crc | u32 crc
    payload (length bytes), then zero padding up to the next multiple of 8

`crc` is CRC-32 over header bytes 2..12 and the payload; `prev_crc` is the
`crc` of the frame before it (across segment boundaries too), which chains
the frames so a lost or reordered frame is noticed. `check` is the low 16
bits of CRC-32 over header bytes 2..16: it tells a damaged header from a
damaged payload, and lets recovery spot intact frames behind damage.
An all-zero header marks the end of the written part of a segment.

Two frame types exist. A SEGMENT frame opens every segment: format
version, segment sequence number, first log index the segment may hold,
the current hard state and the metadata (member and cluster IDs). A BATCH
frame is one durable write: optionally a hard state, optionally a snapshot
marker, then zero or more consecutive entries stored column-wise (terms,
lengths, types, then all data) so encoding and decoding run in C loops.
Every write of the WAL is exactly one frame followed by one fdatasync.
"""

from __future__ import annotations

import struct
import sys
import zlib
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import accumulate

from petcd.raft.types import ConfState, Entry, EntryType, HardState

FORMAT_VERSION = 1
ALIGN = 8
SECTOR = 512  # torn-write detection granularity: a disk never half-writes less

SEGMENT = 1
BATCH = 2
FRAME_TYPES = {SEGMENT: "SEGMENT", BATCH: "BATCH"}

HEADER = struct.Struct("<HBxIII")
HEADER_SIZE = HEADER.size  # 16
_BODY = struct.Struct("<BxII")  # header bytes 2..12: type, reserved, length, prev_crc
_CHECK = struct.Struct("<H")
_U32 = struct.Struct("<I")
_PADS = tuple(b"\0" * n for n in range(ALIGN))
ZERO_HEADER = b"\0" * HEADER_SIZE

_SEGMENT_HEAD = struct.Struct("<IIQQQQQ")  # version, meta len, seq, first index, term, vote, commit
_BATCH_HEAD = struct.Struct("<BxxxIQ")  # flags, entry count, first entry index
_STATE = struct.Struct("<QQQ")  # term, vote, commit
_SNAP_HEAD = struct.Struct("<QQII")  # index, term, voter count, learner count
HAS_STATE = 1
HAS_SNAPSHOT = 2

_ENTRY_TYPES = tuple(EntryType)
_SWAP = sys.byteorder != "little"


@dataclass(slots=True, frozen=True)
class WalSnapshot:
    """A snapshot marker in the WAL: the log up to `index` is in a snapshot file."""

    index: int = 0
    term: int = 0
    conf_state: ConfState = field(default_factory=ConfState)


@dataclass(slots=True)
class SegmentHead:
    version: int
    seq: int
    first_index: int
    state: HardState
    metadata: bytes


@dataclass(slots=True)
class Batch:
    state: HardState | None
    snapshot: WalSnapshot | None
    first_index: int
    count: int
    entries: list[Entry]  # only those above the index asked for


def frame_parts(ftype: int, payload: bytes, prev_crc: int) -> tuple[bytes, bytes, int]:
    """Header and padding for `payload`; returns (header, padding, crc)."""
    body = _BODY.pack(ftype, len(payload), prev_crc)
    crc = zlib.crc32(payload, zlib.crc32(body))
    tail = body + _U32.pack(crc)
    header = _CHECK.pack(zlib.crc32(tail) & 0xFFFF) + tail
    return header, _PADS[-len(payload) & (ALIGN - 1)], crc


def frame_size(length: int) -> int:
    return HEADER_SIZE + length + (-length & (ALIGN - 1))


def header_ok(buf: bytes, off: int) -> bool:
    """Whether 16 bytes at `off` are an intact frame header of a known type."""
    if off + HEADER_SIZE > len(buf):
        return False
    check = _CHECK.unpack_from(buf, off)[0]
    if zlib.crc32(buf[off + 2 : off + HEADER_SIZE]) & 0xFFFF != check:
        return False
    return buf[off + 2] in FRAME_TYPES and buf[off + 3] == 0


def parse_header(buf: bytes, off: int) -> tuple[int, int, int, int]:
    """(type, length, prev_crc, crc) of the header at `off` (call header_ok first)."""
    _, ftype, length, prev_crc, crc = HEADER.unpack_from(buf, off)
    return ftype, length, prev_crc, crc


def payload_crc_ok(buf: bytes, off: int, length: int, crc: int) -> bool:
    start = off + HEADER_SIZE
    end = start + length
    if end > len(buf):
        return False
    view = memoryview(buf)
    return zlib.crc32(view[start:end], zlib.crc32(view[off + 2 : off + 12])) == crc


def is_intact_frame(buf: bytes, off: int) -> bool:
    """A complete frame with a good header and payload starts at `off`."""
    if not header_ok(buf, off):
        return False
    _, length, _, crc = parse_header(buf, off)
    return payload_crc_ok(buf, off, length, crc)


# --- payloads -------------------------------------------------------------------------


def encode_segment_head(seq: int, first_index: int, state: HardState, metadata: bytes) -> bytes:
    head = _SEGMENT_HEAD.pack(
        FORMAT_VERSION, len(metadata), seq, first_index, state.term, state.vote, state.commit
    )
    return head + metadata


def decode_segment_head(payload: bytes) -> SegmentHead:
    if len(payload) < _SEGMENT_HEAD.size:
        raise ValueError("segment header too short")
    version, meta_len, seq, first, term, vote, commit = _SEGMENT_HEAD.unpack_from(payload)
    if version != FORMAT_VERSION:
        raise ValueError(f"unknown segment format version {version}")
    if _SEGMENT_HEAD.size + meta_len != len(payload):
        raise ValueError("segment header length does not add up")
    return SegmentHead(
        version, seq, first, HardState(term, vote, commit), payload[_SEGMENT_HEAD.size :]
    )


# One entry (with or without a hard state), as a lone write's frame is: one pack, no
# arrays (a fifth of the general path's time).
_ONE_WITH_STATE = struct.Struct("<BxxxIQQQQQIB")
_ONE = struct.Struct("<BxxxIQQIB")


def encode_batch(
    state: HardState | None, snapshot: WalSnapshot | None, entries: Sequence[Entry]
) -> bytes:
    n = len(entries)
    if n == 1 and snapshot is None:
        e = entries[0]
        data = e.data
        if state is None:
            return _ONE.pack(0, 1, e.index, e.term, len(data), e.type) + data
        return _ONE_WITH_STATE.pack(HAS_STATE, 1, e.index, state.term, state.vote,
                                    state.commit, e.term, len(data), e.type) + data
    flags = (HAS_STATE if state is not None else 0) | (HAS_SNAPSHOT if snapshot is not None else 0)
    parts: list[bytes | array[int]] = [_BATCH_HEAD.pack(flags, n, entries[0].index if n else 0)]
    if state is not None:
        parts.append(_STATE.pack(state.term, state.vote, state.commit))
    if snapshot is not None:
        cs = snapshot.conf_state
        parts.append(
            _SNAP_HEAD.pack(snapshot.index, snapshot.term, len(cs.voters), len(cs.learners))
        )
        parts.append(
            struct.pack(f"<{len(cs.voters) + len(cs.learners)}Q", *cs.voters, *cs.learners)
        )
    if n:
        datas = [e.data for e in entries]
        terms = array("Q", [e.term for e in entries])
        lengths = array("I", map(len, datas))
        if _SWAP:
            terms.byteswap()
            lengths.byteswap()
        parts.append(terms)
        parts.append(lengths)
        parts.append(bytes([e.type for e in entries]))
        parts += datas
    return b"".join(parts)


def decode_batch(payload: bytes, after_index: int = 0) -> Batch:
    """Decode a BATCH payload; only entries with index > after_index are built.
    Raises ValueError (or IndexError, OverflowError) for a payload that is not one."""
    try:
        return _decode_batch(payload, after_index)
    except struct.error as e:  # too short for what its counts say (found by fuzzing)
        raise ValueError(f"truncated batch: {e}") from None


def _decode_batch(payload: bytes, after_index: int) -> Batch:
    flags, n, first = _BATCH_HEAD.unpack_from(payload)
    pos = _BATCH_HEAD.size
    state = None
    snapshot = None
    if flags & HAS_STATE:
        state = HardState(*_STATE.unpack_from(payload, pos))
        pos += _STATE.size
    if flags & HAS_SNAPSHOT:
        index, term, nv, nl = _SNAP_HEAD.unpack_from(payload, pos)
        pos += _SNAP_HEAD.size
        ids = struct.unpack_from(f"<{nv + nl}Q", payload, pos)
        pos += 8 * (nv + nl)
        snapshot = WalSnapshot(index, term, ConfState(tuple(ids[:nv]), tuple(ids[nv:])))
    if flags & ~(HAS_STATE | HAS_SNAPSHOT):
        raise ValueError(f"unknown batch flags {flags:#x}")
    entries: list[Entry] = []
    if n:
        terms = array("Q")
        terms.frombytes(payload[pos : pos + 8 * n])
        pos += 8 * n
        lengths = array("I")
        lengths.frombytes(payload[pos : pos + 4 * n])
        pos += 4 * n
        types = payload[pos : pos + n]
        pos += n
        if _SWAP:
            terms.byteswap()
            lengths.byteswap()
        ends = list(accumulate(lengths, initial=pos))
        if ends[-1] != len(payload):
            raise ValueError("entry lengths do not add up to the batch size")
        skip = max(0, after_index + 1 - first)
        if skip < n:
            kinds = _ENTRY_TYPES
            entries = [
                Entry(t, i, kinds[k], payload[a:b])
                for i, t, k, a, b in zip(
                    range(first + skip, first + n),
                    terms[skip:],
                    types[skip:],
                    ends[skip:n],
                    ends[skip + 1 :],
                    strict=True,
                )
            ]
    elif pos != len(payload):
        raise ValueError("batch payload has trailing bytes")
    return Batch(state, snapshot, first, n, entries)
