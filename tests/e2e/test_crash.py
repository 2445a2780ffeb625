"""Every acknowledged put survives SIGKILL of the server in the middle of a stream of
concurrent puts (the WAL's fsync comes before any answer; the backend commits in
batches and is repaired from the WAL at restart), also when the backend lags the WAL by
many batches: with its value and the revision its answer gave (each key is written once,
so an entry the restart applied twice, or replayed in another order, shows)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.pb.etcdserverpb import rpc_pb2_grpc as rpc_grpc
from petcd.testing import LAGGING_BACKEND as LAGGING
from petcd.testing import PetcdProcess, backend_index

# key -> (value, the revision its Put answered)
Acked = dict[bytes, tuple[bytes, int]]


async def _writer(stub: Any, wid: int, acked: Acked, stop: threading.Event,
                  cycle: int) -> None:
    seq = 0
    while not stop.is_set():
        key = b"crash/%d/%d/%d" % (cycle, wid, seq)
        value = b"v%d-%d" % (cycle, seq)
        try:
            resp = await stub.Put(rpc.PutRequest(key=key, value=value), timeout=5)
        except grpc.aio.AioRpcError:
            return  # the server died: this put may or may not have been applied
        assert resp.header.revision > 0
        acked[key] = (value, resp.header.revision)
        seq += 1


async def _stream(address: str, writers: int, acked: Acked,
                  stop: threading.Event, cycle: int) -> None:
    async with grpc.aio.insecure_channel(address) as ch:
        stub = rpc_grpc.KVStub(ch)
        await asyncio.gather(*(_writer(stub, w, acked, stop, cycle) for w in range(writers)))


def _check_all_present(address: str, acked: Acked) -> int:
    found: dict[bytes, tuple[bytes, int, int, int]] = {}
    revision = 0  # every page at the first page's revision: one consistent view
    with grpc.insecure_channel(address) as ch:
        kv = rpc_grpc.KVStub(ch)
        start = b"crash/"
        while True:  # in pages: a long soak writes more than one 4 MiB response holds
            resp = kv.Range(rpc.RangeRequest(key=start, range_end=b"crash0", limit=10_000,
                                             revision=revision), timeout=30)
            revision = revision or resp.header.revision
            found.update((item.key, (item.value, item.mod_revision, item.create_revision,
                                     item.version)) for item in resp.kvs)
            if not resp.more:
                break
            start = resp.kvs[-1].key + b"\0"
    missing = [k for k, (v, _) in acked.items() if k not in found or found[k][0] != v]
    assert not missing, f"{len(missing)} acknowledged puts lost, e.g. {missing[:5]}"
    # Written once each: created and last modified at the revision the answer gave.
    moved = [(k, rev, found[k][1:]) for k, (_, rev) in acked.items()
             if found[k][1:] != (rev, rev, 1)]
    assert not moved, f"{len(moved)} acknowledged puts at another revision, e.g. {moved[:5]}"
    return revision


def crash_cycles(member: PetcdProcess, cycles: int, writers: int, run_for: float,
                 graceful: bool = False,
                 after_kill: Callable[[Acked], None] | None = None) -> None:
    acked: Acked = {}
    last_rev = 0
    for cycle in range(cycles):
        stop = threading.Event()
        t = threading.Thread(target=asyncio.run,
                             args=(_stream(member.address, writers, acked, stop, cycle),))
        before = len(acked)
        t.start()
        deadline = time.monotonic() + 20
        # Kill once this cycle's stream is well under way.
        while time.monotonic() < deadline and len(acked) - before < 200:
            time.sleep(0.02)
        time.sleep(run_for)
        if graceful:
            assert member.stop() == 0  # SIGTERM: in-flight calls end, the store closes
        else:
            member.kill()
        stop.set()
        t.join(30)
        assert not t.is_alive()
        assert len(acked) - before >= 200, "the write stream did not get going"
        if after_kill is not None:
            after_kill(acked)
        member.start()
        rev = _check_all_present(member.address, acked)
        assert rev >= last_rev
        last_rev = rev


def test_acknowledged_puts_survive_sigkill(petcd_factory: Any) -> None:
    member = petcd_factory()
    crash_cycles(member, cycles=3, writers=32, run_for=0.3)


def test_sigterm_during_writes_exits_cleanly_and_keeps_them(petcd_factory: Any) -> None:
    member = petcd_factory()
    crash_cycles(member, cycles=2, writers=32, run_for=0.2, graceful=True)


@pytest.mark.slow
def test_acknowledged_puts_survive_many_sigkills(petcd_factory: Any) -> None:
    member = petcd_factory()
    crash_cycles(member, cycles=25, writers=64, run_for=1.0)


def test_acknowledged_puts_survive_sigkill_with_the_backend_lagging(petcd_factory: Any) -> None:
    member = petcd_factory(args=LAGGING)

    def lagging(acked: Acked) -> None:
        # Hundreds of acknowledged puts (many apply batches) exist only in the WAL.
        assert backend_index(member.data_dir) + 200 <= len(acked)
    crash_cycles(member, cycles=3, writers=16, run_for=0.3, after_kill=lagging)


@pytest.mark.parametrize("inline", ["1", "60000"])
def test_lone_writer_puts_survive_sigkill(petcd_factory: Any, inline: str) -> None:
    """One client: every put is its own WAL frame and fdatasync (server/raftnode/
    walwriter.py): inline on the loop thread while the disk is fast (under 1 ms; with
    60000 any fdatasync counts as fast, so nearly all are inline), else native AIO."""
    member = petcd_factory(env={"PETCD_WAL_INLINE_FAST_MS": inline})
    crash_cycles(member, cycles=2, writers=1, run_for=0.3)


def test_puts_survive_sigkill_with_fdatasync_on_the_wal_thread(petcd_factory: Any) -> None:
    """The fallback where native AIO is unavailable keeps the same promise."""
    member = petcd_factory(env={"PETCD_WAL_AIO": "0"})
    crash_cycles(member, cycles=2, writers=16, run_for=0.3)
