"""Pure byte codecs: Message <-> bytes (peer transport) and ConfChange <-> bytes
(the data of CONF_CHANGE entries).

Message layout, little-endian:
  header   version u8 (=1), type u8, flags u8, to, from, term, log_term, index,
           commit, reject_hint (7 x u64), context length u32, entry count u32
  context  bytes
  entries  flag UNIFORM (one term, consecutive indexes, the usual append):
             first term u64, first index u64, types u8[n], lengths u32[n], data
           otherwise: terms u64[n], indexes u64[n], types u8[n], lengths u32[n], data
  snapshot (flag SNAPSHOT) index u64, term u64, voters u32, learners u32,
           data length u64, voter ids u64[], learner ids u64[], data

Entries are encoded column by column so both directions run in C loops except
for building the Entry objects themselves.
"""

from __future__ import annotations

import struct
import sys
from array import array
from collections.abc import Sequence
from itertools import accumulate
from operator import attrgetter

from petcd.raft.types import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
    Snapshot,
    SnapshotMetadata,
)


class CodecError(ValueError):
    """Bytes that do not decode to a valid value."""


_VERSION = 1
_FLAG_REJECT = 1
_FLAG_SNAPSHOT = 2
_FLAG_UNIFORM = 4

_HEADER = struct.Struct("<BBB7QII")
# The usual append (and every answer): no context, no snapshot, zero entries or one. The
# same bytes as the general layout, packed and unpacked in one struct call each.
_ONE = struct.Struct("<BBB7QIIQQBI")  # header, then first term, first index, type, length
_HEADER_SIZE = _HEADER.size
_ONE_SIZE = _ONE.size
_UNIFORM = struct.Struct("<QQ")
_SNAP = struct.Struct("<QQIIQ")
_CONF_CHANGE = struct.Struct("<BBQQI")

_BIG_ENDIAN = sys.byteorder == "big"
_MESSAGE_TYPES = {int(t): t for t in MessageType}
_ENTRY_TYPES = tuple(EntryType)
_CONF_CHANGE_TYPES = {int(t): t for t in ConfChangeType}

_data = attrgetter("data")
_term = attrgetter("term")
_index = attrgetter("index")
_type = attrgetter("type")


def _u64s(values: list[int]) -> bytes:
    a = array("Q", values)
    if _BIG_ENDIAN:
        a.byteswap()
    return a.tobytes()


def _u32s(values: list[int]) -> bytes:
    a = array("I", values)
    if _BIG_ENDIAN:
        a.byteswap()
    return a.tobytes()


def _read_array(code: str, buf: memoryview, pos: int, n: int) -> tuple[array[int], int]:
    a = array(code)
    end = pos + n * a.itemsize
    if end > len(buf):
        raise CodecError("truncated message")
    a.frombytes(buf[pos:end])
    if _BIG_ENDIAN:
        a.byteswap()
    return a, end


def encode_message(m: Message) -> bytes:
    entries = m.entries
    n = len(entries)
    if n <= 1 and m.snapshot is None and not m.context:
        flags = _FLAG_REJECT if m.reject else 0
        if not n:
            return _HEADER.pack(_VERSION, m.type, flags, m.to, m.from_, m.term, m.log_term,
                                m.index, m.commit, m.reject_hint, 0, 0)
        e = entries[0]
        data = e.data
        return _ONE.pack(_VERSION, m.type, flags | _FLAG_UNIFORM, m.to, m.from_, m.term,
                         m.log_term, m.index, m.commit, m.reject_hint, 0, 1, e.term, e.index,
                         e.type, len(data)) + data
    return _encode_general(m)


def _encode_general(m: Message) -> bytes:
    entries = m.entries
    n = len(entries)
    flags = 0
    if m.reject:
        flags |= _FLAG_REJECT
    snap = m.snapshot
    if snap is not None:
        flags |= _FLAG_SNAPSHOT
    parts: list[bytes] = []
    if n:
        terms = list(map(_term, entries))
        indexes = list(map(_index, entries))
        t0, i0 = terms[0], indexes[0]
        if terms.count(t0) == n and indexes == list(range(i0, i0 + n)):
            flags |= _FLAG_UNIFORM
            parts.append(_UNIFORM.pack(t0, i0))
        else:
            parts.append(_u64s(terms))
            parts.append(_u64s(indexes))
        parts.append(bytes(map(_type, entries)))
        datas = list(map(_data, entries))
        parts.append(_u32s(list(map(len, datas))))
        parts.append(b"".join(datas))
    if snap is not None:
        meta = snap.metadata
        cs = meta.conf_state
        parts.append(
            _SNAP.pack(meta.index, meta.term, len(cs.voters), len(cs.learners), len(snap.data))
        )
        parts.append(_u64s(list(cs.voters)))
        parts.append(_u64s(list(cs.learners)))
        parts.append(snap.data)
    header = _HEADER.pack(
        _VERSION,
        m.type,
        flags,
        m.to,
        m.from_,
        m.term,
        m.log_term,
        m.index,
        m.commit,
        m.reject_hint,
        len(m.context),
        n,
    )
    return b"".join((header, m.context, *parts))


def decode_message(data: bytes | bytearray | memoryview) -> Message:
    if type(data) is bytes:  # (what the transport delivers)
        size = len(data)
        if size == _HEADER_SIZE or size >= _ONE_SIZE:
            m = _decode_short(data, size)
            if m is not None:
                return m
    return _decode_general(data)


