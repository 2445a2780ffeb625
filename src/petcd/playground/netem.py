"""A userspace stand-in for `tc netem` on peer links (this kernel has no sch_netem):
the bytes of one direction of a proxied TCP connection are held back by a delay with
jitter, a "lost" piece waits a retransmission timeout as TCP would make it wait (TCP
cannot lose bytes in the middle of a stream; loss shows as such stalls), and a link
may be cut outright now and then, losing whatever was in flight, as a reset would.
Order is kept: a piece is never released before the one ahead of it."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from dataclasses import dataclass

_CHUNK = 1 << 16
_QUEUE = 256  # pieces in flight per direction before reading from the sender waits


@dataclass(frozen=True, slots=True)
class Impairment:
    delay: float = 0.0  # seconds added to every piece, one way
    jitter: float = 0.0  # +- uniformly around the delay
    loss: float = 0.0  # probability that a piece is "lost" and resent after `rto`
    rto: float = 0.2  # Linux's minimum TCP retransmission timeout
    cut: float = 0.0  # probability per piece that the link is reset instead

    def release_after(self, rng: random.Random) -> float | None:
        """Seconds a piece waits; None: the link is cut."""
        if self.cut and rng.random() < self.cut:
            return None
        wait = self.delay + (rng.uniform(-self.jitter, self.jitter) if self.jitter else 0.0)
        if self.loss and rng.random() < self.loss:
            wait += self.rto
        return max(0.0, wait)


class Cut(Exception):
    """The impairment reset the link."""


async def impaired_pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        impairment: Callable[[], Impairment], rng: random.Random) -> None:
    """Forward reader -> writer with the impairment of the moment; raises Cut when it
    resets the link."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(_QUEUE)

    async def deliver() -> None:
        while True:
            release, data = await queue.get()
            if not data:
                with contextlib.suppress(OSError, RuntimeError):
                    if writer.can_write_eof():
                        writer.write_eof()
                return
            wait = release - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()

    sender = loop.create_task(deliver())
    last = 0.0
    try:
        while data := await reader.read(_CHUNK):
            after = impairment().release_after(rng)
            if after is None:
                raise Cut()
            last = max(last, loop.time() + after)
            await queue.put((last, data))
            if sender.done():
                break  # the other side is gone
        await queue.put((last, b""))
        await sender
    finally:
        if not sender.done():
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError, ConnectionError):
                await sender
