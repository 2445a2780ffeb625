"""Peer transport throughput between two processes on loopback.

    python bench/transport_bench.py [--sizes 100,65536] [--batches 1,64] [--seconds 2]
                                    [--loop uvloop|asyncio]

This process is member 1 and sends; a child process (member 2) receives and acknowledges every
batch it gets with one small message carrying its running count. The sender keeps at most a
window of unacknowledged messages in flight (like Raft's inflight limit), so queues never
overflow. Prints messages/s and MB/s (payload bytes, 10^6) per payload size.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from petcd.transport import PeerTransport

CLUSTER = 0xC1
SENDER, RECEIVER = 1, 2
ACK = struct.Struct(">cQQ")  # b"A", messages received, payload bytes received


def run(main: Callable[[], Coroutine[Any, Any, None]], loop_name: str) -> None:
    logging.basicConfig(level=logging.ERROR)  # the receiver quitting at the end is expected
    if loop_name == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main())
    else:
        asyncio.run(main())


async def receiver(sender_url: str) -> None:
    received = 0
    received_bytes = 0
    stop = asyncio.Event()
    transport: PeerTransport

    def on_messages(payloads: list[bytes]) -> None:
        nonlocal received, received_bytes
        for p in payloads:
            if p == b"Q":
                stop.set()
                return
            received_bytes += len(p)
        received += len(payloads)
        transport.send(SENDER, [ACK.pack(b"A", received, received_bytes)])

    transport = PeerTransport(RECEIVER, CLUSTER, ["http://127.0.0.1:0"], on_messages)
    await transport.start()
    transport.add_peer(SENDER, [sender_url])
    print(json.dumps({"url": transport.bound_urls()[0]}), flush=True)
    await stop.wait()
    await transport.stop()


async def sender(args: argparse.Namespace) -> None:
    acked = 0
    acked_event = asyncio.Event()

    def on_messages(payloads: list[bytes]) -> None:
        nonlocal acked
        for p in payloads:
            if p[:1] == b"A":
                _, count, _ = ACK.unpack(p)
                acked = max(acked, count)
        acked_event.set()

    transport = PeerTransport(SENDER, CLUSTER, ["http://127.0.0.1:0"], on_messages)
    await transport.start()
    child = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--role",
            "receiver",
            "--loop",
            args.loop,
            "--sender-url",
            transport.bound_urls()[0],
        ],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.path.join(os.path.dirname(__file__), "..", "src")},
    )
    try:
        assert child.stdout is not None
        line = await asyncio.get_running_loop().run_in_executor(None, child.stdout.readline)
        transport.add_peer(RECEIVER, [json.loads(line)["url"]])
        await asyncio.wait_for(transport.wait_active(RECEIVER), 10)
        print(f"loop={args.loop} python={sys.version.split()[0]}")
        base = 0
        for size in args.sizes:
            for batch in args.batches:
                # in flight at most: 4000 messages (queue holds 4096) and 16 MiB (holds 32)
                window = max(batch, min(4000, (16 << 20) // size))
                payloads = [os.urandom(size) for _ in range(batch)]
                for phase, seconds in (("warmup", 0.3), ("run", args.seconds)):
                    start = time.perf_counter()
                    cpu = time.process_time()
                    start_acked = acked
                    sent = base
                    deadline = start + seconds
                    while True:
                        while sent - acked + batch <= window:
                            transport.send(RECEIVER, payloads)
                            sent += batch
                        acked_event.clear()
                        await acked_event.wait()
                        if time.perf_counter() >= deadline:
                            break
                    while acked < sent:  # let the tail arrive so the next run starts clean
                        acked_event.clear()
                        await acked_event.wait()
                    elapsed = time.perf_counter() - start
                    base = sent
                    if phase == "run":
                        count = acked - start_acked
                        cpu_us = (time.process_time() - cpu) / count * 1e6
                        print(
                            f"payload {size:>6} B, {batch:>3} per send(): "
                            f"{count / elapsed:>10,.0f} msg/s {count * size / elapsed / 1e6:>8,.1f}"
                            f" MB/s  sender CPU {cpu_us:5.2f} us/msg  ({count:,} messages in "
                            f"{elapsed:.2f}s, window {window})"
                        )
        status = transport.status(RECEIVER)
        assert status is not None and status.dropped == 0, status
        transport.send(RECEIVER, [b"Q"])
        await asyncio.sleep(0.1)
    finally:
        await transport.stop()
        try:
            child.wait(timeout=5)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--role", choices=["sender", "receiver"], default="sender")
    parser.add_argument("--sender-url", default="")
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    parser.add_argument(
        "--sizes", default="100,65536", type=lambda s: [int(x) for x in s.split(",")]
    )
    parser.add_argument(
        "--batches",
        default="1,64",
        type=lambda s: [int(x) for x in s.split(",")],
        help="payloads per send() call",
    )
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    if args.role == "receiver":
        run(lambda: receiver(args.sender_url), args.loop)
    else:
        run(lambda: sender(args), args.loop)


if __name__ == "__main__":
    main()
