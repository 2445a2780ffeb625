"""The NOSPACE alarm end to end, petcd against etcd 3.4 with the same small
--quota-backend-bytes: writes refused with etcd's error, deletes and compaction allowed,
the alarm listed and reported by Status and /health, kept across a restart, and lifted by
compact + defrag + disarm. Both transcripts must be identical."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import grpc
import pytest

from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.testing import Etcdctl, MemberProcess

from .conftest import Stubs, error_lines, needs_etcd, restart

QUOTA = 1_000_000
VALUE = "x" * 100_000


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def grpc_outcome(call: object, req: object) -> str:
    try:
        call(req, timeout=10)  # type: ignore[operator]
    except grpc.RpcError as e:
        return f"{e.code().name}: {e.details()}"  # type: ignore[attr-defined]
    return "ok"


def scenario(m: MemberProcess) -> list[str]:
    ctl = Etcdctl(m.endpoint)
    stubs = Stubs(m)
    out: list[str] = []
    mid = json.loads(ctl.ok("endpoint", "status", "-w", "json"))[0]["Status"]["header"][
        "member_id"]

    def norm(text: str) -> str:
        return text.replace(str(mid), "<id>").replace(m.endpoint, "<ep>").strip()

    puts = 0
    while True:
        r = ctl("put", f"k{puts}", input=VALUE)
        if r.returncode != 0:
            out.append(f"put refused: {error_lines(r.stderr)}")
            break
        puts += 1
        assert puts < 40, "the quota never hit"
    out.append("alarm list: " + norm(ctl.ok("alarm", "list")))
    out.append("alarm list json: " + norm(ctl.ok("alarm", "list", "-w", "json")))
    status = json.loads(ctl.ok("endpoint", "status", "-w", "json"))[0]["Status"]
    # Exact wording, trailing space included.
    out.append(f"status errors: {[e.replace(str(mid), '<id>') for e in status['errors']]}")
    out.append(f"health: {http_get(m.endpoint + '/health')}")
    out.append(f"health exclude: {http_get(m.endpoint + '/health?exclude=NOSPACE')}")
    r = ctl("put", "small", "v")
    out.append(f"small put: {r.returncode} {error_lines(r.stderr)}")
    put_op = rpc.RequestOp(request_put=rpc.PutRequest(key=b"t", value=b"v"))
    del_op = rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=b"nothing"))
    out.append("txn put: " + grpc_outcome(stubs.kv.Txn, rpc.TxnRequest(success=[put_op])))
    out.append("txn put in failure: " + grpc_outcome(
        stubs.kv.Txn, rpc.TxnRequest(success=[del_op], failure=[put_op])))
    out.append("txn delete: " + grpc_outcome(stubs.kv.Txn, rpc.TxnRequest(success=[del_op])))
    out.append("delete: " + ctl.ok("del", "k0").strip())
    stubs.close()

    restart(m)
    out.append("after restart: " + norm(ctl.ok("alarm", "list")))
    r = ctl("put", "small", "v")
    out.append(f"small put after restart: {r.returncode} {error_lines(r.stderr)}")

    ctl.ok("del", "k", "--prefix")
    rev = json.loads(ctl.ok("get", "nothing", "-w", "json"))["header"]["revision"]
    out.append("compact: " + ctl.ok("compact", str(rev)).replace(str(rev), "<rev>").strip())
    before = json.loads(ctl.ok("endpoint", "status", "-w", "json"))[0]["Status"]["dbSize"]
    out.append("defrag: " + norm(ctl.ok("defrag")))
    after = json.loads(ctl.ok("endpoint", "status", "-w", "json"))[0]["Status"]["dbSize"]
    out.append(f"defrag shrank the file below the quota: {after < before and after < QUOTA}")
    r = ctl("put", "small", "v")
    out.append(f"put before disarm: {r.returncode} {error_lines(r.stderr)}")
    out.append("disarm: " + norm(ctl.ok("alarm", "disarm")))
    out.append("disarm again: " + norm(ctl.ok("alarm", "disarm", "-w", "json")))
    out.append("alarm list: " + norm(ctl.ok("alarm", "list")))
    out.append("put after disarm: " + ctl.ok("put", "small", "v").strip())
    out.append(f"health after: {http_get(m.endpoint + '/health')}")
    return out


@needs_etcd
def test_nospace_scenario_matches_etcd(petcd_factory: object, etcd_factory: object) -> None:
    args = ["--quota-backend-bytes", str(QUOTA)]
    petcd = petcd_factory(args=args)  # type: ignore[operator]
    etcd = etcd_factory(args=args)  # type: ignore[operator]
    ours = scenario(petcd)
    theirs = scenario(etcd)
    assert ours == theirs
    assert "put refused: ['Error: etcdserver: mvcc: database space exceeded']" in ours
    assert "alarm list: memberID:<id> alarm:NOSPACE" in ours


@pytest.mark.parametrize("quota", ["-1"])
def test_negative_quota_means_none(petcd_factory: object, quota: str) -> None:
    m = petcd_factory(args=["--quota-backend-bytes", quota])  # type: ignore[operator]
    ctl = Etcdctl(m.endpoint)
    for i in range(3):
        ctl.ok("put", f"k{i}", input=VALUE)
    assert ctl.ok("alarm", "list") == ""
