"""Key permissions of one user, merged over their roles, with etcd's range semantics.

A permission covers a key (range_end empty), a range [key, range_end), or every key
from `key` on (range_end "\\x00"; etcdctl's --from-key, and --prefix gives the prefix's
range). A request on a single key needs a permission containing that key; a request on
a range needs the union of the user's permissions to cover the whole range (etcd's
interval tree `Contains`, adjacent intervals joining). Pure: no IO, no locks.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

from petcd.pb.authpb.auth_pb2 import Permission

READ = Permission.READ
WRITE = Permission.WRITE
READWRITE = Permission.READWRITE

# An interval's end: None is +infinity (a from-key permission or request).
Interval = tuple[bytes, bytes | None]


def _interval(key: bytes, range_end: bytes) -> Interval:
    if not range_end:
        return key, key + b"\x00"  # one key: [key, key\0)
    if range_end == b"\x00":
        return key, None
    return key, range_end


def _merge(intervals: list[Interval]) -> tuple[list[bytes], list[bytes | None]]:
    """Sorted, disjoint, non-adjacent intervals as two parallel lists (begins, ends)."""
    intervals.sort(key=lambda iv: iv[0])
    begins: list[bytes] = []
    ends: list[bytes | None] = []
    for begin, end in intervals:
        if end is not None and end <= begin:
            continue  # empty
        if ends and (ends[-1] is None or begin <= ends[-1]):  # type: ignore[operator]
            last = ends[-1]
            if last is not None and (end is None or end > last):
                ends[-1] = end
            continue
        begins.append(begin)
        ends.append(end)
    return begins, ends


class IntervalSet:
    """A union of key intervals, answering containment by bisection."""

    __slots__ = ("_begins", "_ends")

    def __init__(self, intervals: Iterable[Interval]) -> None:
        self._begins, self._ends = _merge(list(intervals))

    def covers(self, key: bytes, range_end: bytes) -> bool:
        """etcd's check of a request on `key` (range_end empty), or on [key, range_end)
        (range_end "\\x00": every key from `key` on)."""
        i = bisect.bisect_right(self._begins, key) - 1
        if i < 0:
            return False
        end = self._ends[i]
        if not range_end:  # a single key
            return end is None or key < end
        if range_end == b"\x00":
            return end is None
        return end is None or range_end <= end


class UserPerms:
    """What one user may read and write (None for a user with the root role: all)."""

    __slots__ = ("read", "write")

    def __init__(self, perms: Iterable[Permission]) -> None:
        reads: list[Interval] = []
        writes: list[Interval] = []
        for p in perms:
            iv = _interval(p.key, p.range_end)
            if p.permType in (READ, READWRITE):
                reads.append(iv)
            if p.permType in (WRITE, READWRITE):
                writes.append(iv)
        self.read = IntervalSet(reads)
        self.write = IntervalSet(writes)
