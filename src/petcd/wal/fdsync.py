"""Asynchronous fdatasync for the WAL's writer: Linux native AIO (aio.py) where allowed,
else io_uring (uring.py), else None (the caller keeps its thread).

Native AIO first: its kernel worker runs on the submitting CPU, which on a quiet machine
is about to go idle (the loop waits for the completion) so no other CPU is woken; it is
the simpler of the two, and container sandboxes that refuse io_uring usually allow it.
io_uring's workers may run on any CPU, which helps when the loop thread stays busy after
submitting. Measured on a shared 2-core machine the two were within noise of each other
(docs/ARCHITECTURE.md). PETCD_WAL_AIO picks one: `aio`, `uring`, or `0` for none.
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


def open_fdsync(choice: str | None = None, probe_dir: str | None = None) -> FdSync | None:
    """The best asynchronous fdatasync this kernel, sandbox and the file system of
    probe_dir (the WAL's directory) allow, or None."""
    choice = os.environ.get("PETCD_WAL_AIO", "") if choice is None else choice
    if choice == "0":
        return None
    if choice in ("", "aio"):
        aio = AioSync.open(probe_dir)
        if aio is not None or choice == "aio":
            return aio
    return UringSync.open(probe_dir)
