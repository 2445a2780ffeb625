"""One client's watch stream: its watchers and its bounded queue of responses."""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Protocol

from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.server.watch.watchers import (
    ERR_DUPLICATE_ID,
    ERR_EMPTY_RANGE,
    INVALID_WATCH_ID,
    SYNCED,
    Watcher,
)

if TYPE_CHECKING:
    from petcd.server.watch.hub import WatchHub


class Outlet(Protocol):
    """The client's end of a stream, written to directly (the API layer's call, when it
    can take a response without its handler's task: petcd's own HTTP/2 server)."""

    def offer(self, msg: bytes, held: bool = False) -> bool:
        """Send `msg` now if nothing of the stream is waiting (flow control, a backed-up
        transport, an ended call); False: not taken, queue it. held: flush() follows
        before the event loop runs anything else (the outlet need not arrange one)."""
        ...

    def flush(self) -> None:
        """Write what was offered to the transport now."""
        ...


class WatchStream:
    """The watchers of one client stream and its outbound queue of serialized
    WatchResponses (drained by `messages()`).

    Each response sent costs gRPC about as much as the events in it cost us, so a
    watcher's new events join its response still waiting in the queue (protobuf
    concatenation: the events append, the newer header wins) instead of queueing
    another: a stream that falls behind sends fewer, larger responses. Never across a
    control response (created, canceled, progress), so those keep their place.

    With an `outlet` (set by the API layer) a response is offered to the client's
    stream at once while nothing is queued: a live event goes out from the apply of its
    write, without a task step of the handler or another event loop iteration. Once the
    outlet refuses (the client does not read), responses queue as above, in order."""

    def __init__(self, hub: WatchHub) -> None:
        self.hub = hub
        self.watchers: dict[int, Watcher] = {}
        self._next_id = 0
        self.out: deque[bytes | bytearray] = deque()
        self.queued = 0  # bytes in `out`
        self.pushed = 0  # responses queued so far, and sent so far: out = [sent, pushed)
        self.popped = 0
        self.barrier = -1  # the place of the last control response queued
        self.unsynced = 0  # how many of its watchers are unsynced
        self._progress_waiting = 0  # progress requests held until all are synced
        self._ready = asyncio.Event()
        self.closed = False
        self._timer: asyncio.TimerHandle | None = None
        self.outlet: Outlet | None = None
        interval = hub.progress_interval
        if interval > 0:
            # Jitter, as etcd: streams opened together do not tick together.
            self._interval = interval + random.uniform(0, interval / 10)
            self._timer = hub.loop.call_later(self._interval, self._progress_tick)

    # -- requests
    def create(self, req: rpc.WatchCreateRequest) -> None:
        hub = self.hub
        key = req.key or b"\x00"  # etcd: an empty key is the smallest key
        end: bytes | None = req.range_end or None
        if end == b"\x00":
            end = b""  # every key >= key
        if end and key >= end:
            self.push(hub.control(hub.revision, watch_id=INVALID_WATCH_ID, created=True,
                                  canceled=True, cancel_reason=ERR_EMPTY_RANGE))
            return
        watch_id = req.watch_id
        if watch_id == 0:  # the server chooses: the lowest unused from a moving start
            while self._next_id in self.watchers:
                self._next_id += 1
            watch_id = self._next_id
            self._next_id += 1
        elif watch_id in self.watchers:
            self.push(hub.control(hub.revision, watch_id=INVALID_WATCH_ID, created=True,
                                  canceled=True, cancel_reason=ERR_DUPLICATE_ID))
            return
        w = Watcher(self, watch_id, key, end, req)
        self.watchers[watch_id] = w
        self.push(hub.control(hub.revision, watch_id=watch_id, created=True))
        hub.add(w, req.start_revision)

    def cancel(self, watch_id: int) -> None:
        w = self.watchers.pop(watch_id, None)
        if w is None:
            return  # etcd says nothing about an unknown ID
        self.hub.remove(w)
        self.push(self.hub.control(self.hub.revision, watch_id=watch_id, canceled=True))

    def request_progress(self) -> None:
        """Answered with the hub's revision once every watcher of the stream has been
        given everything up to it (at once when they all are synced)."""
        if self.unsynced:
            self._progress_waiting += 1
        else:
            self.push(self.hub.control(self.hub.revision, watch_id=INVALID_WATCH_ID))

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.outlet = None
        for w in self.watchers.values():
            self.hub.remove(w)
        self.watchers.clear()
        self.out.clear()
        self.queued = 0
        if self._timer is not None:
            self._timer.cancel()
        self._ready.set()
        self.hub.streams.discard(self)

    # -- output
    def push(self, msg: bytes, barrier: bool = True) -> None:
        """Send a response nothing may join through the outlet (when nothing is queued),
        else queue it (a control response is a barrier: no events queued after it join a
        response before it)."""
        outlet = self.outlet
        if not self.out and outlet is not None and not self.closed and \
                outlet.offer(msg, self.hub.notifying):
            self.hub.offered(outlet)
            return
        self._queue(msg, barrier)

    def _queue(self, msg: bytes | bytearray, barrier: bool) -> None:
        if barrier:
            self.barrier = self.pushed
        self.out.append(msg)
        self.pushed += 1
        self.queued += len(msg)
        if not self._ready.is_set():
            self._ready.set()

    def push_events(self, w: Watcher, msg: bytes) -> None:
        """Append an events response of `w` to w's response still queued, or send it
        through the outlet (when nothing is queued), or queue it."""
        tail = w.tail
        if tail is not None and w.tail_index >= self.popped and w.tail_index > self.barrier \
                and len(tail) + len(msg) < self.hub.response_limit:
            tail += msg
            self.queued += len(msg)
            return
        outlet = self.outlet
        if not self.out and outlet is not None and not self.closed and \
                outlet.offer(msg, self.hub.notifying):
            w.tail = None  # sent: nothing joins it
            self.hub.offered(outlet)
            return
        tail = w.tail = bytearray(msg)
        w.tail_index = self.pushed
        self._queue(tail, barrier=False)

    async def messages(self) -> AsyncIterator[bytes]:
        """The serialized responses, in order, as they are queued; ends when closed."""
        out = self.out
        hub = self.hub
        while True:
            if out:
                msg = out.popleft()
                self.popped += 1
                self.queued -= len(msg)
                if self.unsynced and self.queued < hub.low_water:
                    hub.wake_sync()
                yield msg if type(msg) is bytes else bytes(msg)
            elif self.closed:
                return
            else:
                self._ready.clear()
                await self._ready.wait()

    # -- called by the hub
    def all_synced(self) -> None:
        """The last unsynced watcher caught up: answer held progress requests."""
        while self._progress_waiting:
            self._progress_waiting -= 1
            self.push(self.hub.control(self.hub.revision, watch_id=INVALID_WATCH_ID))

    def _progress_tick(self) -> None:
        hub = self.hub
        full = self.queued >= hub.high_water  # busy sending: progress is not news
        for w in self.watchers.values():
            if w.progress:
                if w.quiet and w.state == SYNCED and not full:
                    self.push(hub.control(hub.revision, watch_id=w.id))
                w.quiet = True
        self._timer = hub.loop.call_later(self._interval, self._progress_tick)
