"""fdatasync in a process of its own (PETCD_WAL_AIO=proc; see wal/fdsync.py).

Native AIO runs an fdatasync on a kernel worker bound to the submitting CPU: when the
event loop is busy, that worker preempts the loop (or waits for it). A Python thread
costs GIL hand-overs. This one has neither: a child process (petcd.wal.syncchild, a
bare interpreter that never shares a GIL with the member) holds its own descriptor of
the WAL segment, passed over a unix socket when the segment changes, and fdatasyncs it
on request. fdatasync flushes the file, whichever descriptor names it, so a sync started
after the frame was written covers it. The scheduler may run the child on another CPU.
Off by default: A/B runs against native AIO showed no gain above the noise on a shared
2-core machine (docs/architecture/raftnode.md, "WAL writes").

    s = SyncProc.open()           # None where the child cannot be started
    s.submit(fd, token)           # fdatasync(fd) starts; covers every write made before
    ... s.fileno() becomes readable ...
    for token, err in s.reap():   # err: 0, or the errno the fdatasync failed with

If the child dies, nothing it did not confirm counts: reap() fdatasyncs what was in
flight right here (on the caller's thread, through the member's own duplicate of each
file) and from then on submit() syncs inline, as the WAL's lone writes do. The child
exits when the member closes its end or dies (the kernel closes the member's fds).
"""

from __future__ import annotations

import array
import contextlib
import errno
import logging
import os
import select
import socket
import subprocess
import sys
from pathlib import Path

from petcd.wal.syncchild import ANSWER, REQUEST

log = logging.getLogger(__name__)

_CHILD = str(Path(__file__).with_name("syncchild.py"))
MAX_IN_FLIGHT = 64
# The child's nice increment (PETCD_WAL_PROC_NICE): it yields to the member's loop
# thread on a shared CPU (syncchild.main). At 64 clients, load 4-5.5: the loop preempted
# by the fsync agent 0.04-0.11 times a put with native AIO, 0.05-0.07 with this child at
# nice 0 (and the loop's short slice), 0.02-0.06 at 10 (bench/loop_sched.py).
NICE = int(os.environ.get("PETCD_WAL_PROC_NICE", "10"))


class SyncProc:
    """fdatasyncs done by a child process; completions make fileno() readable."""

    def __init__(self, proc: subprocess.Popen[bytes], sock: socket.socket) -> None:
        self._proc = proc
        self._sock = sock
        # The one descriptor the event loop watches: an epoll set holding the socket,
        # and after the child died an eventfd for the inline syncs' completions.
        self._ep = select.epoll()
        self._ep.register(sock.fileno(), select.EPOLLIN)
        self._efd = -1
        # The file the child holds: (st_dev, st_ino), and our duplicate of it (so that a
        # fallback sync reaches that file even after the WAL closed its descriptor).
        self._ident: tuple[int, int] | None = None
        self._dup = -1
        self._files: dict[int, int] = {}  # token -> the duplicate it is to sync
        self._retired: list[int] = []  # duplicates of earlier files still in flight
        self._done: list[tuple[int, int]] = []  # (inline syncs after the child died)
        self._dead = False
        self.in_flight = 0

    @classmethod
    def open(cls) -> SyncProc | None:
        """Start the child; None if that fails."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", _CHILD, str(theirs.fileno()), str(NICE)],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL)
        except OSError as e:
            log.warning("wal: cannot start the fdatasync process: %s", e)
            ours.close()
            return None
        finally:
            theirs.close()
        return cls(proc, ours)

    @property
    def pid(self) -> int:
        return self._proc.pid

    def fileno(self) -> int:
        return self._ep.fileno()

    def submit(self, fd: int, token: int) -> None:
        """Start fdatasync(fd); reap() returns `token` when it is done."""
        if self.in_flight >= MAX_IN_FLIGHT:
            raise OSError(errno.EAGAIN, "too many fdatasyncs in flight")
        st = os.fstat(fd)
        ident = (st.st_dev, st.st_ino)
        request = REQUEST.pack(token)
        if ident != self._ident:
            dup = os.dup(fd)
            if self._dup >= 0:
                self._retired.append(self._dup)
            self._ident, self._dup = ident, dup
            self._files[token] = dup
            self.in_flight += 1
            if not self._dead:
                fds = array.array("i", [dup])
                try:
                    self._sock.sendmsg([request],
                                       [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
                    return
                except OSError as e:
                    self._died(f"sendmsg: {e}")  # (which syncs this one too)
                    return
        else:
            self._files[token] = self._dup
            self.in_flight += 1
            if not self._dead:
                try:
                    self._sock.send(request)
                    return
                except OSError as e:
                    self._died(f"send: {e}")
                    return
        self._sync_inline()

    def reap(self) -> list[tuple[int, int]]:
        """(token, 0 or errno) of every completed fdatasync; never blocks (except, once
        the child died, for the fdatasyncs it left unconfirmed)."""
        done: list[tuple[int, int]] = []
        gone = ""
        if not self._dead:
            while True:
                try:
                    data = self._sock.recv(ANSWER.size * MAX_IN_FLIGHT, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    break
                except OSError as e:
                    gone = f"recv: {e}"
                    break
                if not data:
                    gone = "it exited"
                    break
                done += ANSWER.iter_unpack(data)
        for token, _ in done:
            self._files.pop(token, None)
        if gone:
            self._died(gone)  # (what it confirmed above stays confirmed)
        if self._efd >= 0:
            with contextlib.suppress(BlockingIOError):
                os.read(self._efd, 8)
        if self._done:
            for token, _ in self._done:
                self._files.pop(token, None)
            done += self._done
            self._done = []
        self.in_flight -= len(done)
        if self._retired:
            self._close_retired()
        return done

    def _died(self, why: str) -> None:
        """The child is gone: what it did not confirm is synced here, and from now on
        every submit() is."""
        log.error("wal: the fdatasync process %d is gone (%s); fdatasync inline from now on",
                  self._proc.pid, why)
        self._dead = True
        self._ep.unregister(self._sock.fileno())
        self._efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._ep.register(self._efd, select.EPOLLIN)
        self._sync_inline()

    def _sync_inline(self) -> None:
        """fdatasync every file something is waiting on; completions via the eventfd."""
        confirmed = {t for t, _ in self._done}
        waiting = {t: d for t, d in self._files.items() if t not in confirmed}
        result: dict[int, int] = {}
        for dup in set(waiting.values()):
            try:
                os.fdatasync(dup)
                result[dup] = 0
            except OSError as e:
                result[dup] = e.errno or errno.EIO
        self._done += [(t, result[d]) for t, d in waiting.items()]
        if waiting:
            os.eventfd_write(self._efd, 1)

    def _close_retired(self) -> None:
        used = set(self._files.values())
        keep = []
        for dup in self._retired:
            if dup in used:
                keep.append(dup)
            else:
                os.close(dup)
        self._retired = keep

    def close(self) -> None:
        """Stop the child (it finishes an fdatasync under way first)."""
        if self._sock.fileno() < 0:
            return
        self._sock.close()
        try:
            self._proc.wait(30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._ep.close()
        for fd in [self._dup, self._efd, *self._retired]:
            if fd >= 0:
                os.close(fd)
        self._dup = self._efd = -1
        self._retired = []
