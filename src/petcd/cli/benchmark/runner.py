"""The workers of petcd-benchmark: the load comes from several processes (cli.workers:
a Python client process tops out well below a member), each with its own asyncio loop
(uvloop), its share of the connections, clients, requests and rate, and requests encoded
to bytes once per operation. Workers report their progress (the parent draws the
progress bar from it) and send back their latencies and error counts at the end."""

from __future__ import annotations

import array
import asyncio
import random
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from petcd.cli import workers
from petcd.cli.benchmark import client as C
from petcd.pb.wire import read_varint, varint

# What a worker sends back: (latencies as array('d') bytes, errors, first start, last end)
Result = tuple[bytes, dict[str, int], float, float]


@dataclass(frozen=True)
class Job:
    """One worker's share of a run (picklable)."""
    command: str
    spec: C.ConnSpec
    total: int
    first: int  # index of its first request (sequential keys)
    clients: int
    conns: int
    rate: float  # requests/s for this worker, 0: unlimited
    seed: int
    params: dict[str, Any] = field(default_factory=dict)


class _Load:
    """The requests of a unary command, by index."""

    def __init__(self, job: Job) -> None:
        p = job.params
        self.rng = random.Random(job.seed)
        self.key_size = int(p.get("key_size", 8))
        self.space = max(1, int(p.get("key_space_size", 1)))
        self.sequential = bool(p.get("sequential_keys", False))
        self.value = C.random_bytes(int(p.get("val_size", 8)), self.rng)
        self.cmd = job.command
        self.txn_ops = max(1, int(p.get("txn_ops", 1)))
        self.rw_ratio = float(p.get("rw_ratio", 1.0))
        key, end = p.get("key", b""), p.get("end", b"")
        self.keys: list[bytes] | None = None
        self.read = C.range_request(key, end, p.get("consistency", "l") == "s",
                                    int(p.get("limit", 0)))

    def _key(self, i: int) -> bytes:
        n = i % self.space if self.sequential else self.rng.randrange(self.space)
        return C.key_of(n, self.key_size)

    def request(self, i: int) -> tuple[str, bytes]:
        cmd = self.cmd
        if cmd == "put":
            return C.PUT, C.put_request(self._key(i), self.value)
        if cmd == "range":
            return C.RANGE, self.read
        if cmd == "txn-put":
            # As etcd: the txn's keys follow each other in a list of random keys, so
            # they differ within a txn (a txn may not put one key twice).
            if self.keys is None:
                self.keys = [C.random_bytes(self.key_size, self.rng)
                             for _ in range(self.space)]
            ops = [C.op_put(C.put_request(self.keys[(i * self.txn_ops + j) % self.space],
                                          self.value)) for j in range(self.txn_ops)]
            return C.TXN, C.txn_request(ops)
        # txn-mixed: reads and writes at rw-ratio reads per write, each a one-op Txn
        if self.rng.random() < self.rw_ratio / (self.rw_ratio + 1):
            return C.TXN, C.txn_request([C.op_range(self.read)])
        return C.TXN, C.txn_request([C.op_put(C.put_request(self._key(i), self.value))])


