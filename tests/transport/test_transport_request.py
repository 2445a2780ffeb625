"""REQUEST connections: one request frame, one answer, from members and from strangers."""

from __future__ import annotations

import asyncio

import pytest
from transport_helpers import CLUSTER, FAST, LOCAL, Inbox, run, unused_port

from petcd.transport import PeerTransport, RequestFailed, Status, peer_request


def test_members_and_strangers_get_answers_other_clusters_do_not() -> None:
    async def main() -> None:
        seen: list[tuple[int, bytes]] = []

        async def answer(from_id: int, payload: bytes) -> bytes:
            seen.append((from_id, payload))
            await asyncio.sleep(0)  # handlers may await
            return b"answer to " + payload

        a = PeerTransport(1, CLUSTER, [LOCAL], Inbox(), config=FAST, on_request=answer)
        b = PeerTransport(2, CLUSTER, [LOCAL], Inbox(), config=FAST)
        await a.start()
        await b.start()
        try:
            b.add_peer(1, a.bound_urls())
            assert await b.request(1, b"q1") == b"answer to q1"
            # b is no member of a's: a member that is still joining asks like this.
            url = a.bound_urls()[0]
            dead = f"http://127.0.0.1:{unused_port()}"
            assert await peer_request([dead, url], b"q2", timeout=2) == b"answer to q2"
            big = b"x" * (3 << 20)
            assert await peer_request([url], big) == b"answer to " + big
            assert seen[:2] == [(2, b"q1"), (0, b"q2")]
            with pytest.raises(RequestFailed) as err:
                await peer_request([url], b"q3", cluster_id=CLUSTER + 1)
            assert err.value.status == Status.CLUSTER_ID_MISMATCH
            with pytest.raises(RequestFailed) as err:
                await peer_request([url], b"q4", to_id=7)
            assert err.value.status == Status.MEMBER_ID_MISMATCH
            a.remove_peer(2)
            with pytest.raises(RequestFailed) as err:
                await b.request(1, b"q5")
            assert err.value.status == Status.REMOVED_MEMBER
            assert len(seen) == 3
        finally:
            await a.stop()
            await b.stop()

    run(main())


def test_failing_handler_and_refusing_member() -> None:
    async def main() -> None:
        async def broken(from_id: int, payload: bytes) -> bytes:
            raise RuntimeError("no")

        a = PeerTransport(1, CLUSTER, [LOCAL], Inbox(), config=FAST, on_request=broken)
        b = PeerTransport(2, CLUSTER, [LOCAL], Inbox(), config=FAST)  # no on_request
        await a.start()
        await b.start()
        try:
            with pytest.raises(RequestFailed):
                await peer_request(a.bound_urls(), b"q", timeout=2)
            with pytest.raises(RequestFailed) as err:
                await peer_request(b.bound_urls(), b"q", timeout=2)
            assert err.value.status == Status.NOT_ACCEPTED
            with pytest.raises(RequestFailed):
                await peer_request([f"http://127.0.0.1:{unused_port()}"], b"q", timeout=1)
        finally:
            await a.stop()
            await b.stop()

    run(main())
