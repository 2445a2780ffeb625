"""check perf and check datascale: etcdctl 3.4's workloads (perf: puts at a fixed rate
for 60 s from several clients; datascale: the endpoint's resident memory growth, read
from its /metrics, while writing N 1 KiB pairs), its progress bar (progress.py) and its
pass/fail summary, line for line. The puts come from worker processes (load.py) with
etcdctl's numbers of concurrent clients and its rate."""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any

from petcd.cli.ctl import load
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


def _cleanup(a: Args, c: Client, prefix: bytes, timeout: float | None) -> None:
    resp = c.call("KV", "DeleteRange", rpc.DeleteRangeRequest(
        key=prefix, range_end=prefix_end(prefix)), timeout=timeout)
    if a.auto_compact:  # etcdctl's compact() and defrag() helpers: 30 s each
        rev = resp.header.revision
        print(f"Compacting with revision {rev}")
        c.call("KV", "Compact", rpc.CompactionRequest(revision=rev, physical=True),
               timeout=30)
        print(f"Compacted with revision {rev}")
    if a.auto_defrag:
        for ep in c.endpoints:
            print(f"Defragmenting {go_quote(ep)}")
            d = Client(a, [ep])
            d.call("Maintenance", "Defragment", rpc.DefragmentRequest(), timeout=30)
            d.close()
            print(f"Defragmented {go_quote(ep)}")


def _job(a: Args, c: Client, key_size: int, value_size: int, clients: int) -> load.Job:
    c.channel()  # connected (and authenticated) before the workers copy its settings
    target, options, tls = c.dial_parts()
    return load.Job(load.Dial(target, options, tls, c.metadata), a.prefix.encode(),
                    key_size, value_size, clients)


def _run(job: load.Job, **kw: Any) -> load.Outcome:
    try:
        return load.run(job, **kw)
    except OSError as e:
        raise CtlError(str(e), EXIT_ERROR) from None


def _report(errors: dict[str, int]) -> bool:
    """etcdctl's error lines (one per distinct error, with its count); False if any."""
    if not errors:
        return True
    print("FAIL: too many errors")
    for k, v in errors.items():
        print(f"FAIL: ERROR({k}) -> {v}")
    return False


def run_perf(a: Args) -> None:
    from petcd.cli.ctl.progress import Bar

    clients, rate, _, _ = _load(a)
    prefix = a.prefix.encode()
    c = Client(a)
    duration = _DURATION
    got = c.call("KV", "Range", rpc.RangeRequest(key=prefix, range_end=prefix_end(prefix),
                                                 limit=1), timeout=duration)
    if got.kvs:
        raise CtlError(f"prefix {go_quote(a.prefix)} has keys. Delete with etcdctl del "
                       f"--prefix {a.prefix} first", EXIT_INVALID_INPUT)
    job = _job(a, c, 256, 1024, clients)  # etcdctl: 256-byte keys, 1 KiB values
    job.rate = rate
    bar = Bar(int(duration))
    ticker: list[threading.Thread] = []

    def tick(started: float) -> None:
        for i in range(int(duration)):
            time.sleep(max(0.0, started + i + 1 - time.monotonic()))
            bar.add(1)
        bar.finish()

    def on_start(started: float) -> None:
        bar.start()
        ticker.append(threading.Thread(target=tick, args=(started,), daemon=True))
        ticker[0].start()

    res = _run(job, duration=duration, on_start=on_start)
    for t in ticker:
        t.join()
    _cleanup(a, c, prefix, 30)
    ok = _report(res.errors)
    lat = res.latencies
    rps = len(lat) / res.seconds if res.seconds > 0 else 0.0
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
                                                 limit=1), timeout=None)
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

    job = _job(a, c, 512, 512, clients)  # etcdctl: 512-byte keys and values
    job.count = limit
    job.progress = True
    bar = Bar(limit)
    res = _run(job, on_start=lambda _: bar.start(), on_progress=bar.add)
    errors = res.errors
    bar.finish()
    after = _memory(a, c.endpoints[0])
    if not after:
        print("FAIL: Could not read process_resident_memory_bytes after the put operations.")
        raise SystemExit(EXIT_ERROR)
    _cleanup(a, c, prefix, None)
    if not _report(errors):
        sys.stdout.flush()
        raise SystemExit(EXIT_ERROR)
    print(f"PASS: Approximate system memory used : {(after - before) / 2**20:.2f} MB.")