def _decode_short(data: bytes, size: int) -> Message | None:
    """The fast path for the usual messages; None: take the general one."""
    if size == _HEADER_SIZE:
        version, mtype, flags, to, from_, term, log_term, index, commit, reject_hint, \
            ctx_len, n = _HEADER.unpack(data)
        if ctx_len or n or flags & _FLAG_SNAPSHOT or version != _VERSION:
            return None
        entries: Sequence[Entry] = ()
    else:
        version, mtype, flags, to, from_, term, log_term, index, commit, reject_hint, \
            ctx_len, n, t0, i0, ety, length = _ONE.unpack_from(data)
        if ctx_len or n != 1 or flags & (_FLAG_SNAPSHOT | _FLAG_UNIFORM) != _FLAG_UNIFORM \
                or version != _VERSION or size != _ONE_SIZE + length \
                or ety >= len(_ENTRY_TYPES):
            return None
        entries = [Entry(t0, i0, _ENTRY_TYPES[ety], data[_ONE_SIZE:])]
    msg_type = _MESSAGE_TYPES.get(mtype)
    if msg_type is None:
        return None
    return Message(msg_type, to, from_, term, log_term, index, entries, commit, None,
                   bool(flags & _FLAG_REJECT), reject_hint, b"")


def _decode_general(data: bytes | bytearray | memoryview) -> Message:
    buf = memoryview(data).cast("B")
    try:
        (
            version,
            mtype,
            flags,
            to,
            from_,
            term,
            log_term,
            index,
            commit,
            reject_hint,
            ctx_len,
            n,
        ) = _HEADER.unpack_from(buf, 0)
    except struct.error as e:
        raise CodecError(f"truncated message header: {e}") from None
    if version != _VERSION:
        raise CodecError(f"unknown message format version {version}")
    try:
        msg_type = _MESSAGE_TYPES[mtype]
    except KeyError:
        raise CodecError(f"unknown message type {mtype}") from None
    pos = _HEADER.size
    context = bytes(buf[pos : pos + ctx_len])
    if len(context) != ctx_len:
        raise CodecError("truncated message context")
    pos += ctx_len
    entries: Sequence[Entry] = ()
    try:
        if n:
            entries, pos = _decode_entries(buf, pos, n, flags & _FLAG_UNIFORM != 0)
        snapshot = None
        if flags & _FLAG_SNAPSHOT:
            snapshot, pos = _decode_snapshot(buf, pos)
    except (struct.error, IndexError) as e:
        raise CodecError(f"truncated message body: {e}") from None
    if pos != len(buf):
        raise CodecError(f"{len(buf) - pos} trailing bytes after message")
    return Message(
        type=msg_type,
        to=to,
        from_=from_,
        term=term,
        log_term=log_term,
        index=index,
        entries=entries,
        commit=commit,
        snapshot=snapshot,
        reject=bool(flags & _FLAG_REJECT),
        reject_hint=reject_hint,
        context=context,
    )


def _decode_entries(buf: memoryview, pos: int, n: int, uniform: bool) -> tuple[list[Entry], int]:
    if uniform:
        t0, i0 = _UNIFORM.unpack_from(buf, pos)
        pos += _UNIFORM.size
    else:
        terms, pos = _read_array("Q", buf, pos, n)
        indexes, pos = _read_array("Q", buf, pos, n)
    types = bytes(buf[pos : pos + n])
    if len(types) != n:
        raise CodecError("truncated entry types")
    pos += n
    lengths, pos = _read_array("I", buf, pos, n)
    offsets = list(accumulate(lengths, initial=0))
    end = pos + offsets[-1]
    if end > len(buf):
        raise CodecError("truncated entry data")
    blob = bytes(buf[pos:end])
    et = _ENTRY_TYPES
    try:
        if uniform:
            entries = [
                Entry(t0, i, et[ty], blob[a:b])
                for i, ty, a, b in zip(range(i0, i0 + n), types, offsets, offsets[1:], strict=False)
            ]
        else:
            entries = [
                Entry(t, i, et[ty], blob[a:b])
                for t, i, ty, a, b in zip(terms, indexes, types, offsets, offsets[1:], strict=False)
            ]
    except IndexError:
        raise CodecError("unknown entry type") from None
    return entries, end


def _decode_snapshot(buf: memoryview, pos: int) -> tuple[Snapshot, int]:
    index, term, n_voters, n_learners, data_len = _SNAP.unpack_from(buf, pos)
    pos += _SNAP.size
    voters, pos = _read_array("Q", buf, pos, n_voters)
    learners, pos = _read_array("Q", buf, pos, n_learners)
    end = pos + data_len
    if end > len(buf):
        raise CodecError("truncated snapshot data")
    meta = SnapshotMetadata(
        index=index, term=term, conf_state=ConfState(tuple(voters), tuple(learners))
    )
    return Snapshot(meta, bytes(buf[pos:end])), end


def encode_conf_change(cc: ConfChange) -> bytes:
    return _CONF_CHANGE.pack(_VERSION, cc.type, cc.node_id, cc.id, len(cc.context)) + cc.context


def decode_conf_change(data: bytes | bytearray | memoryview) -> ConfChange:
    buf = memoryview(data).cast("B")
    try:
        version, cc_type, node_id, cc_id, ctx_len = _CONF_CHANGE.unpack_from(buf, 0)
    except struct.error as e:
        raise CodecError(f"truncated conf change: {e}") from None
    if version != _VERSION:
        raise CodecError(f"unknown conf change format version {version}")
    try:
        kind = _CONF_CHANGE_TYPES[cc_type]
    except KeyError:
        raise CodecError(f"unknown conf change type {cc_type}") from None
    if _CONF_CHANGE.size + ctx_len != len(buf):
        raise CodecError("conf change length mismatch")
    return ConfChange(kind, node_id, bytes(buf[_CONF_CHANGE.size :]), cc_id)
