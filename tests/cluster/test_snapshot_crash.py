"""A new member killed (-9) while it receives the leader's backend, and again right after
it received it (saving the marker, swapping the file in, reloading), restarts and catches
up with every key; the leader's streamed copy leaves nothing behind."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import grpc

from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.pb.etcdserverpb import rpc_pb2_grpc as rpc_grpc
from petcd.testing import Etcdctl, PetcdCluster, PetcdProcess

from .test_cluster import _member_add

KEYS = 4000
VALUE = 4096  # ~16 MB of values: the stream takes long enough to be caught in the act


def _load(m: PetcdProcess) -> None:
    with grpc.insecure_channel(m.address) as ch:
        stub = rpc_grpc.KVStub(ch)
        for start in range(0, KEYS, 100):
            ops = [rpc.RequestOp(request_put=rpc.PutRequest(
                key=b"big/%05d" % i, value=(b"%05d" % i) * (VALUE // 5)))
                for i in range(start, start + 100)]
            stub.Txn(rpc.TxnRequest(success=ops), timeout=30)


def _wait_for(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.002)


def _receiving(snap_dir: Path) -> bool:
    return snap_dir.is_dir() and any(p.name.endswith(".tmp") for p in snap_dir.iterdir())


def _hash_kv(m: PetcdProcess, revision: int) -> int:
    with grpc.insecure_channel(m.address) as ch:
        resp = rpc_grpc.MaintenanceStub(ch).HashKV(rpc.HashKVRequest(revision=revision),
                                                    timeout=30)
    return int(resp.hash)


def test_new_member_killed_while_receiving_and_installing_a_snapshot_recovers(
        cluster_factory: Callable[..., PetcdCluster]) -> None:
    c = cluster_factory(args=["--snapshot-count", "20",
                              "--experimental-snapshot-catchup-entries", "5",
                              "--strict-reconfig-check=false"])
    leader = c.wait_leader()
    _load(leader)
    joiner = c.add_process("m3")
    out = _member_add(Etcdctl(c.endpoints), "m3", f"--peer-urls={joiner.peer_url}")
    assert "added to cluster" in out
    snap_dir = Path(joiner.data_dir) / "member" / "snap"

    # 1. In the middle of the stream: a partial file under a temporary name.
    joiner.start(wait=False)
    _wait_for(lambda: _receiving(snap_dir), 60, "the new member never received a snapshot")
    joiner.kill()
    assert _receiving(snap_dir)  # (killed in the act) ...
    assert not list(snap_dir.glob("*.snap.db"))  # ... and nothing passes for whole

    # 2. Once it has the whole file: marker, swap and reload race the kill.
    joiner.start(wait=False)
    _wait_for(lambda: "received the backend of snapshot" in joiner.log_tail(200000)
              .rsplit("--- start:", 1)[-1], 60, "no snapshot after the restart")
    joiner.kill()

    # 3. A plain restart: it catches up, from what it has or from another snapshot.
    joiner.start()
    committed = c.statuses([leader])[leader.name].committed
    c.wait_applied(committed, [joiner], timeout=60)
    with grpc.insecure_channel(joiner.address) as ch:
        stub = rpc_grpc.KVStub(ch)
        resp = stub.Range(rpc.RangeRequest(key=b"big/", range_end=b"big0", serializable=True,
                                           keys_only=True), timeout=30)
        assert len(resp.kvs) == KEYS
        last = stub.Range(rpc.RangeRequest(key=b"big/%05d" % (KEYS - 1), serializable=True),
                          timeout=30)
        assert last.kvs[0].value == (b"%05d" % (KEYS - 1)) * (VALUE // 5)
        revision = last.header.revision
    assert _hash_kv(joiner, revision) == _hash_kv(leader, revision)
    # It serves writes as a full member, and nothing of the transfers is left behind.
    with grpc.insecure_channel(leader.address) as ch:
        rpc_grpc.KVStub(ch).Put(rpc.PutRequest(key=b"after", value=b"x"), timeout=10)
    c.wait_applied(c.statuses([leader])[leader.name].committed, [joiner], timeout=30)
    assert not _receiving(snap_dir)
    for m in c.running():
        if m is not joiner:
            assert not list((Path(m.data_dir) / "member" / "snap").glob("*.tmp"))
