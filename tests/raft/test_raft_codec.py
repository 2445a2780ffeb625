"""Message and ConfChange codecs: exact round trips, compactness, bad input."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from petcd.raft import (
    CodecError,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
    Snapshot,
    SnapshotMetadata,
    codec,
    decode_conf_change,
    decode_message,
    encode_conf_change,
    encode_message,
)

u64 = st.integers(min_value=0, max_value=2**64 - 1)
small = st.integers(min_value=0, max_value=1000)
entries = st.lists(
    st.builds(Entry, u64, u64, st.sampled_from(list(EntryType)), st.binary(max_size=50)),
    max_size=8,
)
snapshots = st.builds(
    Snapshot,
    st.builds(
        SnapshotMetadata,
        u64,
        u64,
        st.builds(
            ConfState, st.lists(u64, max_size=5).map(tuple), st.lists(u64, max_size=3).map(tuple)
        ),
    ),
    st.binary(max_size=100),
)
messages = st.builds(
    Message,
    type=st.sampled_from(list(MessageType)),
    to=u64,
    from_=u64,
    term=u64,
    log_term=u64,
    index=u64,
    entries=entries,
    commit=u64,
    snapshot=st.none() | snapshots,
    reject=st.booleans(),
    reject_hint=u64,
    context=st.binary(max_size=30),
)


def same(a: Message, b: Message) -> bool:
    return a.__class__ is b.__class__ and all(
        (list(getattr(a, f)) if f == "entries" else getattr(a, f))
        == (list(getattr(b, f)) if f == "entries" else getattr(b, f))
        for f in Message.__slots__
    )


@given(messages)
def test_message_round_trip(m: Message) -> None:
    assert same(decode_message(encode_message(m)), m)


short_messages = st.builds(
    Message,
    type=st.sampled_from(list(MessageType)),
    to=u64,
    from_=u64,
    term=u64,
    log_term=u64,
    index=u64,
    entries=st.lists(
        st.builds(Entry, u64, u64, st.sampled_from(list(EntryType)), st.binary(max_size=50)),
        max_size=1,
    ),
    commit=u64,
    reject=st.booleans(),
    reject_hint=u64,
)


@given(short_messages)
def test_short_message_fast_paths_match_the_general_layout(m: Message) -> None:
    # The usual append and its answer take one-struct paths: same bytes, same message.
    raw = encode_message(m)
    assert raw == codec._encode_general(m)
    fast = decode_message(raw)
    assert same(fast, m) and same(fast, codec._decode_general(raw))
    assert fast.type is m.type and all(e.type is EntryType(e.type) for e in fast.entries)


@given(short_messages, st.data())
def test_corrupt_short_messages_get_the_general_verdict(m: Message, data: st.DataObject) -> None:
    raw = bytearray(encode_message(m))
    pos = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
    raw[pos] = data.draw(st.integers(min_value=0, max_value=255))
    extra = data.draw(st.binary(max_size=3))
    bad = bytes(raw) + extra
    try:
        want: Message | None = codec._decode_general(bad)
    except CodecError:
        want = None
    if want is None:
        with pytest.raises(CodecError):
            decode_message(bad)
    else:
        assert same(decode_message(bad), want)


def test_append_batches_are_compact_and_exact() -> None:
    ents = [Entry(7, 100 + i, EntryType.NORMAL, b"x" * 100) for i in range(1000)]
    m = Message(
        MessageType.APP, to=2, from_=1, term=7, log_term=7, index=99, entries=ents, commit=99
    )
    data = encode_message(m)
    assert len(data) < 1000 * (100 + 6) + 100  # 5 bytes of overhead per entry, plus a header
    back = decode_message(data)
    assert same(back, m) and back.type is MessageType.APP
    assert all(e.type is EntryType.NORMAL for e in back.entries)


def test_decoded_data_does_not_alias_the_buffer() -> None:
    buf = bytearray(encode_message(Message(MessageType.PROP, entries=[Entry(0, 0, data=b"abc")])))
    m = decode_message(buf)
    buf[:] = b"\0" * len(buf)
    assert m.entries[0].data == b"abc"


@given(messages, st.data())
def test_truncated_messages_are_rejected(m: Message, data: st.DataObject) -> None:
    raw = encode_message(m)
    cut = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
    with pytest.raises(CodecError):
        decode_message(raw[:cut])


@pytest.mark.parametrize(
    "mangle",
    [
        lambda b: b"\x02" + b[1:],  # unknown version
        lambda b: b[:1] + b"\x63" + b[2:],  # unknown message type
        lambda b: b + b"\0",  # trailing garbage
    ],
)
def test_malformed_messages_are_rejected(mangle: object) -> None:
    raw = encode_message(Message(MessageType.HEARTBEAT, to=1, from_=2, term=3))
    with pytest.raises(CodecError):
        decode_message(mangle(raw))  # type: ignore[operator]


def test_unknown_entry_type_is_rejected() -> None:
    raw = bytearray(encode_message(Message(MessageType.APP, entries=[Entry(1, 1, data=b"")])))
    raw[67 + 16] = 9  # the one entry's type byte, after the header and (term, index)
    with pytest.raises(CodecError):
        decode_message(bytes(raw))


@given(
    st.builds(ConfChange, st.sampled_from(list(ConfChangeType)), u64, st.binary(max_size=200), u64)
)
def test_conf_change_round_trip(cc: ConfChange) -> None:
    assert decode_conf_change(encode_conf_change(cc)) == cc


@pytest.mark.parametrize("raw", [b"", b"\x01\x00", b"\x01\x09" + b"\0" * 20, b"\x07" + b"\0" * 21])
def test_malformed_conf_changes_are_rejected(raw: bytes) -> None:
    with pytest.raises(CodecError):
        decode_conf_change(raw)
