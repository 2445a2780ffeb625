"""The watch protocol without IO: what to send to (re)start a watch and what each server
answer means. Shared by the sync and asyncio watches.

The state remembers the next revision the caller has not seen yet. A (re)created watch
asks for exactly that revision, and events below it are dropped, so after a reconnect to
any member the caller gets every event once, in order: no gap, no repeat.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

import grpc

from petcd.client.connection import Backoff
from petcd.client.errors import (
    CompactedError,
    EtcdError,
    PermissionDeniedError,
    WatchError,
    from_rpc_error,
)
from petcd.client.ops import Bytes, key_range
from petcd.client.types import Event, Header, WatchResponse
from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.pb.mvccpb import kv_pb2

# Reasons the server cancels a watch that a new stream (maybe on another member, maybe
# after authenticating again) cures.
_RECONNECT_REASONS = ("etcdserver: no leader", "etcdserver: invalid auth token",
                      "etcdserver: revision of auth store is old")


@dataclass(frozen=True, slots=True)
class WatchSpec:
    key: bytes
    range_end: bytes = b""
    start_revision: int = 0
    prev_kv: bool = False
    no_put: bool = False
    no_delete: bool = False
    progress_notify: bool = False
    fragment: bool = False

    @classmethod
    def make(cls, key: Bytes, range_end: Bytes | None = None, *, prefix: bool = False,
             from_key: bool = False, start_revision: int = 0, prev_kv: bool = False,
             no_put: bool = False, no_delete: bool = False,
             progress_notify: bool = False, fragment: bool = False) -> WatchSpec:
        k, end = key_range(key, range_end, prefix=prefix, from_key=from_key)
        return cls(k, end, start_revision, prev_kv, no_put, no_delete, progress_notify,
                   fragment)


# Errors a new stream on another member cannot cure: they end the watch.
FATAL_STREAM_CODES = frozenset({
    grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.FAILED_PRECONDITION,
})


class Broken:
    """Handed to each watch of a shared stream that ended (error None: ended cleanly)."""

    __slots__ = ("error",)

    def __init__(self, error: grpc.RpcError | None) -> None:
        self.error = error


@dataclass(frozen=True, slots=True)
class Step:
    """What a watch does with one item from its stream (see WatchState.step)."""

    out: WatchResponse | None = None  # a batch for the caller
    created: bool = False             # the server created the watch
    drop: bool = False                # leave the stream and join a new one...
    failover: bool = False            # ...on the next member
    reauth: bool = False              # ...after authenticating again (a new stream)
    pause: bool = False               # ...after a back-off pause
    error: EtcdError | None = None    # the watch ends with this


class Reconnect(Exception):
    """Internal: the stream must be re-opened (elsewhere, or after re-authenticating)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reauth = "auth" in reason




