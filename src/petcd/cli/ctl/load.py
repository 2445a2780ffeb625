"""The puts of check perf and check datascale, sent by worker processes (cli.workers:
spawned, one a core, at most 4) that each run asyncio gRPC calls on their own connection: etcdctl
runs hundreds of Go clients, and Python threads on one channel cannot keep up with that
(the client, not the member, was what the check measured). Each worker gets its share
of the clients (concurrent calls) and of the rate; the parent gathers latencies and
errors, with etcdctl's meaning: a latency per successful put, errors counted by text."""

from __future__ import annotations

import os
import time
from array import array
from dataclasses import dataclass, field
from typing import Any

from petcd.cli import workers

MAX_PROCESSES = 4


@dataclass
class Dial:
    """A channel as plain values (a worker makes its own): see Client.dial_parts."""
    target: str
    options: list[tuple[str, Any]]
    tls: tuple[bytes | None, ...] | None
    metadata: list[tuple[str, str]]


@dataclass
class Job:
    dial: Dial
    prefix: bytes
    key_size: int
    value_size: int
    clients: int  # concurrent calls
    rate: float = 0.0  # puts/s (burst 1, as golang.org/x/time/rate); 0: unlimited
    count: int = 0  # puts to send when there is no rate
    progress: bool = False  # report puts done (datascale's bar)


@dataclass
class Outcome:
    latencies: array[float] = field(default_factory=lambda: array("d"))
    errors: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0  # from the start until the last put answered


def varint_key(n: int, size: int) -> bytes:
    """Go's binary.PutVarint(k, n) into a zeroed size-byte buffer (etcdctl's keys)."""
    u = (n << 1) ^ (n >> 63)
    out = bytearray()
    while u >= 0x80:
        out.append((u & 0x7F) | 0x80)
        u >>= 7
    out.append(u)
    return bytes(out) + bytes(size - len(out))


def run(job: Job, *, duration: float = 0.0, on_start: Any = None,
        on_progress: Any = None) -> Outcome:
    """Send job's puts from worker processes: for `duration` seconds at job.rate, or
    job.count of them. on_start(t0) is called when the workers are released (t0 on
    time.monotonic's clock, shared by all processes), on_progress(n) as puts finish.
    Raises OSError (workers.WorkerFailed) when a worker cannot connect or dies."""
    procs = max(1, min(os.cpu_count() or 1, MAX_PROCESSES, job.clients))
    jobs = [Job(job.dial, job.prefix, job.key_size, job.value_size, clients,
                job.rate / procs, count, job.progress)
            for clients, count in zip(workers.split(job.clients, procs),
                                      workers.split(job.count, procs), strict=True)]
    started: list[float] = []

    def release(start: float) -> None:
        started.append(start)
        if on_start is not None:
            on_start(start)

    out = Outcome()
    end = 0.0
    for lat, errors, finished in workers.run(_worker, jobs, duration=duration,
                                             on_start=release, on_progress=on_progress):
        out.latencies.frombytes(lat)
        for k, v in errors.items():
            out.errors[k] = out.errors.get(k, 0) + v
        end = max(end, finished)
    out.seconds = max(0.0, end - started[0])
    return out


def _worker(link: workers.Link, job: Job) -> None:
    import asyncio
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C ends the workers with petcdctl
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    asyncio.run(_work(link, job))


async def _work(link: workers.Link, job: Job) -> None:
    import asyncio
    import random

    import grpc

    from petcd.cli.ctl.client import error_text
    from petcd.pb.etcdserverpb import rpc_pb2 as rpc

    d = job.dial
    # a connection of this worker's own, not one shared through gRPC's subchannel pool
    options = [*d.options, ("grpc.use_local_subchannel_pool", 1)]
    if d.tls is not None:
        roots, key, chain = d.tls
        creds = grpc.ssl_channel_credentials(root_certificates=roots, private_key=key,
                                             certificate_chain=chain)
        ch = grpc.aio.secure_channel(d.target, creds, options)
    else:
        ch = grpc.aio.insecure_channel(d.target, options)
    try:
        await asyncio.wait_for(ch.channel_ready(), 30)
    except (TimeoutError, grpc.RpcError) as e:
        link.failed(f"cannot connect: {e!r}")
        return
    put = ch.unary_unary("/etcdserverpb.KV/Put", request_serializer=None,
                         response_deserializer=None)  # answers are not read
    metadata = tuple(d.metadata) or None
    value = bytes(job.value_size)
    link.ready()
    start, stop = await link.start(progress=job.progress)
    lat = array("d")
    errors: dict[str, int] = {}
    queue: asyncio.Queue[bytes | None] = asyncio.Queue(job.clients)

    async def client() -> None:
        while (req := await queue.get()) is not None:
            t = time.monotonic()
            try:
                await put(req, metadata=metadata)
                lat.append(time.monotonic() - t)
            except grpc.RpcError as e:
                text = error_text(e)
                errors[text] = errors.get(text, 0) + 1
            link.add()

    tasks = [asyncio.create_task(client()) for _ in range(job.clients)]
    await asyncio.sleep(max(0.0, start - time.monotonic()))
    pacer = workers.Pacer(job.rate, start)
    n = 0
    while stop or n < job.count:
        if (await pacer.wait()) >= stop > 0:  # nothing is sent after the duration
            break
        key = job.prefix + varint_key(random.getrandbits(63), job.key_size)
        await queue.put(rpc.PutRequest(key=key, value=value).SerializeToString())
        n += 1
    for _ in tasks:
        await queue.put(None)
    await asyncio.gather(*tasks)
    finished = time.monotonic()
    await ch.close(None)
    await link.finish((lat.tobytes(), errors, finished))
