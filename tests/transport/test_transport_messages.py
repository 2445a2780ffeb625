"""Message delivery between real sockets and real processes: order, batching, isolation of a
dead, killed or stalled peer, bounded queues, reconnection, removal."""

from __future__ import annotations

import asyncio
import dataclasses
import socket

from transport_helpers import (
    CLUSTER,
    FAST,
    HELLO_SIZE,
    LOCAL,
    Inbox,
    PeerProcess,
    Waitable,
    Watch,
    payload,
    probe,
    run,
    seq_of,
    unused_port,
)

from petcd.transport import PeerTransport, Status
from petcd.transport.wire import Reply

# small queues, and a short write_timeout for the tests that stall a peer on purpose
SMALL_QUEUE = dataclasses.replace(
    FAST, max_queue_messages=256, max_queue_bytes=1 << 20, write_timeout=0.5
)


def test_messages_arrive_in_order_and_batched() -> None:
    """20,000 messages to a member process and echoed back: same order both ways, in batches."""

    async def main() -> None:
        inbox = Inbox()
        a = PeerTransport(1, CLUSTER, [LOCAL], inbox, config=FAST)
        await a.start()
        b = PeerProcess(2, {1: a.bound_urls()[0]})
        try:
            a.add_peer(2, [await b.start()])
            await a.wait_active(2)
            total = 0
            for _ in range(20):
                a.send(2, [payload(1, seq) for seq in range(total, total + 500)])
                a.send(2, [payload(1, seq) for seq in range(total + 500, total + 1000)])
                total += 1000
                await inbox.wait_count(total)
            assert [seq_of(p) for p in inbox.payloads] == list(range(total))
            # two send() calls per loop iteration went out as one write, and one read hands
            # many frames to on_messages at once: far fewer calls than messages
            assert len(inbox.batches) <= total // 100
            assert a.drain_unreachable() == set()
            status = a.status(2)
            assert status is not None and status.sent == total and status.dropped == 0
        finally:
            await b.close()
            await a.stop()

    run(main())


def test_dead_and_hung_peers_do_not_block_others() -> None:
    """Peer 2 is not listening (dials refused); peer 4 listens but never accepts (dials hang
    until dial_timeout). Messages to peer 3 keep flowing meanwhile; queues stay bounded."""

    async def main() -> None:
        inbox_c = Inbox()
        a = PeerTransport(1, CLUSTER, [LOCAL], Inbox(), config=SMALL_QUEUE)
        c = PeerTransport(3, CLUSTER, [LOCAL], inbox_c, config=FAST)
        hung = socket.socket()
        hung.bind(("127.0.0.1", 0))
        hung.listen(1)
        await a.start()
        await c.start()
        try:
            a.add_peer(2, [f"http://127.0.0.1:{unused_port()}"])
            a.add_peer(4, [f"http://127.0.0.1:{hung.getsockname()[1]}"])
            a.add_peer(3, c.bound_urls())
            c.add_peer(1, a.bound_urls())
            await a.wait_active(3)

            def hung_dial_timed_out() -> bool:
                status = a.status(4)
                return status is not None and "timed out" in (status.last_error or "")

            burst = 0
            while burst < 30 or not hung_dial_timed_out():
                messages = [payload(1, burst * 100 + i) for i in range(100)]
                for peer in (2, 3, 4):
                    a.send(peer, messages)
                for peer in (2, 4):
                    status = a.status(peer)
                    assert status is not None
                    assert status.queued <= SMALL_QUEUE.max_queue_messages
                burst += 1
                await inbox_c.wait_count(burst * 100)
                await asyncio.sleep(0.01)  # pace the offered load (not a sync point)
            assert [seq_of(p) for p in inbox_c.payloads] == list(range(burst * 100))
            for peer in (2, 4):
                status = a.status(peer)
                assert status is not None and not status.active and status.dropped > 0
                assert a.active_since(peer) is None
            status = a.status(2)
            assert status is not None and "refused" in (status.last_error or "")
            assert a.active_since(3) is not None
            assert a.drain_unreachable() == {2, 4}
        finally:
            await a.stop()
            await c.stop()
            hung.close()

    run(main())


