"""The fdatasync process of petcd.wal.syncproc: `python -I -S syncchild.py FD NICE`
(standard library only, so the interpreter starts in a few milliseconds).

FD is one end of a SOCK_SEQPACKET socket pair. Each request is a token (8 bytes),
carrying the file to sync as SCM_RIGHTS when it changed since the request before; the
answer is (token, 0 or errno) once an fdatasync of that file, started after the request
arrived, returned. Requests queued behind one share its fdatasync. The process exits
when the other end is closed (the member stopped, or died: the kernel closes its fds).
"""

import array
import contextlib
import ctypes
import errno
import os
import signal
import socket
import struct
import sys

REQUEST = struct.Struct("<Q")
ANSWER = struct.Struct("<Qi")
_FDS = socket.CMSG_SPACE(array.array("i", [0]).itemsize)


def _read(sock: socket.socket, flags: int) -> tuple[int, int] | None:
    """(token, new fd or -1), or None: nothing (more) to read, or the other end closed
    (then the caller's next blocking read sees b"" again)."""
    try:
        msg, anc, _, _ = sock.recvmsg(REQUEST.size, _FDS, flags)
    except BlockingIOError:
        return None
    fd = -1
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds = array.array("i")
            fds.frombytes(data[:len(data) - len(data) % fds.itemsize])
            for extra in fds[1:]:  # (one is ever sent)
                os.close(extra)
            fd = fds[0] if fds else -1
    if len(msg) != REQUEST.size:
        if fd >= 0:
            os.close(fd)
        return None
    return REQUEST.unpack(msg)[0], fd


def _sync(fd: int) -> int:
    if fd < 0:
        return errno.EBADF
    try:
        os.fdatasync(fd)
    except OSError as e:
        return e.errno or errno.EIO
    return 0


def serve(sock: socket.socket) -> None:
    current = -1
    while True:
        first = _read(sock, 0)
        if first is None:
            return  # (the member's end is closed)
        batch = [first]
        while True:  # whatever else is queued rides on the same fdatasync
            more = _read(sock, socket.MSG_DONTWAIT)
            if more is None:
                break
            batch.append(more)
        tokens: list[int] = []
        for token, fd in batch:
            if fd >= 0:
                if tokens:  # (the file changed: what was asked of the old one first)
                    _answer(sock, tokens, _sync(current))
                    tokens = []
                if current >= 0:
                    os.close(current)
                current = fd
            tokens.append(token)
        _answer(sock, tokens, _sync(current))


def _answer(sock: socket.socket, tokens: list[int], err: int) -> None:
    sock.send(b"".join(ANSWER.pack(t, err) for t in tokens))


def main() -> None:
    # A lower weight than the member's loop thread (argv[2]: the nice increment): woken
    # on the loop's CPU, this waits for the loop to sleep or its slice to end instead
    # of preempting it (what native AIO's kernel worker does); another CPU that is free
    # takes it at once. (Weights count within the member's autogroup or cgroup.)
    if len(sys.argv) > 2 and int(sys.argv[2]):
        with contextlib.suppress(OSError):
            os.nice(int(sys.argv[2]))
    with contextlib.suppress(OSError, AttributeError):  # (PR_SET_NAME: how ps, top, perf call it)
        ctypes.CDLL(None).prctl(15, b"petcd-fsync", 0, 0, 0)
    # The member shuts down on these and closes our socket; a terminal's ^C or a
    # signal to the process group must not end us first.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    sock = socket.socket(fileno=int(sys.argv[1]))
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # (the member is gone)
        serve(sock)


if __name__ == "__main__":
    main()
