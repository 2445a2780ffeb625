"""What a live watch event costs the member on top of its put, in-process: the real
Applier and store apply one put per batch; with --mode watch a watcher on the key sits
on a stream of our HTTP/2 server (a connection over an in-memory transport), so the
event is matched, encoded, framed and written as a member does at the end of the apply.

    [PETCD_SRC=OTHER/src] python bench/watch_notify_bench.py [--puts 20000] [--repeat 5]
                                                             [--mode both|put|watch]

Prints the best run's microseconds per put for each mode and the difference (the
event's cost). For instruction counts run it under callgrind with --mode watch and
--mode put and compare (the startup is the same in both).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

if os.environ.get("PETCD_SRC"):  # another checkout's petcd (A/B), ahead of the editable one
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
sys.path.insert(0, os.environ.get("PETCD_SRC") or str(Path(__file__).resolve().parents[1] / "src"))

import grpc
import hpack
import uvloop

from petcd.api.h2 import GrpcServer, ServerConfig
from petcd.api.h2 import frames as F
from petcd.mvcc.backend import Backend
from petcd.mvcc.kvstore import KVStore
from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.server import proposal as P
from petcd.server.apply import Applier
from petcd.server.kv_requests import KVRequests
from petcd.server.proposal import Committed
from petcd.server.watch import WatchHub
from petcd.testing.memtransport import MemoryTransport

KEY = b"lat"


async def run(mode: str, puts: int, data_dir: str) -> float:
    backend = Backend(os.path.join(data_dir, f"db-{mode}-{time.monotonic_ns()}"),
                      map_size=1 << 30, sync=False)
    store = KVStore(backend)
    applier = Applier(backend, KVRequests(store))
    hub = WatchHub(store, cluster_id=11, member_id=22, term=lambda: 3,
                   response_limit=1 << 20, progress_interval=0.0)
    applier.add_commit_listener(hub.commit_listener())

    async def watch(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
        # (what api.watch.WatchService.Watch does on our server, without auth)
        stream = hub.open_stream()
        stream.outlet = context.outlet()
        async for raw in requests:
            stream.create(rpc.WatchRequest.FromString(raw).create_request)
            break
        async for msg in stream.messages():
            yield msg

    server = GrpcServer(ServerConfig())
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "t.S", {"W": grpc.stream_stream_rpc_method_handler(watch)})])
    proto: Any = server.protocol_factory()
    transport = MemoryTransport()
    proto.connection_made(transport)
    proto.data_received(F.PREFACE + F.settings_frame({}))
    if mode == "watch":
        block = hpack.Encoder().encode([
            (":method", "POST"), (":scheme", "http"), (":path", "/t.S/W"),
            (":authority", "t"), ("content-type", "application/grpc")])
        create = rpc.WatchRequest(create_request=rpc.WatchCreateRequest(key=KEY))
        body = create.SerializeToString()
        proto.data_received(F.frame(F.HEADERS, F.END_HEADERS, 1, block) + F.frame(
            F.DATA, 0, 1, b"\0" + len(body).to_bytes(4, "big") + body))
        while hub.watcher_count == 0:
            await asyncio.sleep(0)
    await asyncio.sleep(0.01)
    req = rpc.PutRequest(key=KEY, value=b"v" * 100)
    window = F.frame(F.WINDOW_UPDATE, 0, 0, (1 << 20).to_bytes(4, "big")) + F.frame(
        F.WINDOW_UPDATE, 0, 1, (1 << 20).to_bytes(4, "big"))
    index = applier.applied_index
    took = 0.0
    for i in range(puts):
        if i % 1000 == 0:  # what the client's reading gives back (off the clock)
            proto.data_received(window)
            transport.out.clear()
            await asyncio.sleep(0)
        index += 1
        batch = [Committed(index, 1, P.PUT, req)]
        t0 = time.perf_counter()
        applier.apply(batch)
        took += time.perf_counter() - t0
    sent = hub.events_sent
    if mode == "watch" and sent != puts:
        raise SystemExit(f"{sent} events sent for {puts} puts")
    backend.close()
    return took / puts * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--puts", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--mode", choices=["both", "put", "watch"], default="both")
    args = ap.parse_args()
    modes = ["put", "watch"] if args.mode == "both" else [args.mode]
    best = {m: float("inf") for m in modes}
    with tempfile.TemporaryDirectory(prefix="watch-notify-") as tmp:
        for _ in range(args.repeat):
            for m in modes:
                with asyncio.Runner(loop_factory=uvloop.new_event_loop) as r:
                    us = r.run(run(m, args.puts, tmp))
                best[m] = min(best[m], us)
    print(f"load average {os.getloadavg()[0]:.2f}; best of {args.repeat} runs of "
          f"{args.puts} puts: " + ", ".join(f"{m} {best[m]:.2f} us/put" for m in modes)
          + (f"; the event costs {best['watch'] - best['put']:.2f} us" if len(modes) == 2
             else ""))


if __name__ == "__main__":
    main()