async def _worker(link: workers.Link, job: Job, slot: int) -> None:
    eps = job.spec.endpoints
    chans = [await C.connect(job.spec, eps[(slot + i) % len(eps)]) for i in range(job.conns)]
    md = await C.auth_metadata(job.spec, chans[0])
    lats = array.array("d")
    errors: Counter[str] = Counter()
    pacer = workers.Pacer(job.rate)
    load = _Load(job)
    taken = 0

    def take() -> int:
        nonlocal taken
        if taken >= job.total:
            return -1
        taken += 1
        return job.first + taken - 1

    def record(t0: float, err: str | None) -> None:
        if err is None:
            lats.append(time.monotonic() - t0)
        else:
            errors[err] += 1
        link.add()

    async def unary(c: int) -> None:
        calls: dict[str, Callable[..., Awaitable[bytes]]] = {}
        ch = chans[c % len(chans)]
        while (i := take()) >= 0:
            method, req = load.request(i)
            call = calls.get(method)
            if call is None:
                call = calls[method] = ch.unary_unary(method)
            await pacer.wait()
            t0 = time.monotonic()
            try:
                await call(req, metadata=md)
                record(t0, None)
            except grpc.aio.AioRpcError as e:
                record(t0, C.go_error(e))

    async def keepalive(c: int) -> None:
        ch = chans[c % len(chans)]
        grant = ch.unary_unary(C.LEASE_GRANT)
        # LeaseGrantRequest{TTL: 100}; the answer's ID is field 2 (varint)
        resp = await grant(b"\x08\x64", metadata=md)
        lease_id = _read_varint_field(resp, 2)
        stream = ch.stream_stream(C.LEASE_KEEPALIVE)(metadata=md)
        req = b"\x08" + varint(lease_id)
        while take() >= 0:
            await pacer.wait()
            t0 = time.monotonic()
            try:
                await stream.write(req)
                await stream.read()
                record(t0, None)
            except grpc.aio.AioRpcError as e:
                record(t0, C.go_error(e))
                stream = ch.stream_stream(C.LEASE_KEEPALIVE)(metadata=md)
        await stream.done_writing()

    body = keepalive if job.command == "lease-keepalive" else unary
    link.ready()
    await link.start(progress=True)
    start = time.monotonic()
    await asyncio.gather(*(body(c) for c in range(job.clients)))
    end = time.monotonic()
    for ch in chans:
        await ch.close()
    await link.finish((lats.tobytes(), dict(errors), start, end))


def _read_varint_field(buf: bytes, number: int) -> int:
    """The value of varint field `number` in a protobuf message (0 if absent)."""
    i = 0
    while i < len(buf):
        tag, i = read_varint(buf, i)
        num, wire = tag >> 3, tag & 7
        if wire == 0:
            value, i = read_varint(buf, i)
            if num == number:
                return value - (1 << 64) if value >= 1 << 63 else value
        elif wire == 2:
            n, i = read_varint(buf, i)
            i += n
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        else:
            break
    return 0



def _main(link: workers.Link, job_slot: tuple[Job, int]) -> None:
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as r:
        r.run(_worker(link, *job_slot))


class ProgressBar:
    """A one-line bar on stderr when it is a terminal (etcd's benchmark draws one too)."""

    def __init__(self, total: int, enabled: bool | None = None) -> None:
        self.total = total
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.started = time.monotonic()

    def draw(self, done: int) -> None:
        if not self.enabled:
            return
        frac = done / self.total if self.total else 1.0
        width = 40
        bar = "=" * int(frac * width)
        bar = (bar + ">").ljust(width)[:width] if frac < 1 else bar
        took = time.monotonic() - self.started
        sys.stderr.write(f"\r {done} / {self.total} [{bar}] {frac * 100:6.2f}% {took:.0f}s ")
        sys.stderr.flush()

    def finish(self, done: int) -> None:
        if self.enabled:
            self.draw(done)
            sys.stderr.write("\n")


def run(jobs: list[Job], bar: ProgressBar) -> tuple[list[float], dict[str, int], float]:
    """Run the jobs in worker processes; (latencies, errors, wall seconds)."""
    done = [0]

    def progress(n: int) -> None:
        done[0] += n
        bar.draw(done[0])

    try:
        results: list[Result] = workers.run(
            _main, [(job, slot) for slot, job in enumerate(jobs)], on_progress=progress,
            on_idle=lambda: bar.draw(done[0]))
    except workers.WorkerFailed as e:
        raise SystemExit(f"benchmark: a worker failed: {e}") from None
    bar.finish(done[0])
    lats: list[float] = []
    errors: Counter[str] = Counter()
    for raw, errs, _, _ in results:
        a = array.array("d")
        a.frombytes(raw)
        lats.extend(a)
        errors.update(errs)
    wall = max(r[3] for r in results) - min(r[2] for r in results)
    return lats, dict(errors), wall