class WatchState:
    def __init__(self, spec: WatchSpec) -> None:
        self.spec = spec
        # 0 until known: "from the revision after the one current when created".
        self.next_rev = spec.start_revision
        self.watch_id = -1
        # Events of a response the server split (fragment=True) until its last piece:
        # delivered together, as one batch, or not at all (a stream lost mid-way asks
        # again from next_rev).
        self._pieces: list[kv_pb2.Event] = []

    def create_request(self) -> rpc.WatchRequest:
        s = self.spec
        self._pieces = []
        filters = [f for f, on in ((rpc.WatchCreateRequest.NOPUT, s.no_put),
                                   (rpc.WatchCreateRequest.NODELETE, s.no_delete)) if on]
        return rpc.WatchRequest(create_request=rpc.WatchCreateRequest(
            key=s.key, range_end=s.range_end, start_revision=self.next_rev,
            progress_notify=s.progress_notify, filters=filters, prev_kv=s.prev_kv,
            fragment=s.fragment))

    def cancel_request(self) -> rpc.WatchRequest:
        return rpc.WatchRequest(cancel_request=rpc.WatchCancelRequest(watch_id=self.watch_id))

    @staticmethod
    def progress_request() -> rpc.WatchRequest:
        return rpc.WatchRequest(progress_request=rpc.WatchProgressRequest())

    def step(self, item: rpc.WatchResponse | Broken) -> Step:
        """The decision for one item of the stream, for both client flavours."""
        if isinstance(item, Broken):
            e = item.error
            if e is None:  # the member ended the stream: go elsewhere
                return Step(drop=True, failover=True)
            if e.code() in FATAL_STREAM_CODES:
                return Step(error=from_rpc_error(e))
            auth = e.code() == grpc.StatusCode.UNAUTHENTICATED
            return Step(drop=True, failover=not auth, reauth=auth, pause=True)
        try:
            out = self.on_response(item)
        except Reconnect as rc:
            return Step(drop=True, failover=not rc.reauth, reauth=rc.reauth)
        except EtcdError as e:
            return Step(error=e)
        return Step(out=out, created=item.created)

    def on_response(self, r: rpc.WatchResponse) -> WatchResponse | None:
        """The batch to hand to the caller (None: nothing for them). Raises
        CompactedError / WatchError / PermissionDeniedError, or Reconnect."""
        if r.created:
            self.watch_id = r.watch_id
            if self.next_rev == 0 and not r.canceled:
                self.next_rev = r.header.revision + 1
        if r.canceled:
            if r.compact_revision:
                raise CompactedError(
                    "etcdserver: mvcc: required revision has been compacted",
                    compact_revision=r.compact_revision)
            reason = r.cancel_reason
            if reason.startswith("rpc error: "):
                # a creation refused on a shared stream whose token has since expired:
                # "rpc error: code = Unauthenticated desc = etcdserver: invalid auth token"
                reason = reason.split(" desc = ", 1)[-1]
            if reason in _RECONNECT_REASONS:
                raise Reconnect(reason)
            if reason == "etcdserver: permission denied":
                raise PermissionDeniedError(reason)
            raise WatchError(reason or "etcdserver: watch canceled")
        if r.compact_revision:
            raise CompactedError("etcdserver: mvcc: required revision has been compacted",
                                 compact_revision=r.compact_revision)
        if r.fragment:  # more pieces of this response follow
            self._pieces.extend(r.events)
            return None
        pb_events: Sequence[kv_pb2.Event] = r.events
        if self._pieces:
            pb_events, self._pieces = [*self._pieces, *r.events], []
        header = Header.from_pb(r.header)
        if pb_events:
            events = [Event.from_pb(e) for e in pb_events if e.kv.mod_revision >= self.next_rev]
            if not events:
                return None  # all seen before a reconnect
            self.next_rev = events[-1].kv.mod_revision + 1
            return WatchResponse(header, events)
        if r.created or self.next_rev == 0:
            return None
        # No events and not the creation answer: a progress notification; every event
        # up to header.revision has been sent.
        if r.header.revision >= self.next_rev:
            self.next_rev = r.header.revision + 1
        return WatchResponse(header, [], progress_notify=True)


CLOSED = object()  # queued by a watch's close(): wakes its reader


@dataclass(frozen=True, slots=True)
class Next:
    """What a watch's loop does after one queued item (see WatchLoop.next); nothing set:
    wait for the next item."""

    done: bool = False                # return `out` to the caller
    out: WatchResponse | None = None  # (None: the watch was only created)
    stop: bool = False                # the watch is closed: end the iteration
    error: EtcdError | None = None    # shut the watch down, then raise this
    drop: Step | None = None          # leave the stream (then WatchLoop.left)...
    pause: float = 0.0                # ...and wait this long before opening another


