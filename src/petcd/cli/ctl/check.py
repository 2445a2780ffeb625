"""check perf and check datascale: etcdctl 3.4's workloads (perf: puts at a fixed rate
for 60 s from several clients; datascale: the endpoint's resident memory growth, read
from its /metrics, while writing N 1 KiB pairs), its progress bar (progress.py) and its
pass/fail summary, line for line. Client threads are capped at 64 (Python threads, not
goroutines) sharing one channel; the rate is etcdctl's."""

from __future__ import annotations

import os
import sys
import threading
import time

from petcd.cli.ctl.client import Client
from petcd.cli.ctl.cmd import Args
from petcd.cli.ctl.common import EXIT_BAD_FEATURE, EXIT_ERROR, EXIT_INVALID_INPUT, CtlError
from petcd.cli.ctl.kv import prefix_end
from petcd.cli.ctl.output import go_quote
from petcd.pb.etcdserverpb import rpc_pb2 as rpc

_ALIASES = {"small": "s", "medium": "m", "large": "l", "xLarge": "xl"}
_SCALE = {"s": (10000, 50), "m": (100000, 200), "l": (1000000, 500), "xl": (3000000, 1000)}
# name: (clients, put rate/s, value size, datascale key count)
_LOADS = {"s": (50, 150, 2 * 256, 10000), "m": (200, 1000, 2 * 256, 100000),
          "l": (500, 8000, 2 * 256, 1000000), "xl": (1000, 15000, 2 * 256, 3000000)}
_DURATION = float(os.environ.get("PETCDCTL_CHECK_PERF_DURATION", "60"))


def _load(a: Args) -> tuple[int, int, int, int]:
    load = _ALIASES.get(a.load, a.load)
    if load not in _LOADS:
        raise CtlError(f"unknown load option {a.load}", EXIT_BAD_FEATURE)
    return _LOADS[load]


def _cleanup(a: Args, c: Client, prefix: bytes) -> None:
    resp = c.call("KV", "DeleteRange", rpc.DeleteRangeRequest(key=prefix,
                                                              range_end=prefix_end(prefix)))
    if a.auto_compact:  # etcdctl's compact() and defrag() helpers, with their lines
        rev = resp.header.revision
        print(f"Compacting with revision {rev}")
        c.call("KV", "Compact", rpc.CompactionRequest(revision=rev))
        print(f"Compacted with revision {rev}")
    if a.auto_defrag:
        for ep in c.endpoints:
            print(f"Defragmenting {go_quote(ep)}")
            d = Client(a, [ep])
            d.call("Maintenance", "Defragment", rpc.DefragmentRequest())
            d.close()
            print(f"Defragmented {go_quote(ep)}")


def _varint_key(n: int, size: int) -> bytes:
    """Go's binary.PutVarint(k, n) into a zeroed size-byte buffer (etcdctl's keys)."""
    u = (n << 1) ^ (n >> 63)
    out = bytearray()
    while u >= 0x80:
        out.append((u & 0x7F) | 0x80)
        u >>= 7
    out.append(u)
    return bytes(out) + bytes(size - len(out))


def _report(errors: dict[str, int]) -> bool:
    """etcdctl's error lines (one per distinct error, with its count); False if any."""
    if not errors:
        return True
    print("FAIL: too many errors")
    for k, v in errors.items():
        print(f"FAIL: ERROR({k}) -> {v}")
    return False


