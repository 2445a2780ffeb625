"""Proposals made on this member, from propose() until they are answered.

A proposal waits in the queue until there is a leader, is handed to Raft in batches (as
InternalRequest bytes), and is then known by its log index (proposed here as leader: the
entry committed at that index in the same term is ours) or by its id (forwarded to the
leader: the applied entry carries our member id as origin and the proposal id). Every
proposal has a deadline; the tick answers the late ones with etcd's timeout wording.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from google.protobuf.message import Message as PbMessage
from grpc import StatusCode

from petcd.errors import EtcdError
from petcd.pb.internalpb.internal_pb2 import InternalRequest
from petcd.raft import DropReason, ProposalDropped, RawNode
from petcd.server.apply import WaitPhysical
from petcd.server.proposal import ANON, Committed, Result, Stamp, encode_stamp, varint

_FIELD_TAGS = {f.name: varint((f.number << 3) | 2)
               for f in InternalRequest.DESCRIPTOR.oneofs_by_name["request"].fields}

# Tag of field 1 and the first byte of a varint that goes on (see _id_field).
_ID_LOW = [b"\x08" + bytes((i | 0x80,)) for i in range(0x80)]
_ANON_STAMP = encode_stamp(ANON)


class Pending(Committed):
    """A proposal waiting to be applied. Proposed here as leader, it is also the
    Committed entry handed to the apply queue once its index commits in its term
    (no second object per write): `index` and `term` are set when it is handed to
    Raft, `request` is the parsed request and `data` stays empty."""

    __slots__ = ("deadline", "future", "id", "raw", "started")
    kind: str  # (always one: a client's or the member's own request)

    def __init__(self, proposal_id: int, kind: str, raw: bytes, request: PbMessage,
                 future: asyncio.Future[Result], deadline: float, stamp: Stamp) -> None:
        self.id = proposal_id
        self.kind = kind
        self.raw = raw
        self.request = request
        self.future = future
        self.stamp = stamp
        self.deadline = deadline
        self.started = time.time()
        self.index = self.term = 0
        self.data = b""


class ProposalTracker:
    def __init__(self, member_id: int) -> None:
        self.member_id = member_id
        self._origin = b"\x10" + varint(member_id)  # InternalRequest.origin, encoded
        # Unique across restarts: member id, then milliseconds, then a counter.
        self._next_id = ((member_id & 0xFFFF) << 48) | \
            ((int(time.time() * 1000) & 0xFFFFFFFFFF) << 8)
        self._id_hi, self._id_tail = -1, b""  # (see _id_field)
        self.queue: list[Pending] = []  # not yet handed to Raft
        self.by_index: dict[int, Pending] = {}  # proposed here as leader: index -> proposal
        self.by_id: dict[int, Pending] = {}  # forwarded to the leader: id -> proposal
        # Not yet answered, by id, in deadline order (ids and deadlines both grow).
        # Answered ones leave at once: kept until their deadline, tens of thousands
        # would live on under load for the garbage collector to scan again and again.
        self.deadlines: dict[int, Pending] = {}
        self.last_batch = 0  # how many the last flush() handed to Raft
        # The member's loop, found once: Python 3.11's get_running_loop() makes a getpid
        # syscall per call (~0.5 us, 1% of the loop thread at 64 clients).
        self._loop: asyncio.AbstractEventLoop | None = None

    def _id_field(self, rid: int) -> bytes:
        """InternalRequest field 1 (the id). Ids grow by one: the varint's bytes after
        its first (those of rid >> 7) are the same for 128 ids in a row, made once."""
        hi = rid >> 7
        if hi == 0:
            return b"\x08" + varint(rid)
        if hi != self._id_hi:
            self._id_hi, self._id_tail = hi, varint(hi)
        return _ID_LOW[rid & 0x7F] + self._id_tail

    def new_id(self) -> int:
        rid = self._next_id
        self._next_id = rid + 1
        return rid

    @property
    def in_flight(self) -> int:
        """Handed to Raft and not answered yet."""
        return len(self.by_index) + len(self.by_id)

    def add(self, kind: str, raw: bytes, request: PbMessage, stamp: Stamp,
            deadline: float) -> asyncio.Future[Result]:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        fut: asyncio.Future[Result] = loop.create_future()
        rid = self._next_id  # (new_id(), inline: once per write)
        self._next_id = rid + 1
        p = Pending(rid, kind, raw, request, fut, deadline, stamp)
        self.queue.append(p)
        self.deadlines[rid] = p
        return fut

    def flush(self, raw: RawNode, limit: int) -> bool:
        """Hand up to `limit` queued proposals to Raft; True if some were."""
        queue = self.queue
        batch = queue[:limit]
        del queue[:limit]
        self.last_batch = len(batch)
        leading = raw.is_leader  # (the soft state may not have told us yet)
        first = raw.last_index + 1
        tags = _FIELD_TAGS
        origin = self._origin
        id_field = self._id_field
        datas = []
        join = b"".join
        # (the usual case inline, no call per entry: a request under 16 KiB, an id
        # whose varint tail _id_field made already, a client's stamp with auth off)
        id_hi, id_tail = self._id_hi, self._id_tail
        for p in batch:
            body = p.raw
            n = len(body)
            rid = p.id
            if rid >> 7 == id_hi:
                idf = _ID_LOW[rid & 0x7F] + id_tail
            else:
                idf = id_field(rid)
                id_hi, id_tail = self._id_hi, self._id_tail
            stamp = p.stamp
            # (one join: one copy of the body, not one per `+`)
            datas.append(join((
                tags[p.kind],
                bytes(((n & 0x7F) | 0x80, n >> 7)) if 0x80 <= n < 0x4000 else varint(n),
                body, idf, origin,
                _ANON_STAMP if stamp is ANON else encode_stamp(stamp))))
        try:
            raw.propose_batch(datas)
        except ProposalDropped as e:
            if e.reason in (DropReason.NO_LEADER, DropReason.TRANSFER_PENDING):
                queue[:0] = batch  # wait for a leader (or the transfer's end)
                return False
            for p in batch:
                if not p.future.done():
                    p.future.set_result(EtcdError(StatusCode.UNAVAILABLE,
                                                  f"etcdserver: {e.reason.value}"))
            return False
        if leading:
            term = raw.term
            by_index = self.by_index
            for i, p in enumerate(batch, first):
                p.index = i
                p.term = term
                by_index[i] = p
        else:
            by_id = self.by_id
            for p in batch:
                by_id[p.id] = p
        return True

    def answer(self, results: list[Result], local: list[tuple[int, Pending]],
               forwarded: list[tuple[int, int]],
               wait_physical: Callable[[asyncio.Future[Result], Result], None]) -> int:
        """Answer the applied proposals of this member (by position in the batch: those
        proposed here as leader, and those forwarded, with their ids). Returns how many
        failed."""
        failed = 0
        deadlines = self.deadlines
        for pos, p in local:
            # (_answer's common case inline: a result for a caller still waiting)
            r = results[pos]
            fut = p.future
            if fut.done() or type(r) is WaitPhysical:
                failed += _answer(p, r, wait_physical)
                if fut.done():
                    deadlines.pop(p.id, None)  # (gone if it timed out first)
                continue
            p.raw = b""
            p.request = None  # type: ignore[assignment]
            fut.set_result(r)
            if type(r) is EtcdError:
                failed += 1
            deadlines.pop(p.id, None)
        by_id = self.by_id
        for pos, rid in forwarded:
            waiting = by_id.pop(rid, None)
            if waiting is not None:
                failed += _answer(waiting, results[pos], wait_physical)
                if waiting.future.done():
                    deadlines.pop(rid, None)
        return failed

    def expire(self, now: float, error_for: Callable[[float], EtcdError]) -> None:
        """Answer the proposals whose deadline passed (error_for(started) words it)."""
        deadlines = self.deadlines
        expired = []
        for p in deadlines.values():
            if p.deadline > now:
                break
            expired.append(p)
        for p in expired:
            del deadlines[p.id]
            # (an applied one has no request left: a `physical` compaction waiting for
            # its old records to go waits as long as that takes, as etcd's does)
            if p.request is not None and not p.future.done():
                p.future.set_result(error_for(p.started))
                self.by_id.pop(p.id, None)
                if p in self.queue:
                    self.queue.remove(p)

    def forget_upto(self, index: int) -> None:
        """A snapshot covers these indexes: whether our entries made it is unknown, so
        they end as timeouts (as in etcd)."""
        for i in [i for i in self.by_index if i <= index]:
            del self.by_index[i]

    def refuse_queued(self, err: EtcdError) -> None:
        for p in self.queue:
            if not p.future.done():
                p.future.set_result(err)
        self.queue.clear()

    def fail_all(self, err: EtcdError) -> None:
        for p in self.deadlines.values():
            if not p.future.done():
                p.future.set_result(err)
        self.deadlines.clear()
        self.queue.clear()
        self.by_id.clear()
        self.by_index.clear()


def _answer(p: Pending, r: Result,
            wait_physical: Callable[[asyncio.Future[Result], Result], None]) -> int:
    # The proposal stays in the deadline queue until its deadline: let go of what is
    # big now (requests of seconds of traffic would otherwise stay alive).
    p.raw = b""
    p.request = None  # type: ignore[assignment]
    fut = p.future
    if type(r) is WaitPhysical:
        wait_physical(fut, r.response)
        return 0
    if not fut.done():
        fut.set_result(r)
    return 1 if type(r) is EtcdError else 0