class WatchLoop:
    """One watch's loop without IO, for both flavours, which only add the waiting and
    the stream calls: opening a stream with back-off (open_failed), what each queued
    item means (next), and the client's side of leaving a stream (left). Items are
    (stream, WatchResponse or Broken) pairs, or CLOSED."""

    def __init__(self, spec: WatchSpec, members: int) -> None:
        self.state = WatchState(spec)
        self.members = members
        self.closed = False
        self.user_closed = False  # closed by the caller, not by an error
        self.reconnects = 0  # streams joined after the first (for tests and metrics)
        self.early: WatchResponse | None = None  # a batch that came before `created`
        self._open_backoff = Backoff(members)
        self._pause = Backoff(members)

    def take_early(self) -> WatchResponse | None:
        early, self.early = self.early, None
        return early

    def opening(self) -> None:
        """A stream is about to be opened: the back-off starts afresh."""
        self._open_backoff = Backoff(self.members)

    def open_failed(self, failover: Callable[[Any], None], conn: Any,
                    error: EtcdError | None = None) -> float:
        """Dialling (error None) or authenticating on conn failed: fail over, and the
        pause before the next try; raises an error no other member can cure."""
        if error is not None and error.code in FATAL_STREAM_CODES:
            raise error
        if conn is not None:
            failover(conn)
        return self._open_backoff.next_pause()

    def pumping(self) -> None:
        """The caller waits for a batch: the pauses between broken streams start afresh."""
        self._pause = Backoff(self.members)

    def next(self, item: object, current: object, until_created: bool) -> Next:
        if item is CLOSED:
            return Next(stop=True)
        source, r = cast("tuple[object, rpc.WatchResponse | Broken]", item)
        if source is not current:
            return Next()  # from a stream this watch left: it resends from next_rev
        st = self.state.step(r)
        if st.error is not None:
            return Next(error=st.error)
        if st.drop:
            if self.closed:
                return Next(stop=True)
            return Next(drop=st, pause=self._pause.next_pause() if st.pause else 0.0)
        if st.out is not None:
            if until_created:  # (cannot happen: events follow the creation)
                self.early = st.out
                return Next(done=True)
            return Next(done=True, out=st.out)
        if until_created and st.created:
            return Next(done=True)
        return Next()

    def left(self, client: Any, stream: Any, st: Step) -> None:
        """The stream was left (st: why): re-authenticate (a stale token: later watches
        get a new stream) and fail over as st says."""
        if st.reauth:
            client._token = None
            client._watch_stream_gone(stream)
        if st.failover:
            client._failover(stream.conn)
        self.reconnects += 1


W = TypeVar("W")


class WatchRouter(Generic[W]):
    """Which watch each response on a shared Watch stream is for (no IO; the sync and
    asyncio streams use it). The server answers creations in the order they were sent,
    so a `created` response belongs to the oldest creation not yet answered (a refused
    one carries watch_id -1); other responses name their watch by the server's ID, and
    watch_id -1 without `created` (a progress answer for the whole stream) is for all."""

    def __init__(self) -> None:
        self._pending: deque[W | None] = deque()  # None: closed before it was created
        self._by_id: dict[int, W] = {}

    def creating(self, w: W) -> None:
        self._pending.append(w)

    def route(self, r: rpc.WatchResponse) -> tuple[list[W], int | None]:
        """(the watches `r` is for, a server watch ID to cancel: created for a watch
        that was closed meanwhile)."""
        if r.created:
            w = self._pending.popleft() if self._pending else None
            if w is None:
                return [], (r.watch_id if not r.canceled and r.watch_id >= 0 else None)
            if not r.canceled:
                self._by_id[r.watch_id] = w
            return [w], None
        if r.watch_id == -1:
            return list(self._by_id.values()), None
        w = self._by_id.get(r.watch_id)
        if w is None:
            return [], None
        if r.canceled:
            del self._by_id[r.watch_id]
        return [w], None

    def remove(self, w: W) -> int | None:
        """Forget `w`; the server watch ID to cancel, if it has one."""
        for wid, found in self._by_id.items():
            if found is w:
                del self._by_id[wid]
                return wid
        for i, waiting in enumerate(self._pending):
            if waiting is w:
                self._pending[i] = None
        return None

    def watches(self) -> list[W]:
        return [w for w in self._pending if w is not None] + list(self._by_id.values())

    def empty(self) -> bool:
        return not self._by_id and all(w is None for w in self._pending)
