"""Shared pieces of the transport tests: an event loop runner, recorders, member processes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import struct
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import uvloop

from petcd.testing.processes import wait_stopped
from petcd.transport import PeerTransport, Status, TransportConfig
from petcd.transport.wire import HELLO

T = TypeVar("T")

HERE = Path(__file__).resolve().parent
SRC = HERE.parent.parent / "src"
LOCAL = "http://127.0.0.1:0"
CLUSTER = 0x1C1
# Quick redials for tests; timeouts that should not fire on a busy machine unless meant to.
FAST = TransportConfig(
    backoff_min=0.02, backoff_max=0.2, dial_timeout=1.0, write_timeout=2.0, hello_timeout=1.0
)
MESSAGE = struct.Struct(">QQ")  # origin member, sequence number
HELLO_SIZE = HELLO.size


def run(coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
    """Run a test coroutine on uvloop (what petcd serves with), bounded in time."""

    async def bounded() -> T:
        async with asyncio.timeout(timeout):
            return await coro

    # PETCD_TEST_LOOP=asyncio runs the same tests on the standard library's loop
    factory = None if os.environ.get("PETCD_TEST_LOOP") == "asyncio" else uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(bounded())


def payload(origin: int, seq: int, size: int = 16) -> bytes:
    return MESSAGE.pack(origin, seq) + b"p" * (size - MESSAGE.size)


def seq_of(data: bytes) -> int:
    return MESSAGE.unpack_from(data)[1]


def unused_port() -> int:
    """A port nothing listens on (bound then released; tests use it to dial a dead peer)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def eventually(predicate: Callable[[], bool], interval: float = 0.01) -> None:
    """Poll a condition that no callback announces (bounded by run()'s timeout)."""
    while not predicate():
        await asyncio.sleep(interval)


class Waitable:
    """Something tests wait on until a condition holds, woken by every change."""

    def __init__(self) -> None:
        self._changed = asyncio.Event()

    def changed(self) -> None:
        self._changed.set()

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            self._changed.clear()
            await self._changed.wait()


class Inbox(Waitable):
    """An on_messages callback that records every batch."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[bytes]] = []
        self.payloads: list[bytes] = []

    def __call__(self, payloads: list[bytes]) -> None:
        self.batches.append(payloads)
        self.payloads.extend(payloads)
        self.changed()

    async def wait_count(self, count: int) -> None:
        await self.wait_for(lambda: len(self.payloads) >= count)


class Watch(Waitable):
    """on_peer_status and on_rejected callbacks that record what happened."""

    def __init__(self) -> None:
        super().__init__()
        self.statuses: list[tuple[int, bool]] = []
        self.rejections: list[tuple[int, Status, str]] = []

    def on_status(self, peer_id: int, active: bool) -> None:
        self.statuses.append((peer_id, active))
        self.changed()

    def on_rejected(self, peer_id: int, status: Status, reason: str) -> None:
        self.rejections.append((peer_id, status, reason))
        self.changed()

    async def wait_status(self, peer_id: int, active: bool, after: int = 0) -> None:
        await self.wait_for(lambda: (peer_id, active) in self.statuses[after:])

    async def wait_rejected(self, peer_id: int, status: Status) -> str:
        def seen() -> bool:
            return any(p == peer_id and s == status for p, s, _ in self.rejections)

        await self.wait_for(seen)
        return next(r for p, s, r in self.rejections if p == peer_id and s == status)


async def probe(sender: PeerTransport, to: int, inbox: Inbox, first_seq: int) -> int:
    """Send numbered messages to an echoing member until one comes back, resending after a
    silence the way Raft would (a full queue may have dropped the first ones). Returns the
    sequence number that came back first."""
    for attempt in range(20):
        sender.send(to, [payload(sender.local_id, first_seq + attempt)])
        try:
            async with asyncio.timeout(0.5):
                await inbox.wait_for(lambda: any(seq_of(p) >= first_seq for p in inbox.payloads))
            return min(seq_of(p) for p in inbox.payloads if seq_of(p) >= first_seq)
        except TimeoutError:
            continue
    raise AssertionError(f"no echo from member {to}")


class PeerProcess:
    """A member running tests/transport/peer_proc.py in its own process."""

    def __init__(
        self, member_id: int, peers: dict[int, str], *args: str, cluster_id: int = CLUSTER
    ) -> None:
        self.member_id = member_id
        self.cluster_id = cluster_id
        self.peers = peers
        self.args = args
        self.url = LOCAL
        self.proc: asyncio.subprocess.Process | None = None
        self.reports: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None
        self._stopped = False

    async def start(self) -> str:
        """Start (or restart on the same URL) and return the bound peer URL."""
        argv = [
            sys.executable,
            str(HERE / "peer_proc.py"),
            "--id",
            str(self.member_id),
            "--cluster",
            str(self.cluster_id),
            "--listen",
            self.url,
            *self.args,
        ]
        for peer_id, url in self.peers.items():
            argv += ["--peer", f"{peer_id}={url}"]
        env = {**os.environ, "PYTHONPATH": str(SRC)}
        self.proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env
        )
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 15)
        if not line:
            raise RuntimeError(f"peer process {self.member_id} died on start")
        self.url = json.loads(line)["ready"]
        self._reader = asyncio.create_task(self._read_reports(self.proc))
        return self.url

    async def _read_reports(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            await self.reports.put(json.loads(line))

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        wait_stopped(self.proc.pid)
        self._stopped = True

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)
        self._stopped = False

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        await self.proc.wait()
        if self._reader is not None:
            await self._reader
        self._stopped = False

    async def close(self) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        if self._stopped:
            proc.kill()
        else:
            assert proc.stdin is not None
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        if self._reader is not None:
            await self._reader
