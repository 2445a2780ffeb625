"""check perf and check datascale: etcdctl 3.4's workloads (perf: puts at a fixed rate
for 60 s from several clients; datascale: the endpoint's resident memory growth, read
from its /metrics, while writing N 1 KiB pairs) and their pass/fail summary. Client
threads are capped at 64 (Python threads, not goroutines); no progress bar."""

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
    if a.auto_compact:
        c.call("KV", "Compact", rpc.CompactionRequest(revision=resp.header.revision))
    if a.auto_defrag:
        for ep in c.endpoints:
            d = Client(a, [ep])
            d.call("Maintenance", "Defragment", rpc.DefragmentRequest())
            d.close()


def run_perf(a: Args) -> None:
    clients, rate, size, _ = _load(a)
    prefix = a.prefix.encode()
    c = Client(a)
    got = c.call("KV", "Range", rpc.RangeRequest(key=prefix, range_end=prefix_end(prefix),
                                                 count_only=True))
    if got.count:
        raise CtlError(f"prefix {go_quote(a.prefix)} has keys. Delete with etcdctl del "
                       f"--prefix {a.prefix} first.", EXIT_ERROR)
    value = b"x" * size
    stop = time.monotonic() + _DURATION
    lat: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    per_client = rate / clients

    def worker(i: int) -> None:
        n = 0
        start = time.monotonic()
        while time.monotonic() < stop:
            due = start + n / per_client
            if due > time.monotonic():
                time.sleep(due - time.monotonic())
            t = time.monotonic()
            try:
                c.call("KV", "Put", rpc.PutRequest(key=prefix + f"{i}-{n}".encode(),
                                                   value=value))
                with lock:
                    lat.append(time.monotonic() - t)
            except CtlError as e:
                errors.append(str(e))
            n += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(min(clients, 64))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    _cleanup(a, c, prefix)
    ok = True
    throughput = len(lat) / _DURATION
    if throughput < 0.9 * rate:
        print(f"FAIL: Throughput too low: {int(throughput)} writes/s")
        ok = False
    else:
        print(f"PASS: Throughput is {int(throughput)} writes/s")
    slowest = max(lat, default=0.0)
    if slowest > 0.5:
        print(f"Slowest request took too long: {slowest:f}s")
        ok = False
    else:
        print(f"PASS: Slowest request took {slowest:f}s")
    mean = sum(lat) / len(lat) if lat else 0.0
    std = (sum((x - mean) ** 2 for x in lat) / len(lat)) ** 0.5 if lat else 0.0
    if std > 0.1:
        print(f"FAIL: Stddev too high: {std:f}s")
        ok = False
    else:
        print(f"PASS: Stddev is {std:f}s")
    if errors:
        for e in errors[:10]:
            print(f"FAIL: ERROR({e})")
        ok = False
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
    value = bytes(512)
    errors: dict[str, int] = {}
    lock = threading.Lock()
    todo = iter(range(limit))

    def worker() -> None:
        import random
        while True:
            with lock:
                if next(todo, None) is None:
                    return
            key = prefix + random.getrandbits(63).to_bytes(8, "little") + bytes(504)
            try:
                c.call("KV", "Put", rpc.PutRequest(key=key, value=value))
            except CtlError as e:
                with lock:
                    errors[str(e)] = errors.get(str(e), 0) + 1

    threads = [threading.Thread(target=worker) for _ in range(min(clients, 64))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    after = _memory(a, c.endpoints[0])
    if not after:
        print("FAIL: Could not read process_resident_memory_bytes after the put operations.")
        raise SystemExit(EXIT_ERROR)
    _cleanup(a, c, prefix)
    if errors:
        print("FAIL: too many errors")
        for k, v in errors.items():
            print(f"FAIL: ERROR({k}) -> {v}")
        raise SystemExit(EXIT_ERROR)
    print(f"PASS: Approximate system memory used : {(after - before) / 2**20:.2f} MB.")
