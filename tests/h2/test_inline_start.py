"""A unary handler marked `starts_inline` runs in the read callback that completed its
request (Call.start): answered there when it never waits, else continued without an
asyncio task (h2.resumed.Resumed), and still cancelled by a reset or its deadline, with
every status as a task-run handler gives it. Driven in-process (H2Protocol on a fake
transport, a real event loop); tests/h2/test_grpc_clients.py runs the same handlers
over sockets on both servers."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable, Generator
from typing import Any

import grpc
import hpack
from h2_service import in_memory_connection

from petcd.api.grpc_call import starts_inline
from petcd.api.h2 import frames as F
from petcd.api.h2.call import Call
from petcd.api.h2.resumed import Resumed


def _request(enc: hpack.Encoder, sid: int, body: bytes = b"hi",
             timeout: str | None = None) -> bytes:
    headers = [(":method", "POST"), (":scheme", "http"), (":path", "/t.S/M"),
               (":authority", "t"), ("content-type", "application/grpc")]
    if timeout is not None:
        headers.append(("grpc-timeout", timeout))
    return (F.frame(F.HEADERS, F.END_HEADERS, sid, enc.encode(headers))
            + F.frame(F.DATA, F.END_STREAM, sid,
                      b"\0" + len(body).to_bytes(4, "big") + body))


class _Reader:
    """The client's view of what the server wrote: per stream, the messages and the
    grpc-status/grpc-message it ended with."""

    def __init__(self) -> None:
        self.dec = hpack.Decoder()
        self.pos = 0
        self.messages: dict[int, list[bytes]] = {}
        self.status: dict[int, tuple[int, str]] = {}

    def read(self, out: bytearray) -> None:
        while self.pos + 9 <= len(out):
            n = int.from_bytes(out[self.pos:self.pos + 3], "big")
            ftype, sid = out[self.pos + 3], int.from_bytes(
                out[self.pos + 5:self.pos + 9], "big") & 0x7FFFFFFF
            payload = bytes(out[self.pos + 9:self.pos + 9 + n])
            self.pos += 9 + n
            if ftype == F.DATA and payload:
                self.messages.setdefault(sid, []).append(payload[5:])
            elif ftype == F.HEADERS:
                headers = dict(self.dec.decode(payload))
                if "grpc-status" in headers:
                    self.status[sid] = (int(headers["grpc-status"]),
                                        headers.get("grpc-message", ""))


def _serve(fn: Callable[..., Any]) -> tuple[Any, Any, hpack.Encoder, _Reader]:
    proto, transport = in_memory_connection(
        {"M": grpc.unary_unary_rpc_method_handler(starts_inline(fn))})
    return proto, transport, hpack.Encoder(), _Reader()


def _no_new_tasks(before: set[asyncio.Task[Any]]) -> bool:
    return asyncio.all_tasks() == before


def test_a_call_that_never_waits_is_answered_inside_the_read() -> None:
    async def main() -> None:
        async def handler(raw: bytes, context: Any) -> bytes:
            return raw.upper()

        proto, transport, enc, reader = _serve(handler)
        tasks = asyncio.all_tasks()
        proto.data_received(_request(enc, 1, b"abc"))
        reader.read(transport.out)  # (no loop iteration in between)
        assert reader.messages[1] == [b"ABC"]
        assert reader.status[1] == (0, "")
        assert _no_new_tasks(tasks)
        proto.connection_lost(None)

    asyncio.run(main())


def test_a_call_that_waits_goes_on_without_a_task() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[bytes]] = []

        async def handler(raw: bytes, context: Any) -> bytes:
            fut: asyncio.Future[bytes] = loop.create_future()
            futures.append(fut)
            first = await fut
            await asyncio.sleep(0)  # (a bare yield: the next iteration)
            second = await asyncio.sleep(0.001, b"+")
            return first + second

        proto, transport, enc, reader = _serve(handler)
        tasks = asyncio.all_tasks()
        proto.data_received(_request(enc, 1) + _request(enc, 3))
        assert len(futures) == 2 and _no_new_tasks(tasks)
        futures[1].set_result(b"three")
        futures[0].set_result(b"one")
        for _ in range(1000):
            reader.read(transport.out)
            if len(reader.status) == 2:
                break
            await asyncio.sleep(0.001)
        assert reader.messages == {1: [b"one+"], 3: [b"three+"]}
        assert reader.status == {1: (0, ""), 3: (0, "")}
        assert _no_new_tasks(tasks)
        proto.connection_lost(None)

    asyncio.run(main())


def test_a_call_that_waited_is_freed_by_reference_counting() -> None:
    """Once answered (or aborted), a call that went on as a Resumed leaves no reference
    cycle behind: with the collector off, no Call or Resumed object is left alive.
    (A cycle per call had the collector run every few thousand puts, ~6 ms each.)"""
    async def main() -> None:
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[bytes]] = []

        async def handler(raw: bytes, context: Any) -> bytes:
            fut: asyncio.Future[bytes] = loop.create_future()
            futures.append(fut)
            got = await fut
            if raw == b"abort":
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: no")
            return got

        proto, transport, enc, reader = _serve(handler)
        proto.data_received(_request(enc, 1) + _request(enc, 3, b"abort"))
        assert len(futures) == 2
        for fut in futures:
            fut.set_result(b"done")
        futures.clear()
        for _ in range(1000):
            reader.read(transport.out)
            if len(reader.status) == 2:
                break
            await asyncio.sleep(0.001)
        assert reader.status == {1: (0, ""), 3: (9, "etcdserver: no")}
        await asyncio.sleep(0)
        left = [o for o in gc.get_objects() if isinstance(o, (Call, Resumed))]
        assert left == []
        proto.connection_lost(None)

    gc.collect()
    gc.disable()
    try:
        asyncio.run(main())
    finally:
        gc.enable()


def test_errors_end_the_call_with_their_codes() -> None:
    """Before its first wait or after: an abort and an exception as for a task-run
    handler; a CancelledError it lets out (not a cancel of the call) is answered
    CANCELLED, where a task-run one would leave the call open to its deadline."""
    async def main() -> None:
        loop = asyncio.get_running_loop()
        gate: asyncio.Future[None] = loop.create_future()

        async def handler(raw: bytes, context: Any) -> bytes:
            what, _, when = raw.decode().partition("@")
            if when == "later":
                await gate
            if what == "abort":
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: no")
            if what == "raise":
                raise ValueError("boom")
            if what == "cancelled":  # (something it awaited was cancelled by others)
                raise asyncio.CancelledError()
            return b"ok"

        proto, transport, enc, reader = _serve(handler)
        sid = 1
        sids = {}
        for what in ("abort", "raise", "cancelled"):
            for when in ("now", "later"):
                sids[what, when] = sid
                proto.data_received(_request(enc, sid, f"{what}@{when}".encode()))
                sid += 2
        gate.set_result(None)
        for _ in range(100):
            reader.read(transport.out)
            if len(reader.status) == len(sids):
                break
            await asyncio.sleep(0)
        for when in ("now", "later"):
            assert reader.status[sids["abort", when]] == (9, "etcdserver: no")
            code, message = reader.status[sids["raise", when]]
            assert code == 2 and "boom" in message  # UNKNOWN, as for a task-run handler
            assert reader.status[sids["cancelled", when]] == (1, "")
        proto.connection_lost(None)

    asyncio.run(main())


def test_a_reset_or_a_deadline_cancels_a_waiting_handler() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        seen: list[str] = []
        waited: dict[str, asyncio.Future[None]] = {}

        async def handler(raw: bytes, context: Any) -> bytes:
            tag = raw.decode()
            try:
                if tag.startswith("spin"):  # bare yields only: cancelled at a step
                    while True:
                        await asyncio.sleep(0)
                fut = waited[tag] = loop.create_future()
                await fut
            except asyncio.CancelledError:
                seen.append(tag)
                raise
            return b"never"

        proto, transport, enc, reader = _serve(handler)
        proto.data_received(_request(enc, 1, b"reset") + _request(enc, 3, b"deadline",
                                                                    timeout="20m")
                            + _request(enc, 5, b"spin"))
        await asyncio.sleep(0)
        proto.data_received(F.rst_stream(1, F.CANCEL) + F.rst_stream(5, F.CANCEL))
        for _ in range(1000):
            if len(seen) == 3:
                break
            await asyncio.sleep(0.002)
        assert sorted(seen) == ["deadline", "reset", "spin"]
        assert waited["reset"].cancelled() and waited["deadline"].cancelled()
        reader.read(transport.out)
        assert reader.status == {3: (4, "Deadline Exceeded")}  # (1 and 5: reset)
        proto.connection_lost(None)

    asyncio.run(main())


class _Odd:
    def __await__(self) -> Generator[Any, None, None]:
        yield 42  # not a future: asyncio's tasks refuse it too


def test_a_handler_yielding_what_is_not_a_future_fails_its_call() -> None:
    async def main() -> None:
        async def handler(raw: bytes, context: Any) -> bytes:
            await _Odd()
            return b"no"

        proto, transport, enc, reader = _serve(handler)
        proto.data_received(_request(enc, 1))
        for _ in range(10):
            await asyncio.sleep(0)
        reader.read(transport.out)
        code, message = reader.status[1]
        assert code == 2 and "RuntimeError" in message
        proto.connection_lost(None)

    asyncio.run(main())


def test_calls_start_once_the_whole_read_is_parsed() -> None:
    """The requests of one read are all parsed before the first handler runs, and one
    reset in that same read never runs (as with tasks; Rapid Reset's budget counts it)."""
    async def main() -> None:
        order: list[str] = []

        async def handler(raw: bytes, context: Any) -> bytes:
            order.append(raw.decode())
            return raw

        proto, transport, enc, reader = _serve(handler)
        resets = proto.h2._resets._tokens
        proto.data_received(_request(enc, 1, b"a") + _request(enc, 3, b"b")
                            + F.rst_stream(3, F.CANCEL) + _request(enc, 5, b"c"))
        assert order == ["a", "c"]
        assert proto.h2._resets._tokens < resets  # (the reset was spent)
        reader.read(transport.out)
        assert reader.messages == {1: [b"a"], 5: [b"c"]}
        proto.connection_lost(None)

    asyncio.run(main())
