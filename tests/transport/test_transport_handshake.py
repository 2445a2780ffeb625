"""Handshake verdicts and the receiving side of the wire format, driven with real sockets."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
import struct
from collections.abc import AsyncIterator

import pytest
from transport_helpers import CLUSTER, FAST, LOCAL, Inbox, PeerProcess, Watch, run

from petcd.transport import PeerTransport, Status
from petcd.transport.wire import PROTOCOL_VERSION, REPLY, Hello, Kind

FRAME = struct.Struct(">I")


def frames(payloads: list[bytes]) -> bytes:
    return b"".join(FRAME.pack(len(p)) + p for p in payloads)


async def raw_dial(
    url: str, hello: Hello | bytes
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, int, str]:
    """Dial like a peer would; returns the reply's status and reason."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(hello.encode() if isinstance(hello, Hello) else hello)
    status, _, rlen, _, _ = REPLY.unpack(await reader.readexactly(REPLY.size))
    reason = (await reader.readexactly(rlen)).decode()
    return reader, writer, status, reason


def test_cluster_id_mismatch_is_refused_both_ways(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        inbox_a, inbox_b, watch_a, watch_b = Inbox(), Inbox(), Watch(), Watch()
        a = PeerTransport(1, 0xAAAA, [LOCAL], inbox_a, config=FAST, on_rejected=watch_a.on_rejected)
        b = PeerTransport(2, 0xBBBB, [LOCAL], inbox_b, config=FAST, on_rejected=watch_b.on_rejected)
        await a.start()
        await b.start()
        try:
            a.add_peer(2, b.bound_urls())
            b.add_peer(1, a.bound_urls())
            a.send(2, [b"from a"])
            b.send(1, [b"from b"])
            reason_a = await watch_a.wait_rejected(2, Status.CLUSTER_ID_MISMATCH)
            reason_b = await watch_b.wait_rejected(1, Status.CLUSTER_ID_MISMATCH)
            assert reason_a == "cluster ID mismatch (got aaaa want bbbb)"
            assert reason_b == "cluster ID mismatch (got bbbb want aaaa)"
            for t, peer in ((a, 2), (b, 1)):
                status = t.status(peer)
                assert status is not None and not status.active
                assert "cluster ID mismatch" in (status.last_error or "")
            assert await a.send_snapshot(2, b"meta", _chunks(b"x")) is False
            assert not inbox_a.payloads and not inbox_b.payloads
            assert a.drain_unreachable() == {2} and b.drain_unreachable() == {1}
        finally:
            await a.stop()
            await b.stop()

    with caplog.at_level(logging.WARNING, logger="petcd.transport"):
        run(main())
    assert "rejected messages connection from 1: cluster ID mismatch" in caplog.text
    assert "rejected messages connection from 2: cluster ID mismatch" in caplog.text


def test_member_process_of_another_cluster_is_refused() -> None:
    async def main() -> None:
        inbox, watch = Inbox(), Watch()
        a = PeerTransport(1, CLUSTER, [LOCAL], inbox, config=FAST, on_rejected=watch.on_rejected)
        await a.start()
        b = PeerProcess(2, {1: a.bound_urls()[0]}, cluster_id=CLUSTER + 1)
        try:
            a.add_peer(2, [await b.start()])
            a.send(2, [b"hello"])
            await watch.wait_rejected(2, Status.CLUSTER_ID_MISMATCH)
            assert not inbox.payloads
        finally:
            await b.close()
            await a.stop()

    run(main())


def test_wrong_member_and_unknown_sender_are_refused() -> None:
    async def main() -> None:
        watch = Watch()
        a = PeerTransport(1, CLUSTER, [LOCAL], Inbox(), config=FAST, on_rejected=watch.on_rejected)
        b = PeerTransport(2, CLUSTER, [LOCAL], Inbox(), config=FAST)
        c = PeerTransport(3, CLUSTER, [LOCAL], Inbox(), config=FAST)
        for t in (a, b, c):
            await t.start()
        try:
            a.add_peer(2, c.bound_urls())  # a believes member 2 lives where member 3 does
            reason = await watch.wait_rejected(2, Status.MEMBER_ID_MISMATCH)
            assert reason == "member ID mismatch (got 2 want 3)"
            a.update_peer(2, b.bound_urls())  # right address, but member 2 does not know 1
            reason = await watch.wait_rejected(2, Status.UNKNOWN_SENDER)
            assert reason == "sender 1 not found"
            b.add_peer(1, a.bound_urls())
            await a.wait_active(2)
        finally:
            for t in (a, b, c):
                await t.stop()

    run(main())


def test_handshake_checks_version_sender_and_kind() -> None:
    async def main() -> None:
        a = PeerTransport(1, CLUSTER, [LOCAL], Inbox(), config=FAST)  # no on_snapshot
        await a.start()
        a.add_peer(2, ["http://127.0.0.1:1"])
        url = a.bound_urls()[0]
        try:
            cases = [
                (
                    Hello(PROTOCOL_VERSION + 1, Kind.MESSAGES, CLUSTER, 2, 1),
                    Status.INCOMPATIBLE_VERSION,
                ),
                (Hello(PROTOCOL_VERSION, Kind.MESSAGES, CLUSTER, 9, 1), Status.UNKNOWN_SENDER),
                (Hello(PROTOCOL_VERSION, Kind.SNAPSHOT, CLUSTER, 2, 1), Status.NOT_ACCEPTED),
                (Hello(PROTOCOL_VERSION, 77, CLUSTER, 2, 1), Status.NOT_ACCEPTED),
            ]
            for hello, expected in cases:
                reader, writer, status, reason = await raw_dial(url, hello)
                assert status == expected, reason
                assert await reader.read() == b""  # and the receiver hung up
                writer.close()
            a.remove_peer(2)
            reader, writer, status, _ = await raw_dial(
                url, Hello(PROTOCOL_VERSION, Kind.MESSAGES, CLUSTER, 2, 1)
            )
            assert status == Status.REMOVED_MEMBER
            writer.close()
        finally:
            await a.stop()

    run(main())


def test_receiver_reassembles_frames_split_anywhere() -> None:
    async def main() -> None:
        inbox = Inbox()
        a = PeerTransport(1, CLUSTER, [LOCAL], inbox, config=FAST)
        await a.start()
        a.add_peer(2, ["http://127.0.0.1:1"])
        try:
            _, writer, status, _ = await raw_dial(
                a.bound_urls()[0], Hello(PROTOCOL_VERSION, Kind.MESSAGES, CLUSTER, 2, 1)
            )
            assert status == Status.OK
            sizes = [0, 1, 3, 100, 5000, 300_000, 7, 70_000, 600_000, 2]
            payloads = [bytes([i]) * n for i, n in enumerate(sizes)]
            wire = frames(payloads)
            # every byte on its own at first, then ever larger pieces
            pos, step = 0, 1
            while pos < len(wire):
                writer.write(wire[pos : pos + step])
                await writer.drain()
                await asyncio.sleep(0)
                pos += step
                step = step + 1 if step < 64 else step * 2
            await inbox.wait_count(len(payloads))
            assert inbox.payloads == payloads
            writer.close()
        finally:
            await a.stop()

    run(main())


def test_frames_of_one_read_arrive_in_one_call() -> None:
    async def main() -> None:
        inbox = Inbox()
        a = PeerTransport(1, CLUSTER, [LOCAL], inbox, config=FAST)
        await a.start()
        a.add_peer(2, ["http://127.0.0.1:1"])
        try:
            host, port = a.bound_urls()[0].removeprefix("http://").rsplit(":", 1)
            payloads = [b"m%d" % i for i in range(500)]
            # Blocking calls, so the loop cannot run: the kernel completes the connection and
            # buffers the hello and all 500 frames before the receiver reads anything.
            with socket.create_connection((host, int(port))) as sock:
                sock.sendall(
                    Hello(PROTOCOL_VERSION, Kind.MESSAGES, CLUSTER, 2, 1).encode()
                    + frames(payloads)
                )
                await inbox.wait_count(500)
                assert inbox.batches == [payloads]
                assert sock.recv(REPLY.size)[0] == Status.OK
        finally:
            await a.stop()

    run(main())


def test_bad_peers_are_disconnected() -> None:
    async def main() -> None:
        config = dataclasses.replace(FAST, max_frame=1000, hello_timeout=0.2)
        inbox = Inbox()
        a = PeerTransport(1, CLUSTER, [LOCAL], inbox, config=config)
        await a.start()
        a.add_peer(2, ["http://127.0.0.1:1"])
        url = a.bound_urls()[0]
        host, port = url.removeprefix("http://").rsplit(":", 1)
        try:
            # not a petcd peer at all
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + b" " * 32)
            assert await reader.read() == b""
            writer.close()
            # silent: cut after hello_timeout
            reader, writer = await asyncio.open_connection(host, int(port))
            assert await reader.read() == b""
            writer.close()
            # a frame above max_frame
            reader, writer, status, _ = await raw_dial(
                url, Hello(PROTOCOL_VERSION, Kind.MESSAGES, CLUSTER, 2, 1)
            )
            assert status == Status.OK
            writer.write(frames([b"ok"]) + FRAME.pack(1001) + b"x" * 10)
            assert await reader.read() == b""
            assert inbox.payloads == [b"ok"]
            writer.close()
        finally:
            await a.stop()

    run(main())


async def _chunks(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk
