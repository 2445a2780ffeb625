"""Asynchronous fdatasync for the WAL's writer: io_uring (uring.py) where allowed, else
Linux native AIO (aio.py), else None (the caller keeps its thread).

PETCD_WAL_AIO picks one: `uring`, `aio`, or `0` for none (the tests of the fallbacks).
"""

from __future__ import annotations

import os
from typing import Protocol

from petcd.wal.aio import AioSync
from petcd.wal.uring import UringSync


class FdSync(Protocol):
    """fdatasyncs that complete on an eventfd (see AioSync and UringSync)."""

    in_flight: int

    def fileno(self) -> int: ...

    def submit(self, fd: int, token: int) -> None: ...

    def reap(self) -> list[tuple[int, int]]: ...

    def close(self) -> None: ...


def open_fdsync(choice: str | None = None) -> FdSync | None:
    """The best asynchronous fdatasync this kernel and sandbox allow, or None."""
    choice = os.environ.get("PETCD_WAL_AIO", "") if choice is None else choice
    if choice == "0":
        return None
    if choice in ("", "uring"):
        uring = UringSync.open()
        if uring is not None or choice == "uring":
            return uring
    return AioSync.open()
