"""A member process for the transport tests: a PeerTransport and nothing else.

    python peer_proc.py --id 2 --cluster 7 --listen http://127.0.0.1:0 --peer 1=http://...

Prints one JSON line {"ready": bound_url} once listening. Every payload received is echoed to the
member whose ID is in its first 8 bytes (payloads longer than 64 bytes are echoed as their first
16 bytes). Each snapshot received is written to --snapshot-dir and reported as a JSON line
{"snapshot": {...}} with its size, sha256 and this process's peak RSS growth. Exits when stdin
closes, so a crashed test leaves no process behind.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import os
import resource
import struct
import sys
from collections.abc import AsyncIterator

import uvloop

from petcd.transport import PeerTransport, TransportConfig

ORIGIN = struct.Struct(">Q")
FAST = TransportConfig(
    backoff_min=0.02,
    backoff_max=0.2,
    dial_timeout=1.0,
    write_timeout=1.0,
    hello_timeout=1.0,
    max_queue_messages=100_000,
)


def emit(obj: object) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def peak_rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


async def main(args: argparse.Namespace) -> None:
    transport: PeerTransport
    baseline_rss = 0

    def on_messages(payloads: list[bytes]) -> None:
        by_origin: dict[int, list[bytes]] = {}
        for p in payloads:
            (origin,) = ORIGIN.unpack_from(p)
            by_origin.setdefault(origin, []).append(p if len(p) <= 64 else p[:16])
        for origin, echoes in by_origin.items():
            transport.send(origin, echoes)

    async def on_snapshot(from_id: int, metadata: bytes, chunks: AsyncIterator[bytes]) -> None:
        if args.fail_snapshot:
            raise RuntimeError("refusing snapshots on purpose")
        sha = hashlib.sha256()
        size = 0
        path = os.path.join(args.snapshot_dir, f"snap-{from_id:x}")
        with open(path, "wb") as f:
            async for chunk in chunks:
                sha.update(chunk)
                size += len(chunk)
                f.write(chunk)
        emit(
            {
                "snapshot": {
                    "from": from_id,
                    "metadata": metadata.hex(),
                    "size": size,
                    "sha256": sha.hexdigest(),
                    "path": path,
                    "rss_growth_kib": peak_rss_kib() - baseline_rss,
                }
            }
        )

    transport = PeerTransport(
        args.id, args.cluster, [args.listen], on_messages, on_snapshot, config=FAST
    )
    for spec in args.peer:
        peer_id, url = spec.split("=", 1)
        transport.add_peer(int(peer_id), [url])
    await transport.start()
    baseline_rss = peak_rss_kib()
    emit({"ready": transport.bound_urls()[0]})
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)  # until the test closes our stdin
    await transport.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--id", type=int, required=True)
    parser.add_argument("--cluster", type=int, required=True)
    parser.add_argument("--listen", required=True)
    parser.add_argument("--peer", action="append", default=[])
    parser.add_argument("--snapshot-dir", default=".")
    parser.add_argument("--fail-snapshot", action="store_true")
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="peer_proc %(levelname)s %(message)s"
    )
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main(parser.parse_args()))
