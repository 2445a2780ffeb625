"""fdatasync without a Python thread through io_uring (IORING_OP_FSYNC), x86_64 Linux.

The kernel hands an fdatasync submitted to io_uring to one of the ring's own worker
threads (io-wq: kernel threads of this process, free to run on any CPU), which starts it
at once, without the GIL, and posts the completion to the ring and to an eventfd the
event loop watches. Native AIO (aio.py) queues it to a kernel worker bound to the CPU
that submitted it, where it waits for the loop thread (still running on that CPU) to
sleep or be preempted: on a busy machine that wait shows in a write's latency.

The rings are shared memory: an entry is filled, then the ring's tail moved (x86's store
order keeps those in order; other architectures would need barriers, hence x86_64
only), and io_uring_enter submits it. Same interface as AioSync.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import mmap
import os
import platform
import struct
from collections.abc import Callable

_SETUP, _ENTER, _REGISTER = 425, 426, 427
_REGISTER_EVENTFD = 4
_OP_FSYNC = 3
_FSYNC_DATASYNC = 1
_FEAT_SINGLE_MMAP = 1
_OFF_SQ_RING, _OFF_CQ_RING, _OFF_SQES = 0, 0x8000000, 0x10000000
# struct io_uring_params: 6 u32 + wq_fd + 3 reserved, then the SQ and CQ ring offsets
_PARAMS = struct.Struct("<10I8IQ8IQ")
_U32 = struct.Struct("<I")
# struct io_uring_sqe (64 bytes): opcode, flags, ioprio, fd, off, addr, len, fsync_flags,
# user_data, then 24 bytes unused here
_SQE = struct.Struct("<BBHiQQIIQ24x")
_CQE = struct.Struct("<QiI")
ENTRIES = 64


class UringSync:
    """Asynchronous fdatasyncs through an io_uring whose completions signal an eventfd."""

    def __init__(self, syscall: Callable[..., int], ring_fd: int, efd: int,
                 params: tuple[int, ...], rings: mmap.mmap, cq_ring: mmap.mmap,
                 sqes: mmap.mmap) -> None:
        self._syscall = syscall
        self._ring_fd = ring_fd
        self._efd = efd
        self._rings, self._cq_ring, self._sqes = rings, cq_ring, sqes
        sq = params[10:18]
        cq = params[19:27]
        self._sq_head, self._sq_tail, self._sq_mask, self._sq_array = sq[0], sq[1], sq[2], sq[6]
        self._cq_head, self._cq_tail, self._cq_mask, self._cqes = cq[0], cq[1], cq[2], cq[5]
        self._sq_mask_v = _U32.unpack_from(rings, self._sq_mask)[0]
        self._cq_mask_v = _U32.unpack_from(cq_ring, self._cq_mask)[0]
        self._enter_args = (ctypes.c_long(_ENTER), ctypes.c_uint(ring_fd), ctypes.c_uint(1),
                            ctypes.c_uint(0), ctypes.c_uint(0), None, ctypes.c_size_t(0))
        self.in_flight = 0

    @classmethod
    def open(cls) -> UringSync | None:
        """A UringSync, or None where io_uring is refused (sandboxes, old kernels,
        kernel.io_uring_disabled) or this is not x86_64 Linux."""
        if platform.machine() != "x86_64" or not hasattr(os, "eventfd"):
            return None
        try:
            syscall = ctypes.CDLL(None, use_errno=True).syscall
        except (OSError, AttributeError):
            return None
        syscall.restype = ctypes.c_long
        raw = ctypes.create_string_buffer(_PARAMS.size)
        ring_fd = syscall(ctypes.c_long(_SETUP), ctypes.c_uint(ENTRIES), raw)
        if ring_fd < 0:
            return None
        efd = -1
        try:
            params = _PARAMS.unpack(raw.raw)
            sq_entries, cq_entries, features = params[0], params[1], params[5]
            sq_size = params[16] + sq_entries * 4  # sq_off.array + one u32 per entry
            cq_size = params[24] + cq_entries * _CQE.size  # cq_off.cqes + the entries
            prot = mmap.PROT_READ | mmap.PROT_WRITE
            flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
            if features & _FEAT_SINGLE_MMAP:
                rings = mmap.mmap(ring_fd, max(sq_size, cq_size), flags, prot,
                                  offset=_OFF_SQ_RING)
                cq_ring = rings
            else:
                rings = mmap.mmap(ring_fd, sq_size, flags, prot, offset=_OFF_SQ_RING)
                cq_ring = mmap.mmap(ring_fd, cq_size, flags, prot, offset=_OFF_CQ_RING)
            sqes = mmap.mmap(ring_fd, sq_entries * _SQE.size, flags, prot, offset=_OFF_SQES)
            efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            arg = ctypes.c_int32(efd)
            if syscall(ctypes.c_long(_REGISTER), ctypes.c_uint(ring_fd),
                       ctypes.c_uint(_REGISTER_EVENTFD), ctypes.byref(arg), ctypes.c_uint(1)) != 0:
                raise OSError(ctypes.get_errno(), "io_uring_register")
        except (OSError, ValueError):
            if efd >= 0:
                os.close(efd)
            os.close(ring_fd)
            return None
        return cls(syscall, ring_fd, efd, params, rings, cq_ring, sqes)

    def fileno(self) -> int:
        """The eventfd: readable once a submitted fdatasync completed."""
        return self._efd

    def submit(self, fd: int, token: int) -> None:
        """Start fdatasync(fd); reap() returns `token` when it is done."""
        if self.in_flight >= ENTRIES:
            raise OSError(errno.EAGAIN, "too many fdatasyncs in flight")
        rings = self._rings
        tail = _U32.unpack_from(rings, self._sq_tail)[0]
        slot = tail & self._sq_mask_v
        _SQE.pack_into(self._sqes, slot * _SQE.size, _OP_FSYNC, 0, 0, fd, 0, 0, 0,
                       _FSYNC_DATASYNC, token)
        _U32.pack_into(rings, self._sq_array + slot * 4, slot)
        _U32.pack_into(rings, self._sq_tail, (tail + 1) & 0xFFFFFFFF)
        if self._syscall(*self._enter_args) != 1:
            err = ctypes.get_errno()
            # (the entry stays queued; the ring is unusable for us now)
            raise OSError(err, f"io_uring_enter: {os.strerror(err)}")
        self.in_flight += 1

    def reap(self) -> list[tuple[int, int]]:
        """(token, 0 or errno) of every completed fdatasync; never blocks."""
        with contextlib.suppress(BlockingIOError):
            os.read(self._efd, 8)
        cq = self._cq_ring
        head = _U32.unpack_from(cq, self._cq_head)[0]
        tail = _U32.unpack_from(cq, self._cq_tail)[0]
        done = []
        while head != tail:
            token, res, _ = _CQE.unpack_from(cq, self._cqes + (head & self._cq_mask_v) * _CQE.size)
            done.append((token, -res if res < 0 else 0))
            head = (head + 1) & 0xFFFFFFFF
        if done:
            _U32.pack_into(cq, self._cq_head, head)
            self.in_flight -= len(done)
        return done

    def close(self) -> None:
        """Release the ring (the kernel finishes fdatasyncs in flight first)."""
        if self._efd >= 0:
            for m in {id(x): x for x in (self._sqes, self._cq_ring, self._rings)}.values():
                m.close()
            os.close(self._ring_fd)
            os.close(self._efd)
            self._efd = -1
