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
import select
import tempfile
import time
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
        aio = _working(AioSync.open(), probe_dir)
        if aio is not None or choice == "aio":
            return aio
    return _working(UringSync.open(), probe_dir)


def _working(fs: FdSync | None, probe_dir: str | None) -> FdSync | None:
    """fs, if one real fdsync of a new empty file in probe_dir (the WAL's file system,
    which must support it) completes without error; else None (fs closed)."""
    if fs is None:
        return None
    try:
        with tempfile.TemporaryFile(dir=probe_dir) as f:
            fs.submit(f.fileno(), 0)
            deadline = time.monotonic() + 60  # (a busy disk can be slow)
            done: list[tuple[int, int]] = []
            while not done and time.monotonic() < deadline:
                select.select([fs.fileno()], [], [], 1)
                done = fs.reap()
            if done == [(0, 0)]:
                return fs
    except OSError:
        pass
    fs.close()
    return None