def test_killed_peer_does_not_block_others_and_reconnects_after_restart() -> None:
    async def main() -> None:
        inbox_a, inbox_c, watch = Inbox(), Inbox(), Watch()
        a = PeerTransport(
            1, CLUSTER, [LOCAL], inbox_a, config=SMALL_QUEUE, on_peer_status=watch.on_status
        )
        c = PeerTransport(3, CLUSTER, [LOCAL], inbox_c, config=FAST)
        await a.start()
        await c.start()
        b = PeerProcess(2, {1: a.bound_urls()[0]})
        try:
            a.add_peer(2, [await b.start()])
            a.add_peer(3, c.bound_urls())
            c.add_peer(1, a.bound_urls())
            await a.wait_active(2)
            await a.wait_active(3)
            a.send(2, [payload(1, i) for i in range(100)])
            await inbox_a.wait_count(100)

            await b.kill()  # SIGKILL: no goodbye on the wire beyond the kernel's reset
            await watch.wait_status(2, False)
            assert 2 in a.drain_unreachable()
            for burst in range(20):
                messages = [payload(1, 1000 + burst * 100 + i) for i in range(100)]
                a.send(2, messages)
                a.send(3, messages)
                status = a.status(2)
                assert status is not None and status.queued <= SMALL_QUEUE.max_queue_messages
                await inbox_c.wait_count((burst + 1) * 100)
                await asyncio.sleep(0.01)  # let some redials fail in between (not a sync point)
            assert [seq_of(p) for p in inbox_c.payloads] == list(range(1000, 3000))

            await b.start()  # same port
            await a.wait_active(2)
            first = await probe(a, 2, inbox_a, 10_000)
            a.send(2, [payload(1, 20_000 + i) for i in range(100)])
            await inbox_a.wait_for(lambda: any(seq_of(p) == 20_099 for p in inbox_a.payloads))
            after = [seq_of(p) for p in inbox_a.payloads if seq_of(p) >= first]
            assert after[-100:] == list(range(20_000, 20_100))
        finally:
            await b.close()
            await a.stop()
            await c.stop()

    run(main())


def test_stopped_process_does_not_block_others_and_recovers() -> None:
    """A peer under SIGSTOP: its queue stays bounded, others keep flowing, the connection is cut
    after write_timeout and comes back after SIGCONT."""

    async def main() -> None:
        inbox_a, inbox_c, watch = Inbox(), Inbox(), Watch()
        a = PeerTransport(
            1, CLUSTER, [LOCAL], inbox_a, config=SMALL_QUEUE, on_peer_status=watch.on_status
        )
        c = PeerTransport(3, CLUSTER, [LOCAL], inbox_c, config=FAST)
        await a.start()
        await c.start()
        b = PeerProcess(2, {1: a.bound_urls()[0]})
        try:
            a.add_peer(2, [await b.start()])
            a.add_peer(3, c.bound_urls())
            c.add_peer(1, a.bound_urls())
            await a.wait_active(2)
            await a.wait_active(3)

            b.pause()
            big = [payload(1, 0, 64 * 1024)] * 16  # 1 MiB per burst
            burst = 0
            while not any(p == 2 and not active for p, active in watch.statuses):
                a.send(2, big)
                a.send(3, [payload(1, burst)])
                status = a.status(2)
                assert status is not None
                assert status.queued_bytes <= SMALL_QUEUE.max_queue_bytes
                burst += 1
                await inbox_c.wait_count(burst)
                await asyncio.sleep(0.005)  # pace the offered load (not a sync point)
            assert [seq_of(p) for p in inbox_c.payloads] == list(range(burst))
            status = a.status(2)
            assert status is not None and status.dropped > 0
            assert 2 in a.drain_unreachable()

            b.resume()
            await a.wait_active(2)
            await probe(a, 2, inbox_a, 50_000)
        finally:
            await b.close()
            await a.stop()
            await c.stop()

    run(main(), timeout=60)


