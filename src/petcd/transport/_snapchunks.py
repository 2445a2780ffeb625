"""The data of one incoming snapshot, handed to its consumer as it arrives and checked
against the sender's sha256 on the way, off the event loop."""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque

from .types import Hasher

BATCH = 1 << 20  # bytes handed out at once, at most (unless one chunk is bigger)


class SnapshotError(ConnectionError):
    """A snapshot stream ended before its END frame or failed verification."""


def _hash_all(sha: Hasher, chunks: list[bytes]) -> None:
    for chunk in chunks:
        sha.update(chunk)  # (releases the GIL: the loop goes on receiving)


class SnapshotChunks:
    """Async iterator over the data of one incoming snapshot, in order, as it arrives; or
    `batch()`: what arrived since the last call, up to BATCH bytes at once.

    Reading from the socket pauses while more than ``high_water`` bytes wait to be consumed, so
    a slow consumer throttles the sender instead of filling memory. Each batch is hashed in a
    worker thread before it is handed out, while the socket is read on; iteration ends normally
    only after the sender's END frame came (its length checked by the connection) and the
    sha256 of everything handed out matched it; otherwise it raises SnapshotError.
    """

    def __init__(self, transport: asyncio.Transport, high_water: int, idle_timeout: float) -> None:
        self._transport = transport
        self._idle_timeout = idle_timeout
        self._high = high_water
        self._low = high_water // 4
        self._chunks: deque[bytes] = deque()
        self._ready: deque[bytes] = deque()  # hashed, not yet handed out one by one
        self._buffered = 0
        self._paused = False
        self._done = False
        self._digest = b""
        self._sha = hashlib.sha256()
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None

    def feed(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._buffered += len(chunk)
        if not self._paused and self._buffered > self._high:
            self._paused = True
            self._transport.pause_reading()
        self._wake()

    def finish(self, digest: bytes) -> None:
        """The END frame came with this sha256 of the whole stream."""
        self._done = True
        self._digest = digest
        self._wake()

    def fail(self, exc: BaseException) -> None:
        if not self._done and self._error is None:
            self._error = exc
            self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def batch(self) -> list[bytes]:
        """The chunks that arrived since the last call (waiting for one if none did),
        hashed; [] once the stream ended whole."""
        if self._ready:
            out = list(self._ready)
            self._ready.clear()
            return out
        while not self._chunks:
            if self._error is not None:
                raise self._error
            if self._done:
                if self._sha.digest() != self._digest:
                    self._error = SnapshotError("snapshot sha256 mismatch")
                    raise self._error
                return []
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(self._idle_timeout):
                    await self._waiter
            except TimeoutError:
                self._transport.abort()  # a sender that went quiet must not pin us forever
                self.fail(SnapshotError(f"no snapshot data for {self._idle_timeout:.1f}s"))
            finally:
                self._waiter = None
        # At most BATCH bytes (and at least one chunk): the socket is read on while this
        # one is hashed and then written, so memory holds high_water plus two batches.
        chunks = self._chunks
        batch = [chunks.popleft()]
        size = len(batch[0])
        while chunks and size + len(chunks[0]) <= BATCH:
            batch.append(chunks.popleft())
            size += len(batch[-1])
        self._buffered -= size
        if self._paused and self._buffered <= self._low:
            self._paused = False
            if not self._transport.is_closing():
                self._transport.resume_reading()
        await asyncio.get_running_loop().run_in_executor(None, _hash_all, self._sha, batch)
        return batch

    def __aiter__(self) -> SnapshotChunks:
        return self

    async def __anext__(self) -> bytes:
        if not self._ready:
            self._ready.extend(await self.batch())
            if not self._ready:
                raise StopAsyncIteration
        return self._ready.popleft()
