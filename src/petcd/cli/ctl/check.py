"""check perf and check datascale: etcdctl 3.4's workloads (puts of a fixed value size
at a fixed rate for 60 s from several clients; datascale: memory growth of the
endpoint while writing) and their pass/fail summary."""

from __future__ import annotations

import os
import sys
import threading
import time

from petcd.cli.ctl.client import Client
from petcd.cli.ctl.cmd import Args, bad_args
from petcd.cli.ctl.common import EXIT_BAD_FEATURE, EXIT_ERROR, CtlError
from petcd.cli.ctl.kv import prefix_end
from petcd.cli.ctl.output import go_quote
from petcd.pb.etcdserverpb import rpc_pb2 as rpc

# name: (clients, put rate/s, value size, datascale key count)
_LOADS = {"s": (50, 150, 2 * 256, 10000), "m": (200, 1000, 2 * 256, 100000),
          "l": (500, 8000, 2 * 256, 1000000), "xl": (1000, 15000, 2 * 256, 3000000)}
_DURATION = float(os.environ.get("PETCDCTL_CHECK_PERF_DURATION", "60"))


def _load(a: Args) -> tuple[int, int, int, int]:
    if a.load not in _LOADS:
        raise CtlError(f"unknown load option {a.load}", EXIT_BAD_FEATURE)
    return _LOADS[a.load]


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


def run_datascale(a: Args) -> None:
    _, _, size, keys = _load(a)
    raise CtlError("check datascale reads the member's process memory from etcd's "
                   "/metrics (process_resident_memory_bytes) and writes "
                   f"{keys} keys of {size} bytes; not implemented in petcdctl yet",
                   EXIT_ERROR) if not a.args else bad_args("check datascale takes no "
                                                           "arguments")
