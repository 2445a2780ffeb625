"""WatchResponse bytes: the response header written by hand (cached per revision and term),
control responses (created, canceled, progress, compacted) and the split of one watcher's
events into responses under the size limit. The hub (hub.py) decides who gets what; this
module only says how it looks on the wire."""

from __future__ import annotations

from collections.abc import Callable

from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.server.proposal import varint
from petcd.server.watch.watchers import FRAGMENT_FIELD


class ResponseHeaders:
    """The member's response header fields: `cluster_id`, `member_id` and the Raft term
    (`term()`, read for each header)."""

    def __init__(self, cluster_id: int, member_id: int, term: Callable[[], int]) -> None:
        self.cluster_id = cluster_id
        self.member_id = member_id
        self.term = term
        # The last response header (field 1 of a WatchResponse) and what it was made of.
        self._rev = -1
        self._term = -1
        self._fields = (b"", b"")  # cluster_id and member_id fields; raft_term field
        self._hdr = b""

    def header(self, revision: int) -> bytes:
        """Serialized WatchResponse.header field for `revision`, cached: written by hand
        in protobuf's canonical form (fields in number order, zeros left out), as every
        live event needs one for a new revision."""
        term = self.term()
        if revision != self._rev or term != self._term:
            if term != self._term:
                self._fields = (_uint_field(0x08, self.cluster_id)
                                + _uint_field(0x10, self.member_id),
                                _uint_field(0x20, term))
                self._term = term
            ids, term_field = self._fields
            h = ids + _uint_field(0x18, revision) + term_field
            self._hdr = b"\x0a" + varint(len(h)) + h
            self._rev = revision
        return self._hdr

    def control(self, revision: int, **fields: object) -> bytes:
        """A response without events (created, canceled, progress, compacted)."""
        resp = rpc.WatchResponse(**fields)  # type: ignore[arg-type]
        h = resp.header
        h.cluster_id, h.member_id, h.raft_term = self.cluster_id, self.member_id, self.term()
        h.revision = revision
        return resp.SerializeToString()


def push_fragments(push: Callable[[bytes], None], base: bytes, fields: list[bytes],
                   limit: int) -> None:
    """`base` (header + watch id) with the event `fields`, as responses of at most
    `limit` bytes, for a watcher that asked for fragments."""
    # etcd's split: fill each piece until the next event would take it to the
    # limit (a piece holds at least one event); all but the last say fragment.
    n = len(fields)
    i = 0
    while i < n:
        start = i
        size = len(base) + len(FRAGMENT_FIELD)
        while i < n:
            size += len(fields[i])
            if i > start and size >= limit:
                break
            i += 1
        if i < n:
            push(base + FRAGMENT_FIELD + b"".join(fields[start:i]))
        else:
            push(base + b"".join(fields[start:i]))


def push_by_revision(push: Callable[[bytes], None], base: bytes, fields: list[bytes],
                     revs: list[int], limit: int) -> None:
    """`base` with the event `fields` (of revisions `revs`) as responses split only at
    revision boundaries."""
    # Several responses, each ending at a revision boundary (a revision's events
    # always travel together), each under the limit unless one revision is not.
    start = 0
    size = len(base)
    n = len(fields)
    i = 0
    while i < n:
        j = i  # the events of revision revs[i]
        group = 0
        while j < n and revs[j] == revs[i]:
            group += len(fields[j])
            j += 1
        if i > start and size + group >= limit:
            push(base + b"".join(fields[start:i]))
            start, size = i, len(base)
        size += group
        i = j
    push(base + b"".join(fields[start:]))


def _uint_field(tag: int, value: int) -> bytes:
    """A varint field of a non-negative value (nothing for 0, as proto3 writes it)."""
    return bytes((tag,)) + varint(value) if value else b""
