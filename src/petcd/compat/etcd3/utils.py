"""python-etcd3's `etcd3.utils`."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any


def prefix_range_end(prefix: bytes) -> bytes:
    """The range end covering every key that starts with `prefix`."""
    s = bytearray(prefix)
    for i in reversed(range(len(s))):
        if s[i] < 0xFF:
            s[i] += 1
            break
    return bytes(s)


def to_bytes(maybe_bytestring: str | bytes) -> bytes:
    if isinstance(maybe_bytestring, bytes):
        return maybe_bytestring
    return maybe_bytestring.encode("utf-8")


def lease_to_id(lease: Any) -> int:
    """A Lease object's ID, or the argument as an int (0 when neither)."""
    if hasattr(lease, "id"):
        return int(lease.id)
    try:
        return int(lease)
    except TypeError:
        return 0


def response_to_event_iterator(response_iterator: Iterable[Any]) -> Iterator[Any]:
    for response in response_iterator:
        yield from response.events
