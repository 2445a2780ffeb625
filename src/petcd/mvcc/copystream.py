"""`CopyStream`: a consistent copy of the backend read as a stream, for sending a snapshot to
a follower without writing the copy to disk first.

LMDB writes the copy (one read transaction: the state of one committed batch) into one end of
a socket pair from a thread of its own; the sender reads the other end as it sends. The
socket's buffer is the only bound between them, so the copy runs at the speed of the
network. A copy that fails raises from `readinto()` at its end instead of returning EOF, so
a reader never mistakes a truncated copy for a whole one.
"""

from __future__ import annotations

import contextlib
import io
import socket
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

    from petcd.mvcc.backend import Backend

_BUFFER = 1 << 20  # socket buffer between LMDB's writer and the reader


class CopyStream(io.RawIOBase):
    def __init__(self, backend: Backend) -> None:
        super().__init__()
        self._backend = backend
        self._reader, self._writer = socket.socketpair()
        for sock, opt in ((self._reader, socket.SO_RCVBUF), (self._writer, socket.SO_SNDBUF)):
            sock.setsockopt(socket.SOL_SOCKET, opt, _BUFFER)
        self._complete = False
        self.error: BaseException | None = None
        self.copied = 0
        self._thread = threading.Thread(target=self._produce, name="petcd-backend-copy",
                                        daemon=True)
        self._thread.start()

    def _produce(self) -> None:
        try:
            # Not while a defragment or snapshot install swaps the file (they wait for us).
            with self._backend.readers.reading():
                self._backend.env.copyfd(self._writer.fileno())
            self._complete = True
        except BaseException as e:  # (the reader hung up, or LMDB failed)
            self.error = e
        finally:
            self._writer.close()  # EOF for the reader, after _complete is set

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        n = self._reader.recv_into(memoryview(buffer))
        if n == 0 and not self._complete:
            if self.closed:
                raise OSError("backend copy stopped")
            self._thread.join()  # (it closed its end: it has finished)
            if not self._complete:
                raise OSError(f"backend copy failed: {self.error}")
        self.copied += n
        return n

    def close(self) -> None:
        """Stop early or after the end: the writer, if still copying, fails on its next
        write and ends its read transaction; a blocked readinto() returns."""
        if not self.closed:
            with contextlib.suppress(OSError):  # (the writer already closed its end)
                self._reader.shutdown(socket.SHUT_RDWR)
            self._reader.close()
        super().close()
