"""Snapshots streamed in chunks: integrity, bounded memory on both ends, backpressure, failures."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import io
import os
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from transport_helpers import CLUSTER, FAST, LOCAL, Inbox, PeerProcess, run, unused_port

from petcd.transport import PeerTransport, SnapshotError
from petcd.transport.wire import PROTOCOL_VERSION, REPLY, SNAP_FRAME_HEADER, Hello, Kind, SnapFrame

MiB = 1024 * 1024


def write_file(path: Path, size: int) -> str:
    """A file of pseudo-random bytes, written a MiB at a time; returns its sha256."""
    sha = hashlib.sha256()
    block = os.urandom(MiB)
    with open(path, "wb") as f:
        for i in range(size // MiB):
            chunk = block[i % 7 :] + block[: i % 7]  # no two MiB alike
            sha.update(chunk)
            f.write(chunk)
    return sha.hexdigest()


def test_large_snapshot_streams_intact_in_bounded_memory(tmp_path: Path) -> None:
    size = 50 * MiB
    source = tmp_path / "db"
    digest = write_file(source, size)
    received_dir = tmp_path / "received"
    received_dir.mkdir()

    async def main() -> None:
        a = PeerTransport(1, CLUSTER, [LOCAL], Inbox(), config=FAST)
        await a.start()
        b = PeerProcess(2, {1: a.bound_urls()[0]}, "--snapshot-dir", str(received_dir))
        try:
            a.add_peer(2, [await b.start()])
            tracemalloc.start()
            try:
                ok = await a.send_snapshot(2, b"raft snapshot metadata", str(source))
                _, sender_peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            assert ok
            report = (await b.reports.get())["snapshot"]
            assert report["from"] == 1
            assert bytes.fromhex(report["metadata"]) == b"raft snapshot metadata"
            assert report["size"] == size and report["sha256"] == digest
            # neither end ever held the snapshot whole
            assert sender_peak < 8 * MiB, sender_peak
            assert report["rss_growth_kib"] * 1024 < 24 * MiB, report
        finally:
            await b.close()
            await a.stop()

    run(main())
    with open(received_dir / "snap-1", "rb") as f:
        assert hashlib.file_digest(f, "sha256").hexdigest() == digest


async def generated(total: int, chunk: int = 256 * 1024) -> AsyncIterator[bytes]:
    block = b"s" * chunk
    for _ in range(total // chunk):
        yield block


def test_slow_receiver_applies_backpressure_and_stall_times_out() -> None:
    """The receiver reads one chunk and then stops: socket reads pause, the sender's writes stop
    making progress, and send_snapshot gives up after its timeout."""

    async def main() -> None:
        first_chunk = asyncio.Event()
        release = asyncio.Event()
        outcome: list[str] = []
        handler_failed = asyncio.Event()

        async def stubborn(from_id: int, metadata: bytes, chunks: AsyncIterator[bytes]) -> None:
            await anext(chunks)
            first_chunk.set()
            await release.wait()
            try:
                async for _ in chunks:
                    pass
            except ConnectionError as exc:
                outcome.append(str(exc))
                handler_failed.set()
                raise

        config = dataclasses.replace(FAST, snapshot_buffer=MiB)
        a = PeerTransport(1, CLUSTER, [LOCAL], Inbox(), config=FAST)
        b = PeerTransport(2, CLUSTER, [LOCAL], Inbox(), stubborn, config=config)
        await a.start()
        await b.start()
        try:
            a.add_peer(2, b.bound_urls())
            b.add_peer(1, a.bound_urls())
            sending = asyncio.create_task(
                a.send_snapshot(2, b"m", generated(256 * MiB), timeout=0.3)
            )
            await first_chunk.wait()
            assert await sending is False  # stalled, well before 256 MiB could be buffered
            release.set()
            await handler_failed.wait()  # the sender hung up: the stream reports it broken
            assert "broken" in outcome[0]
        finally:
            await a.stop()
            await b.stop()

    run(main())


def test_snapshot_failures_are_reported() -> None:
    async def main() -> None:
        received: list[bytes] = []

        async def refuse(from_id: int, metadata: bytes, chunks: AsyncIterator[bytes]) -> None:
            received.append(await anext(chunks))
            raise RuntimeError("disk full")

        a = PeerTransport(1, CLUSTER, [LOCAL], Inbox(), config=FAST)
        b = PeerTransport(2, CLUSTER, [LOCAL], Inbox(), refuse, config=FAST)
        await a.start()
        await b.start()
        try:
            b.add_peer(1, a.bound_urls())
            assert await a.send_snapshot(2, b"m", generated(MiB)) is False  # unknown member
            a.add_peer(2, b.bound_urls())
            assert await a.send_snapshot(2, b"m", generated(4 * MiB)) is False  # handler raised
            assert received and received[0] == b"s" * len(received[0])
            a.add_peer(3, [f"http://127.0.0.1:{unused_port()}"])
            assert await a.send_snapshot(3, b"m", generated(MiB)) is False  # nobody listening
        finally:
            await a.stop()
            await b.stop()

    run(main())


def test_small_snapshots_from_an_async_source(tmp_path: Path) -> None:
    async def main() -> None:
        got: list[tuple[int, bytes, bytes]] = []

        async def keep(from_id: int, metadata: bytes, chunks: AsyncIterator[bytes]) -> None:
            got.append((from_id, metadata, b"".join([c async for c in chunks])))

        async def pieces() -> AsyncIterator[bytes]:
            for i in range(50):
                yield bytes([i]) * (i * 37)  # includes an empty chunk, which is skipped

        a = PeerTransport(1, CLUSTER, [LOCAL], Inbox(), config=FAST)
        b = PeerTransport(2, CLUSTER, [LOCAL], Inbox(), keep, config=FAST)
        await a.start()
        await b.start()
        try:
            a.add_peer(2, b.bound_urls())
            b.add_peer(1, a.bound_urls())
            assert await a.send_snapshot(2, b"", pieces())
            empty = tmp_path / "empty"
            empty.write_bytes(b"")
            assert await a.send_snapshot(2, b"meta", str(empty))
            expected = b"".join(bytes([i]) * (i * 37) for i in range(50))
            assert got == [(1, b"", expected), (1, b"meta", b"")]
        finally:
            await a.stop()
            await b.stop()

    run(main())


def test_receiver_gives_up_on_a_sender_that_goes_quiet() -> None:
    async def main() -> None:
        errors: list[BaseException] = []
        failed = asyncio.Event()

        async def keep(from_id: int, metadata: bytes, chunks: AsyncIterator[bytes]) -> None:
            try:
                async for _ in chunks:
                    pass
            except ConnectionError as exc:
                errors.append(exc)
                failed.set()
                raise

        config = dataclasses.replace(FAST, snapshot_timeout=0.3)
        b = PeerTransport(2, CLUSTER, [LOCAL], Inbox(), keep, config=config)
        await b.start()
        b.add_peer(1, ["http://127.0.0.1:1"])
        try:
            host, port = b.bound_urls()[0].removeprefix("http://").rsplit(":", 1)
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(Hello(PROTOCOL_VERSION, Kind.SNAPSHOT, CLUSTER, 1, 2).encode())
            assert (await reader.readexactly(REPLY.size))[0] == 0
            writer.write(SNAP_FRAME_HEADER.pack(2, SnapFrame.META) + b"m")
            writer.write(SNAP_FRAME_HEADER.pack(1 + 1000, SnapFrame.DATA) + b"d" * 10)
            await failed.wait()
            assert isinstance(errors[0], SnapshotError) and "no snapshot data" in str(errors[0])
            assert await reader.read() == b""  # and the connection was dropped
            writer.close()
        finally:
            await b.stop()

    run(main())


class _Produced(io.RawIOBase):
    """A raw stream as a producer feeds it: `total` bytes, then EOF, or an error instead
    of EOF once `fail_after` bytes went (a backend copy that broke off)."""

    def __init__(self, total: int, fail_after: int | None = None) -> None:
        self.left = total
        self.sent = 0
        self.fail_after = fail_after

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.fail_after is not None and self.sent >= self.fail_after:
            raise OSError("backend copy failed")
        n = min(len(buffer), self.left, 100_000)  # (short reads, as from a pipe)
        buffer[:n] = b"r" * n
        self.left -= n
        self.sent += n
        return n


def test_raw_stream_source_sends_until_eof_and_a_failed_producer_fails_the_snapshot() -> None:
    async def main() -> None:
        got: list[tuple[int, str]] = []
        failed: list[BaseException] = []

        async def keep(from_id: int, metadata: bytes, chunks: AsyncIterator[bytes]) -> None:
            sha, n = hashlib.sha256(), 0
            try:
                async for c in chunks:
                    sha.update(c)
                    n += len(c)
            except SnapshotError as e:
                failed.append(e)
                raise
            got.append((n, sha.hexdigest()))

        a = PeerTransport(1, CLUSTER, [LOCAL], Inbox(), config=FAST)
        b = PeerTransport(2, CLUSTER, [LOCAL], Inbox(), keep, config=FAST)
        await a.start()
        await b.start()
        try:
            b.add_peer(1, a.bound_urls())
            a.add_peer(2, b.bound_urls())
            size = 3 * MiB + 12345
            assert await a.send_snapshot(2, b"m", _Produced(size))
            assert got == [(size, hashlib.sha256(b"r" * size).hexdigest())]
            # No END frame for a truncated copy: the receiver never takes it for whole.
            assert await a.send_snapshot(2, b"m", _Produced(size, fail_after=MiB)) is False
            async with asyncio.timeout(30):  # (the receiver sees the connection go)
                while not failed:
                    await asyncio.sleep(0.01)
            assert len(got) == 1
        finally:
            await a.stop()
            await b.stop()

    run(main())
