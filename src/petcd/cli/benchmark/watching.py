"""The watch subcommands of petcd-benchmark, in one process (their cost is on the server:
the client only waits): `watch` (watcher creation latency, then puts to the watched keys
while every event is awaited) and `watch-latency` (from a put's answer to each watcher's
event)."""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from typing import Any

from petcd.cli.benchmark import client as C
from petcd.cli.benchmark.report import Stats
from petcd.cli.benchmark.runner import ProgressBar
from petcd.cli.workers import Pacer
from petcd.pb.etcdserverpb import rpc_pb2 as rpc


def _watch_call(ch: Any, md: Any) -> Any:
    return ch.stream_stream(C.WATCH, request_serializer=rpc.WatchRequest.SerializeToString,
                            response_deserializer=rpc.WatchResponse.FromString)(metadata=md)


async def _create(stream: Any, key: bytes) -> None:
    await stream.write(rpc.WatchRequest(create_request=rpc.WatchCreateRequest(key=key)))
    while not (await stream.read()).created:
        pass


async def _channels(spec: C.ConnSpec, conns: int) -> list[Any]:
    eps = spec.endpoints
    return [await C.connect(spec, eps[i % len(eps)]) for i in range(max(1, conns))]


async def watch_latency(spec: C.ConnSpec, args: argparse.Namespace) -> Stats:
    rng = random.Random()
    key = C.random_bytes(args.key_size, rng)
    value = C.random_bytes(args.val_size, rng)
    chans = await _channels(spec, args.conns)
    md = await C.auth_metadata(spec, chans[0])
    streams = [_watch_call(chans[i % len(chans)], md) for i in range(max(1, args.clients))]
    for s in streams:
        await _create(s, key)
    put_ch = await C.connect(spec, spec.endpoints[0])
    put = put_ch.unary_unary(C.PUT)
    req = C.put_request(key, value)
    pacer = Pacer(args.put_rate)
    bar = ProgressBar(args.total)
    lats: list[float] = []

    async def event(s: Any, barrier: asyncio.Event, started: list[float]) -> None:
        while not (await s.read()).events:
            pass
        await barrier.wait()  # an event that came before the put's answer counts as ~0
        lats.append(time.monotonic() - started[0])

    began = time.monotonic()
    for i in range(args.total):
        await pacer.wait()
        started = [0.0]
        barrier = asyncio.Event()
        waiting = [asyncio.ensure_future(event(s, barrier, started)) for s in streams]
        await put(req, metadata=md)
        started[0] = time.monotonic()
        barrier.set()
        await asyncio.gather(*waiting)
        if i % 16 == 0:
            bar.draw(i + 1)
    bar.finish(args.total)
    wall = time.monotonic() - began
    for s in streams:
        s.cancel()
    for ch in [*chans, put_ch]:
        await ch.close()
    return Stats.build(lats, wall)


async def watch(spec: C.ConnSpec, args: argparse.Namespace) -> tuple[Stats, Stats]:
    rng = random.Random()
    keys = [C.random_bytes(args.key_size, rng) for _ in range(max(1, args.watched_key_total))]
    chans = await _channels(spec, args.conns)
    md = await C.auth_metadata(spec, chans[0])
    streams = [_watch_call(chans[i % len(chans)], md) for i in range(max(1, args.streams))]
    # Watcher creation: one at a time per stream, streams in parallel.
    created: list[float] = []
    expected = [dict[bytes, int]() for _ in streams]
    bar = ProgressBar(len(streams) * args.watch_per_stream)

    async def make(n: int, s: Any) -> None:
        for j in range(args.watch_per_stream):
            k = keys[(n * args.watch_per_stream + j) % len(keys)]
            expected[n][k] = expected[n].get(k, 0) + 1
            t0 = time.monotonic()
            await _create(s, k)
            created.append(time.monotonic() - t0)
            bar.draw(len(created))
    began = time.monotonic()
    await asyncio.gather(*(make(n, s) for n, s in enumerate(streams)))
    bar.finish(len(created))
    creation = Stats.build(created, time.monotonic() - began)
    # Puts to the watched keys; every watcher must see its events.
    counts = [0] * len(streams)
    want = [0] * len(streams)
    for i in range(args.put_total):
        k = keys[i % len(keys)]
        for n in range(len(streams)):
            want[n] += expected[n].get(k, 0)

    async def drain(n: int, s: Any) -> None:
        while counts[n] < want[n]:
            resp = await s.read()
            counts[n] += len(resp.events)
    readers = [asyncio.ensure_future(drain(n, s)) for n, s in enumerate(streams)]
    put = chans[0].unary_unary(C.PUT)
    pacer = Pacer(args.put_rate)
    lats: list[float] = []
    value = b"v"
    bar = ProgressBar(args.put_total)
    began = time.monotonic()
    for i in range(args.put_total):
        await pacer.wait()
        t0 = time.monotonic()
        await put(C.put_request(keys[i % len(keys)], value), metadata=md)
        lats.append(time.monotonic() - t0)
        if i % 16 == 0:
            bar.draw(i + 1)
    await asyncio.gather(*readers)
    bar.finish(args.put_total)
    puts = Stats.build(lats, time.monotonic() - began)
    for s in streams:
        s.cancel()
    for ch in chans:
        await ch.close()
    return creation, puts
