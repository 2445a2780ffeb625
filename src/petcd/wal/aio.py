"""fdatasync without a thread: Linux native AIO (IOCB_CMD_FDSYNC, kernel >= 4.18).

The WAL's write goes to the page cache on the caller's thread (cheap); only the
fdatasync waits for the disk. Handing that wait to a Python thread costs two thread
wake-ups and two GIL hand-overs per write, on a lone write's critical path. Here the
kernel runs the fdatasync on its own worker and signals an eventfd when it is done; the
event loop watches the eventfd like a socket. The Python side is three system calls
through ctypes (io_submit, a read of the eventfd, io_getevents), no thread.

    aio = AioSync.open()          # None where native AIO fdsync is unavailable
    aio.submit(fd, token)         # fdatasync(fd) starts; covers every write made before
    ... the eventfd (aio.fileno()) becomes readable ...
    for token, err in aio.reap(): # err: 0, or the errno the fdatasync failed with

AIO is refused by some sandboxes (seccomp) and old kernels: open() returns None then,
and fdsync.open_fdsync also tries a real fdsync first, so callers keep their thread.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import platform
import struct
from collections.abc import Callable

# x86_64 and aarch64 system call numbers (the only ones probed; others fall back)
_SYSCALLS = {
    "x86_64": (206, 207, 208, 209),  # io_setup, io_destroy, io_getevents, io_submit
    "aarch64": (0, 1, 4, 2),
}
_IOCB_CMD_FDSYNC = 3
_IOCB_FLAG_RESFD = 1
# struct iocb: aio_data, aio_key, aio_rw_flags, aio_lio_opcode, aio_reqprio, aio_fildes,
# aio_buf, aio_nbytes, aio_offset, aio_reserved2, aio_flags, aio_resfd (little endian)
_IOCB = struct.Struct("<QIIHhIQQqQII")
_EVENT = struct.Struct("<QQqq")  # struct io_event: data, obj, res, res2
MAX_IN_FLIGHT = 64


class AioSync:
    """Asynchronous fdatasyncs whose completions are signalled on one eventfd."""

    def __init__(self, syscall: Callable[..., int], numbers: tuple[int, int, int, int],
                 ctx: int, efd: int) -> None:
        self._syscall = syscall
        self._destroy_nr, self._getevents_nr, self._submit_nr = numbers[1:]
        self._ctx = ctypes.c_ulong(ctx)
        self._efd = efd
        # The kernel copies the iocb at io_submit, so one buffer serves every call.
        self._iocb = ctypes.create_string_buffer(_IOCB.size)
        self._iocbs = (ctypes.c_void_p * 1)(ctypes.addressof(self._iocb))
        self._events = ctypes.create_string_buffer(_EVENT.size * MAX_IN_FLIGHT)
        self._no_wait = (ctypes.c_long * 2)(0, 0)
        # (the per-call arguments, converted once: a write's path makes both calls)
        self._submit_args = (ctypes.c_long(self._submit_nr), self._ctx, ctypes.c_long(1),
                             self._iocbs)
        self._reap_args = (ctypes.c_long(self._getevents_nr), self._ctx, ctypes.c_long(0),
                           ctypes.c_long(MAX_IN_FLIGHT), self._events, self._no_wait)
        self.in_flight = 0

    @classmethod
    def open(cls) -> AioSync | None:
        """An AioSync, or None where the kernel or a sandbox refuses native AIO fdsync."""
        numbers = _SYSCALLS.get(platform.machine())
        if numbers is None or not hasattr(os, "eventfd"):
            return None
        try:
            syscall = ctypes.CDLL(None, use_errno=True).syscall
        except (OSError, AttributeError):
            return None
        syscall.restype = ctypes.c_long
        ctx = ctypes.c_ulong(0)
        if syscall(ctypes.c_long(numbers[0]), ctypes.c_uint(MAX_IN_FLIGHT),
                   ctypes.byref(ctx)) != 0:
            return None  # ENOSYS, EPERM (seccomp), EAGAIN (aio-max-nr reached)
        efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        return cls(syscall, numbers, ctx.value, efd)

    def fileno(self) -> int:
        """The eventfd: readable once a submitted fdatasync completed."""
        return self._efd

    def submit(self, fd: int, token: int) -> None:
        """Start fdatasync(fd); reap() returns `token` when it is done."""
        if self.in_flight >= MAX_IN_FLIGHT:
            raise OSError(errno.EAGAIN, "too many fdatasyncs in flight")
        _IOCB.pack_into(self._iocb, 0, token, 0, 0, _IOCB_CMD_FDSYNC, 0, fd, 0, 0, 0, 0,
                        _IOCB_FLAG_RESFD, self._efd)
        if self._syscall(*self._submit_args) != 1:
            err = ctypes.get_errno()
            raise OSError(err, f"io_submit: {os.strerror(err)}")
        self.in_flight += 1

    def reap(self) -> list[tuple[int, int]]:
        """(token, 0 or errno) of every completed fdatasync; never blocks."""
        with contextlib.suppress(BlockingIOError):
            os.read(self._efd, 8)
        if not self.in_flight:
            return []
        n = self._syscall(*self._reap_args)
        if n < 0:
            err = ctypes.get_errno()
            if err == errno.EINTR:
                return []
            raise OSError(err, f"io_getevents: {os.strerror(err)}")
        done = []
        for i in range(n):
            token, _, res, _ = _EVENT.unpack_from(self._events, i * _EVENT.size)
            done.append((token, -res if res < 0 else 0))
        self.in_flight -= n
        return done

    def close(self) -> None:
        """Release the AIO context (the kernel first waits for fdatasyncs in flight)."""
        if self._efd >= 0:
            self._syscall(ctypes.c_long(self._destroy_nr), self._ctx)
            os.close(self._efd)
            self._efd = -1
