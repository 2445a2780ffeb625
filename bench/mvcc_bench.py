"""Micro-benchmark of the MVCC store, no gRPC: puts/s (batches of 100 puts
per LMDB write transaction) and single-key ranges/s, at the store level
(serialized KeyValues) and through KVRequests (protobuf requests/responses);
then one hot key put many times, to show that a long history does not slow
puts down.

    PYTHONPATH=src python bench/mvcc_bench.py [--keys 10000] [--puts 100000]
        [--hot 100000] [--val-size 8] [--sync] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import random
import shutil
import tempfile
import time
from collections.abc import Callable

from petcd.mvcc import Backend, KVStore
from petcd.pb.etcdserverpb import rpc_pb2 as pb
from petcd.server.kv_requests import KVRequests

BATCH = 100


def rate(label: str, n: int, took: tuple[float, float]) -> None:
    wall, cpu = took
    print(f"{label:<46} {n / wall:>10,.0f}/s  {wall / n * 1e6:6.2f} us wall, "
          f"{cpu / n * 1e6:6.2f} us CPU each")


def clocks() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def since(start: tuple[float, float]) -> tuple[float, float]:
    wall, cpu = clocks()
    return wall - start[0], cpu - start[1]


def bench_puts(
    backend: Backend, store: KVStore, keys: list[bytes], value: bytes, n: int
) -> tuple[float, float]:
    t0 = clocks()
    done = 0
    while done < n:
        with backend.begin_write() as batch:
            for i in range(done, min(done + BATCH, n)):
                tw = store.write(batch)
                tw.put(keys[i % len(keys)], value)
                tw.end()
        done += BATCH
    return since(t0)


def bench_applier_puts(
    backend: Backend, kv: KVRequests, reqs: list[pb.PutRequest], n: int
) -> tuple[float, float]:
    t0 = clocks()
    done = 0
    index = backend.consistent_index()[0]
    while done < n:
        with backend.begin_write() as batch:
            for i in range(done, min(done + BATCH, n)):
                kv.put(batch, reqs[i % len(reqs)])
            index += 1
            batch.set_consistent_index(index, 1)
        done += BATCH
    return since(t0)


def bench_reads(fn: Callable[[int], object], n: int) -> tuple[float, float]:
    t0 = clocks()
    for i in range(n):
        fn(i)
    return since(t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--keys", type=int, default=10_000, help="distinct keys (default 10000)")
    ap.add_argument("--puts", type=int, default=100_000, help="puts per put phase")
    ap.add_argument("--reads", type=int, default=100_000, help="ranges per read phase")
    ap.add_argument("--hot", type=int, default=100_000, help="puts to the one hot key")
    ap.add_argument("--val-size", type=int, default=8, help="value bytes (etcd benchmark: 8)")
    ap.add_argument("--sync", action="store_true", help="fsync every batch commit (default off)")
    ap.add_argument("--profile", action="store_true", help="cProfile the applier put phase")
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="petcd-mvcc-bench-")
    try:
        backend = Backend(os.path.join(tmp, "db"), sync=args.sync)
        store = KVStore(backend)
        kv = KVRequests(store)
        rnd = random.Random(1)
        keys = [b"key-%08d" % i for i in range(args.keys)]
        rnd.shuffle(keys)
        value = b"v" * args.val_size
        reqs = [pb.PutRequest(key=k, value=value) for k in keys]
        print(f"{args.keys} keys, {args.val_size}-byte values, {BATCH} puts per batch, "
              f"sync={'on' if args.sync else 'off'}")

        rate("store put (TxnWrite.put)", args.puts,
             bench_puts(backend, store, keys, value, args.puts))
        if args.profile:
            prof = cProfile.Profile()
            prof.enable()
        rate("applier put (PutRequest -> PutResponse)", args.puts,
             bench_applier_puts(backend, kv, reqs, args.puts))
        if args.profile:
            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(15)

        nk = len(keys)
        with store.read() as r:
            rate("store get, current rev (one snapshot)", args.reads,
                 bench_reads(lambda i: r.get(keys[i % nk]), args.reads))
        rate("store range, current rev (own snapshot)", args.reads,
             bench_reads(lambda i: store.range(keys[i % nk]), args.reads))
        rreqs = [pb.RangeRequest(key=k) for k in keys]
        rate("applier range (RangeRequest -> RangeResponse)", args.reads,
             bench_reads(lambda i: kv.range(rreqs[i % nk]), args.reads))
        old = max(2, store.current_revision // 2)
        hist = [pb.RangeRequest(key=k, revision=old) for k in keys]
        rate("applier range at a historical revision", args.reads,
             bench_reads(lambda i: kv.range(hist[i % nk]), args.reads))
        revs = store.current_revision
        t0 = clocks()
        with backend.begin_write() as batch:
            store.compact(batch, revs - 1)
        wall, cpu = since(t0)
        print(f"compact {revs - 1} revisions of {len(keys)} keys: {wall:.2f} s wall, "
              f"{cpu / revs * 1e6:.2f} us CPU per revision (the apply loop waits meanwhile)")
        backend.close()

        # One hot key: etcd's benchmark default key space is a single key.
        backend = Backend(os.path.join(tmp, "hot"), sync=args.sync)
        store = KVStore(backend)
        chunk = max(args.hot // 5, BATCH)
        print(f"hot key: {args.hot} puts to one key, in chunks of {chunk}")
        for c in range(0, args.hot, chunk):
            n = min(chunk, args.hot - c)
            rate(f"  store put, hot key, puts {c}..{c + n}", n,
                 bench_puts(backend, store, [b"hot"], value, n))
        with store.read() as r:
            rate("  store get, hot key", args.reads,
                 bench_reads(lambda i: r.get(b"hot"), args.reads))
            mid = store.current_revision // 2
            rate("  store get, hot key at a historical revision", args.reads,
                 bench_reads(lambda i: r.get(b"hot", mid), args.reads))
        backend.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
