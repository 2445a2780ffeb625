"""What a member's start costs must not grow with the keys it holds (issue 16, scale):
nothing walks every key at start. The keys gauge (etcd_debugging_mvcc_keys_total) is
counted when /metrics is first scraped, then kept by the writes; registering the
metric (at start) reads no key. Real Nodes in one process (tests/server/inproc.py)."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import generate_latest

from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.server.proposal import DELETE_RANGE

from .inproc import Cluster, run
from .test_raftnode import put


def _keys_gauge(c: Cluster) -> float:
    text = generate_latest(c.nodes[0].metrics.registry).decode()
    line = next(ln for ln in text.splitlines()
                if ln.startswith("etcd_debugging_mvcc_keys_total "))
    return float(line.split()[1])


def test_start_walks_no_keys_and_the_keys_gauge_counts_them_when_scraped(
        tmp_path: Path) -> None:
    async def fill(c: Cluster) -> None:
        leader = await c.leader()
        for i in range(40):
            await put(leader, b"k%02d" % i)
        await put(leader, b"long/" + b"x" * 600)  # a long key (a surrogate in the index)
        req = rpc.DeleteRangeRequest(key=b"k3", range_end=b"k4")  # k30..k39
        await leader.propose(DELETE_RANGE, req.SerializeToString(), req)

    async def restarted(c: Cluster) -> None:
        await c.leader()
        store = c.nodes[0].store
        assert store._live_keys is None  # nothing counted the keys at start
        assert _keys_gauge(c) == 31
        await put(c.nodes[0], b"k99")  # kept by the writes from then on
        assert store._live_keys == 32 and _keys_gauge(c) == 32

    run(fill, tmp_path, size=1)
    run(restarted, tmp_path, size=1)


def test_the_keys_gauge_counts_without_long_keys(tmp_path: Path) -> None:
    async def body(c: Cluster) -> None:
        leader = await c.leader()
        for i in range(20):
            await put(leader, b"k%02d" % i, b"v%d" % i)
        await put(leader, b"k05", b"again")  # a second version: still one key
        req = rpc.DeleteRangeRequest(key=b"k1", range_end=b"k2")  # k10..k19
        await leader.propose(DELETE_RANGE, req.SerializeToString(), req)
        assert _keys_gauge(c) == 10

    run(body, tmp_path, size=1)