def test_peer_that_stops_reading_is_cut_off_and_redialled() -> None:
    async def main() -> None:
        connections: list[asyncio.StreamWriter] = []
        arrived = Waitable()

        async def never_reads(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readexactly(HELLO_SIZE)
            writer.write(Reply(Status.OK, CLUSTER, 2).encode())
            connections.append(writer)
            arrived.changed()

        server = await asyncio.start_server(never_reads, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        watch = Watch()
        a = PeerTransport(
            1, CLUSTER, [LOCAL], Inbox(), config=SMALL_QUEUE, on_peer_status=watch.on_status
        )
        await a.start()
        try:
            a.add_peer(2, [f"http://127.0.0.1:{port}"])
            await a.wait_active(2)
            big = [payload(1, 0, 64 * 1024)] * 16
            while not watch.statuses or watch.statuses[-1] != (2, False):
                a.send(2, big)
                status = a.status(2)
                assert status is not None
                assert status.queued_bytes <= SMALL_QUEUE.max_queue_bytes
                await asyncio.sleep(0.005)
            status = a.status(2)
            assert status is not None and status.last_error is not None
            await arrived.wait_for(lambda: len(connections) == 2)  # redialled
        finally:
            await a.stop()
            for w in connections:
                w.close()
            server.close()

    run(main())


def test_removed_member_is_disconnected_and_refused() -> None:
    async def main() -> None:
        inbox_a, inbox_b, watch_b = Inbox(), Inbox(), Watch()
        a = PeerTransport(1, CLUSTER, [LOCAL], inbox_a, config=FAST)
        b = PeerTransport(
            2,
            CLUSTER,
            [LOCAL],
            inbox_b,
            config=FAST,
            on_peer_status=watch_b.on_status,
            on_rejected=watch_b.on_rejected,
        )
        await a.start()
        await b.start()
        try:
            a.add_peer(2, b.bound_urls())
            b.add_peer(1, a.bound_urls())
            await a.wait_active(2)
            await b.wait_active(1)
            b.send(1, [payload(2, 1)])
            await inbox_a.wait_count(1)

            a.remove_peer(2)
            assert a.status(2) is None and 2 not in a.statuses()
            a.send(2, [payload(1, 1)])  # quietly nowhere
            assert 2 not in a.drain_unreachable()
            reason = await watch_b.wait_rejected(1, Status.REMOVED_MEMBER)
            assert "removed" in reason
            b.send(1, [payload(2, 2)])
            await watch_b.wait_for(lambda: len(watch_b.rejections) >= 2)  # refused again
            assert len(inbox_a.payloads) == 1
            assert not inbox_b.payloads
            try:
                a.add_peer(2, b.bound_urls())
            except ValueError:
                pass
            else:
                raise AssertionError("a removed member was added back")
        finally:
            await a.stop()
            await b.stop()

    run(main())


def test_large_batches_arrive_intact() -> None:
    """Batches of mid-sized and large payloads (written without joining them) arrive intact."""

    async def main() -> None:
        inbox = Inbox()
        a = PeerTransport(1, CLUSTER, [LOCAL], Inbox(), config=FAST)
        b = PeerTransport(2, CLUSTER, [LOCAL], inbox, config=FAST)
        await a.start()
        await b.start()
        try:
            a.add_peer(2, b.bound_urls())
            b.add_peer(1, a.bound_urls())
            await a.wait_active(2)
            sent = [payload(1, i, 5000 + i % 7) for i in range(3000)]
            sent += [payload(1, 3000 + i, (1 << 20) + i) for i in range(10)]
            sent += [payload(1, 4000 + i) for i in range(100)]
            a.send(2, sent[:3000])
            a.send(2, sent[3000:])
            await inbox.wait_count(len(sent))
            assert inbox.payloads == sent
        finally:
            await a.stop()
            await b.stop()

    run(main())


def test_urls_are_tried_in_turn_and_updated() -> None:
    async def main() -> None:
        inbox, watch = Inbox(), Watch()
        a = PeerTransport(1, CLUSTER, [LOCAL], Inbox(), config=FAST, on_peer_status=watch.on_status)
        b = PeerTransport(2, CLUSTER, [LOCAL, LOCAL], inbox, config=FAST)
        await a.start()
        await b.start()
        try:
            first, second = b.bound_urls()
            b.add_peer(1, a.bound_urls())
            dead = f"http://127.0.0.1:{unused_port()}"
            a.add_peer(2, [dead, first])  # the dead URL fails, the next one is tried
            await a.wait_active(2)
            status = a.status(2)
            assert status is not None and status.url == first
            a.update_peer(2, [second])  # the live connection's URL is gone: redial
            await watch.wait_status(2, False)
            await watch.wait_status(2, True, after=watch.statuses.index((2, False)))
            status = a.status(2)
            assert status is not None and status.url == second and status.urls == (second,)
            a.send(2, [payload(1, 7)])
            await inbox.wait_count(1)
        finally:
            await a.stop()
            await b.stop()

    run(main())