def run_perf(a: Args) -> None:
    import random

    from petcd.cli.ctl.progress import Bar

    clients, rate, _, _ = _load(a)
    prefix = a.prefix.encode()
    c = Client(a)
    got = c.call("KV", "Range", rpc.RangeRequest(key=prefix, range_end=prefix_end(prefix),
                                                 limit=1))
    if got.kvs:
        raise CtlError(f"prefix {go_quote(a.prefix)} has keys. Delete with etcdctl del "
                       f"--prefix {a.prefix} first", EXIT_INVALID_INPUT)
    value = bytes(1024)  # etcdctl: 256-byte keys (a varint, then zeros), 1 KiB values
    duration = _DURATION
    started = time.monotonic()
    stop = started + duration
    lat: list[float] = []
    errors: dict[str, int] = {}
    lock = threading.Lock()
    n_threads = min(clients, 64)
    interval = n_threads / rate  # each thread's share of the rate limit

    def worker(i: int) -> None:
        n = 0
        start = started + i / rate  # staggered: the rate is spread over the second
        while True:
            due = start + n * interval
            if due >= stop:
                return
            if due > time.monotonic():
                time.sleep(due - time.monotonic())
            key = prefix + _varint_key(random.getrandbits(63), 256)
            t = time.monotonic()
            try:
                c.call("KV", "Put", rpc.PutRequest(key=key, value=value), timeout=None)
                with lock:
                    lat.append(time.monotonic() - t)
            except CtlError as e:
                with lock:
                    errors[str(e)] = errors.get(str(e), 0) + 1
            n += 1

    bar = Bar(int(duration)).start()

    def tick() -> None:
        for i in range(int(duration)):
            time.sleep(max(0.0, started + i + 1 - time.monotonic()))
            bar.add(1)
        bar.finish()

    ticker = threading.Thread(target=tick)
    ticker.start()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total = time.monotonic() - started
    ticker.join()
    _cleanup(a, c, prefix)
    ok = _report(errors)
    rps = len(lat) / total if total > 0 else 0.0
    if rps / rate <= 0.9:
        print(f"FAIL: Throughput too low: {int(rps) + 1} writes/s")
        ok = False
    else:
        print(f"PASS: Throughput is {int(rps) + 1} writes/s")
    slowest = max(lat, default=0.0)
    if slowest > 0.5:
        print(f"Slowest request took too long: {slowest:f}s")
        ok = False
    else:
        print(f"PASS: Slowest request took {slowest:f}s")
    mean = sum(lat) / len(lat) if lat else 0.0
    std = (sum((x - mean) ** 2 for x in lat) / len(lat)) ** 0.5 if lat else 0.0
    if std > 0.1:
        print(f"Stddev too high: {std:f}s")
        ok = False
    else:
        print(f"PASS: Stddev is {std:f}s")
    if ok:
        print("PASS")
    else:
        print("FAIL")
        sys.stdout.flush()
        raise SystemExit(EXIT_ERROR)


def _memory(a: Args, endpoint: str) -> float:
    """The member's process_resident_memory_bytes from its /metrics (0: unreadable)."""
    import ssl
    import urllib.request
    scheme = "https" if (a.cacert or a.cert or not a.insecure_transport) else "http"
    host = endpoint.split("://", 1)[-1]
    ctx = None
    if scheme == "https":
        ctx = ssl.create_default_context(cafile=a.cacert or None)
        if a.cert:
            ctx.load_cert_chain(a.cert, a.key or None)
    try:
        with urllib.request.urlopen(f"{scheme}://{host}/metrics", timeout=10,
                                    context=ctx) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("process_resident_memory_bytes "):
                    return float(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0.0


def run_datascale(a: Args) -> None:
    if a.load not in _LOADS and a.load not in _ALIASES:
        raise CtlError(f"unknown load option {a.load}", EXIT_BAD_FEATURE)
    limit, clients = _SCALE[_ALIASES.get(a.load, a.load)]
    prefix = a.prefix.encode()
    c = Client(a)
    got = c.call("KV", "Range", rpc.RangeRequest(key=prefix, range_end=prefix_end(prefix),
                                                 limit=1))
    if got.kvs:
        raise CtlError(f"prefix {go_quote(a.prefix)} has keys. Delete with etcdctl del "
                       f"--prefix {a.prefix} first", EXIT_INVALID_INPUT)
    before = _memory(a, c.endpoints[0])
    if not before:
        print("FAIL: Could not read process_resident_memory_bytes before the put operations.")
        raise SystemExit(EXIT_ERROR)
    print(f"Start data scale check for work load [{limit} key-value pairs, 1024 bytes per "
          f"key-value, {clients} concurrent clients].", flush=True)
    from petcd.cli.ctl.progress import Bar

    value = bytes(512)  # etcdctl: 512-byte keys (a varint, then zeros), 512-byte values
    errors: dict[str, int] = {}
    lock = threading.Lock()
    todo = iter(range(limit))
    bar = Bar(limit).start()

    def worker() -> None:
        import random
        while True:
            with lock:
                if next(todo, None) is None:
                    return
            key = prefix + _varint_key(random.getrandbits(63), 512)
            try:
                c.call("KV", "Put", rpc.PutRequest(key=key, value=value), timeout=None)
            except CtlError as e:
                with lock:
                    errors[str(e)] = errors.get(str(e), 0) + 1
            bar.add(1)

    threads = [threading.Thread(target=worker) for _ in range(min(clients, 64))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    bar.finish()
    after = _memory(a, c.endpoints[0])
    if not after:
        print("FAIL: Could not read process_resident_memory_bytes after the put operations.")
        raise SystemExit(EXIT_ERROR)
    _cleanup(a, c, prefix)
    if not _report(errors):
        sys.stdout.flush()
        raise SystemExit(EXIT_ERROR)
    print(f"PASS: Approximate system memory used : {(after - before) / 2**20:.2f} MB.")
