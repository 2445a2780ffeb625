"""The puts of check perf and check datascale, sent by worker processes (spawned, one a
core, at most 4) that each run asyncio gRPC calls on their own connection: etcdctl
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


def _split(n: int, parts: int) -> list[int]:
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


def run(job: Job, *, duration: float = 0.0, on_start: Any = None,
        on_progress: Any = None) -> Outcome:
    """Send job's puts from worker processes: for `duration` seconds at job.rate, or
    job.count of them. on_start(t0) is called when the workers are released (t0 on
    time.monotonic's clock, shared by all processes), on_progress(n) as puts finish."""
    import multiprocessing as mp
    from multiprocessing.connection import wait

    procs = max(1, min(os.cpu_count() or 1, MAX_PROCESSES, job.clients))
    ctx = mp.get_context("spawn")  # never fork a process that may hold gRPC state
    conns, workers = [], []
    for clients, count in zip(_split(job.clients, procs), _split(job.count, procs),
                              strict=True):
        mine = Job(job.dial, job.prefix, job.key_size, job.value_size, clients,
                   job.rate / procs, count, job.progress)
        parent, child = ctx.Pipe()
        w = ctx.Process(target=_worker, args=(child, mine), daemon=True)
        w.start()
        child.close()
        conns.append(parent)
        workers.append(w)
    out = Outcome()
    try:
        for c in conns:
            hello = c.recv()
            if hello[0] == "failed":
                raise OSError(hello[1])
        start = time.monotonic() + 0.05
        stop = start + duration if duration else 0.0
        for c in conns:
            c.send((start, stop))
        if on_start is not None:
            on_start(start)
        end = start
        left: list[Any] = list(conns)
        while left:
            for ready in wait(left):
                try:
                    msg: Any = ready.recv()  # type: ignore[union-attr,call-arg]
                except EOFError:
                    raise OSError("a check worker died") from None
                if msg[0] == "progress":
                    if on_progress is not None:
                        on_progress(msg[1])
                    continue
                _, lat, errors, finished = msg
                out.latencies.frombytes(lat)
                for k, v in errors.items():
                    out.errors[k] = out.errors.get(k, 0) + v
                end = max(end, finished)
                left.remove(ready)
        out.seconds = end - start
    finally:
        for w in workers:
            w.join(5)
            if w.is_alive():
                w.kill()
                w.join()
    return out


def _worker(conn: Any, job: Job) -> None:
    import asyncio
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C ends the workers with petcdctl
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    asyncio.run(_work(conn, job))


async def _work(conn: Any, job: Job) -> None:
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
        conn.send(("failed", f"cannot connect: {e!r}"))
        return
    put = ch.unary_unary("/etcdserverpb.KV/Put", request_serializer=None,
                         response_deserializer=None)  # answers are not read
    metadata = tuple(d.metadata) or None
    value = bytes(job.value_size)
    conn.send(("ready",))
    start, stop = conn.recv()
    lat = array("d")
    errors: dict[str, int] = {}
    done = reported = 0
    queue: asyncio.Queue[bytes | None] = asyncio.Queue(job.clients)

    async def client() -> None:
        nonlocal done
        while (req := await queue.get()) is not None:
            t = time.monotonic()
            try:
                await put(req, metadata=metadata)
                lat.append(time.monotonic() - t)
            except grpc.RpcError as e:
                text = error_text(e)
                errors[text] = errors.get(text, 0) + 1
            done += 1

    def report() -> None:
        nonlocal reported
        if done > reported:
            conn.send(("progress", done - reported))
            reported = done

    async def reporting() -> None:
        while True:
            await asyncio.sleep(0.1)
            report()

    tasks = [asyncio.create_task(client()) for _ in range(job.clients)]
    reporter = asyncio.create_task(reporting()) if job.progress else None
    await asyncio.sleep(max(0.0, start - time.monotonic()))
    due, n = start, 0
    while (due < stop) if stop else (n < job.count):
        if job.rate:
            now = time.monotonic()
            if due > now:
                await asyncio.sleep(due - now)
            due = max(due + 1 / job.rate, time.monotonic())  # burst 1: no catching up
        key = job.prefix + varint_key(random.getrandbits(63), job.key_size)
        await queue.put(rpc.PutRequest(key=key, value=value).SerializeToString())
        n += 1
    for _ in tasks:
        await queue.put(None)
    await asyncio.gather(*tasks)
    finished = time.monotonic()
    if reporter is not None:
        reporter.cancel()
        report()
    await ch.close(None)
    conn.send(("done", lat.tobytes(), errors, finished))
