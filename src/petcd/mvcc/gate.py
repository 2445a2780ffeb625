"""`ReadGate`: reads of the backend file from other threads against the loop's swaps of
that file (defragment, a snapshot from the leader)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator


class ReadGate:
    """Many readers or one closer. Readers are threads other than the one that swaps
    the file (defragment_swap(), restore_from(): the event loop's); close() blocks until
    they are done (call it off that thread) and holds new ones back until open()."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._closed = False

    @property
    def active(self) -> int:
        """Readers in other threads now (etcd's open read transactions gauge)."""
        return self._readers

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        with self._cond:
            while self._closed:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            while self._closed:
                self._cond.wait()
            self._closed = True
            while self._readers:
                self._cond.wait()

    def open(self) -> None:
        with self._cond:
            self._closed = False
            self._cond.notify_all()
