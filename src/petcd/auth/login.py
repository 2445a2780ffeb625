"""Passwords: bcrypt hashing and checking off the event loop, and a per-user back-off
that makes password guessing slow.

Back-off (petcd's own; etcd has none): after f consecutive failed logins of a user
name, attempts for that name are spaced min(10 s, 0.25 s * 2^(f-1)) apart, whoever
makes them: each attempt waits for its slot, and one that would wait more than 30 s
is refused at once with "etcdserver: too many requests". A success clears the name's
record. Other names are never delayed, so guessing one user's password does not
lock anyone else out; the legitimate owner of an attacked name is slowed, never
locked out for more than the cap. Records are per member, in memory, and kept for at
most 10,000 names (the oldest is dropped first).
"""

from __future__ import annotations

import asyncio
import time

import bcrypt

from petcd import errors

BASE_DELAY = 0.25
MAX_DELAY = 10.0
MAX_WAIT = 30.0
MAX_NAMES = 10_000
# bcrypt is CPU-bound by design: at most this many hashes at once per member.
_HASHERS = 2


def delay_after(failures: int) -> float:
    if failures <= 0:
        return 0.0
    return min(MAX_DELAY, BASE_DELAY * float(2 ** min(failures - 1, 32)))


class Passwords:
    def __init__(self, cost: int) -> None:
        # etcd falls back to its default for a cost outside bcrypt's range.
        self.cost = cost if 4 <= cost <= 31 else 10
        self._slots: asyncio.Semaphore | None = None
        # user name -> [consecutive failures, monotonic time of the next free slot]
        self._failures: dict[str, list[float]] = {}

    def _sem(self) -> asyncio.Semaphore:
        if self._slots is None:
            self._slots = asyncio.Semaphore(_HASHERS)
        return self._slots

    async def hash(self, password: str) -> str:
        async with self._sem():
            hashed = await asyncio.to_thread(
                bcrypt.hashpw, password.encode(), bcrypt.gensalt(rounds=self.cost))
        return hashed.decode()

    async def check(self, hashed: bytes, password: str) -> bool:
        async with self._sem():
            try:
                return await asyncio.to_thread(bcrypt.checkpw, password.encode(), hashed)
            except ValueError:  # not a bcrypt hash
                return False

    async def wait_turn(self, name: str) -> None:
        """Before checking `name`'s password: wait for its slot (raises TOO_MANY_REQUESTS
        when the wait would be over MAX_WAIT)."""
        rec = self._failures.get(name)
        if rec is None:
            return
        now = time.monotonic()
        slot = max(now, rec[1])
        if slot - now > MAX_WAIT:
            raise errors.TOO_MANY_REQUESTS()
        rec[1] = slot + delay_after(int(rec[0]))
        if slot > now:
            await asyncio.sleep(slot - now)

    def record(self, name: str, ok: bool) -> None:
        if ok:
            self._failures.pop(name, None)
            return
        rec = self._failures.get(name)
        now = time.monotonic()
        if rec is None:
            if len(self._failures) >= MAX_NAMES:
                del self._failures[next(iter(self._failures))]
            rec = self._failures[name] = [0, now]
        rec[0] += 1
        rec[1] = max(rec[1], now + delay_after(int(rec[0])))

    def failures(self, name: str) -> int:
        rec = self._failures.get(name)
        return 0 if rec is None else int(rec[0])
