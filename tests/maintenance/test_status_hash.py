"""Status, Hash and HashKV through etcdctl and gRPC, compared with etcd 3.4 where the
output is comparable (shapes, wording, errors); hashes agree across restarts and
defragmentation."""

from __future__ import annotations

import json
from typing import Any

import grpc
import pytest

from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.testing import Etcdctl, MemberProcess

from .conftest import Stubs, error_lines, needs_etcd


def shape(value: Any) -> Any:
    """The structure of a JSON document: keys and types, not values."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(v) for v in value]
    return type(value).__name__


def cells(line: str) -> list[str]:
    return [c.strip() for c in line.split("|")[1:-1]]


def load(ctl: Etcdctl, prefix: str) -> None:
    for i in range(5):
        ctl.ok("put", f"{prefix}/{i}", f"value-{i}")
    ctl.ok("put", f"{prefix}/0", "again")
    ctl.ok("del", f"{prefix}/1")


@needs_etcd
def test_endpoint_status_json_and_table_like_etcd(petcd: MemberProcess, etcd: MemberProcess,
                                                  etcdctl: Etcdctl,
                                                  etcd_etcdctl: Etcdctl) -> None:
    load(etcdctl, "st")
    load(etcd_etcdctl, "st")
    ours = json.loads(etcdctl.ok("endpoint", "status", "-w", "json"))
    theirs = json.loads(etcd_etcdctl.ok("endpoint", "status", "-w", "json"))
    # etcd 3.4's version string is shorter, the rest has the same structure.
    assert shape(ours) == shape(theirs)
    st = ours[0]["Status"]
    assert st["leader"] == st["header"]["member_id"]
    assert st["raftAppliedIndex"] == st["raftIndex"] > 0
    assert st["dbSize"] >= st["dbSizeInUse"] > 0
    assert st["header"]["revision"] == json.loads(etcdctl.ok("get", "x", "-w", "json"))[
        "header"]["revision"]
    ours_table = etcdctl.ok("endpoint", "status", "-w", "table").splitlines()
    theirs_table = etcd_etcdctl.ok("endpoint", "status", "-w", "table").splitlines()
    assert cells(ours_table[1]) == cells(theirs_table[1])  # the header row
    row = cells(ours_table[3])
    assert row[:2] == [petcd.endpoint, f"{st['header']['member_id']:x}"]
    assert row[4:6] == ["true", "false"] and row[9] == ""  # leader, learner, no errors
    simple = etcdctl.ok("endpoint", "status").strip().split(", ")
    assert simple[0] == petcd.endpoint and len(simple) == len(
        etcd_etcdctl.ok("endpoint", "status").strip().split(", "))


@needs_etcd
def test_hashkv_like_etcd(etcdctl: Etcdctl, etcd_etcdctl: Etcdctl) -> None:
    load(etcdctl, "hk")
    load(etcd_etcdctl, "hk")
    ours = json.loads(etcdctl.ok("endpoint", "hashkv", "-w", "json"))
    theirs = json.loads(etcd_etcdctl.ok("endpoint", "hashkv", "-w", "json"))
    assert shape(ours) == shape(theirs)
    assert ours[0]["HashKV"]["hash"] != 0
    for ctl in (etcdctl, etcd_etcdctl):
        rev = json.loads(ctl.ok("get", "x", "-w", "json"))["header"]["revision"]
        ctl.ok("compact", str(rev - 2))
    outcomes = []
    for ctl in (etcdctl, etcd_etcdctl):
        rev = json.loads(ctl.ok("get", "x", "-w", "json"))["header"]["revision"]
        res = []
        for r in (rev - 3, rev + 1):  # compacted, future
            out = ctl("endpoint", "hashkv", "--rev", str(r))
            res.append((out.returncode, error_lines(out.stderr)))
        outcomes.append(res)
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][0][1][-1] == "Error: etcdserver: mvcc: required revision has been " \
                                    "compacted"
    table = etcdctl.ok("endpoint", "hashkv", "-w", "table").splitlines()
    assert cells(table[1]) == cells(
        etcd_etcdctl.ok("endpoint", "hashkv", "-w", "table").splitlines()[1])


def test_hash_and_hashkv_stable_across_restart_and_defrag(petcd_factory: Any) -> None:
    m = petcd_factory()
    ctl = Etcdctl(m.endpoint)
    load(ctl, "a")
    ctl.ok("compact", "3")
    stubs = Stubs(m)
    h1 = stubs.maintenance.Hash(rpc.HashRequest())
    kv1 = stubs.maintenance.HashKV(rpc.HashKVRequest())
    at4 = stubs.maintenance.HashKV(rpc.HashKVRequest(revision=4))
    assert h1.header.revision == kv1.header.revision == 8
    assert (kv1.compact_revision, kv1.hash_revision, at4.hash_revision) == (3, 8, 4)
    assert at4.hash != kv1.hash
    assert h1.header.member_id and h1.header.cluster_id and h1.header.raft_term
    stubs.close()
    ctl.ok("defrag")
    m.stop()
    m.start()
    stubs = Stubs(m)
    assert stubs.maintenance.HashKV(rpc.HashKVRequest()).hash == kv1.hash
    assert stubs.maintenance.HashKV(rpc.HashKVRequest(revision=4)).hash == at4.hash
    assert stubs.maintenance.Hash(rpc.HashRequest()).hash == h1.hash
    ctl.ok("put", "a/new", "v")
    assert stubs.maintenance.HashKV(rpc.HashKVRequest(revision=8)).hash == kv1.hash
    assert stubs.maintenance.Hash(rpc.HashRequest()).hash != h1.hash
    with pytest.raises(grpc.RpcError) as e:  # served (by the Raft driver) in this service
        stubs.maintenance.MoveLeader(rpc.MoveLeaderRequest(targetID=1))
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    stubs.close()


@needs_etcd
def test_alarm_list_and_disarm_when_none_like_etcd(etcdctl: Etcdctl,
                                                   etcd_etcdctl: Etcdctl) -> None:
    for args in (("alarm", "list"), ("alarm", "list", "-w", "json"), ("alarm", "disarm"),
                 ("alarm", "disarm", "-w", "json")):
        assert etcdctl.ok(*args) == etcd_etcdctl.ok(*args)
