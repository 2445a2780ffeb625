"""GET /debug/raft on a real member: Raft's state and a summarised log tail, never values."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from petcd.api.raft_status import MAX_TAIL, summarize
from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.pb.internalpb.internal_pb2 import InternalRequest, V2Request
from petcd.raft import ConfChange, ConfChangeType, Entry, EntryType, encode_conf_change
from petcd.testing import Etcdctl, MemberProcess, PetcdCluster


def _get(m: MemberProcess, path: str) -> Any:
    with urllib.request.urlopen(m.http_endpoint + path, timeout=10) as resp:
        assert resp.headers["Content-Type"] == "application/json"
        return json.loads(resp.read())


def test_single_member_status(petcd: MemberProcess, etcdctl: Etcdctl) -> None:
    etcdctl.ok("put", "rs/key", "a-secret-value")
    etcdctl.ok("del", "rs/key")
    doc = _get(petcd, "/debug/raft")
    assert doc["role"] == "leader"
    assert doc["name"] == "default"
    assert doc["leader"] == doc["id"] == doc["vote"]
    assert doc["term"] >= 1
    assert doc["commit"] == doc["lastIndex"] == doc["entries"][-1]["index"]
    assert doc["applied"] == doc["commit"]
    assert doc["lastTerm"] == doc["term"]
    assert doc["revision"] >= 3
    assert [m["name"] for m in doc["members"]] == ["default"]
    summaries = [e["summary"] for e in doc["entries"]]
    assert "put key=rs/key (14 bytes)" in summaries
    assert "delete key=rs/key" in summaries
    assert "a-secret-value" not in json.dumps(doc)
    me = doc["progress"][doc["id"]]
    assert me["match"] == doc["lastIndex"] and me["state"] == "replicate"


def test_tail_is_bounded(petcd: MemberProcess, etcdctl: Etcdctl) -> None:
    for i in range(3):
        etcdctl.ok("put", f"tail/{i}", "v")
    last = _get(petcd, "/debug/raft")["lastIndex"]
    two = _get(petcd, "/debug/raft?tail=2")["entries"]
    assert [e["index"] for e in two] == [last - 1, last]
    assert _get(petcd, "/debug/raft?tail=0")["entries"] == []
    assert len(_get(petcd, "/debug/raft?tail=99999")["entries"]) <= MAX_TAIL
    assert len(_get(petcd, "/debug/raft?tail=x")["entries"]) >= 2  # the default


def test_only_get(petcd: MemberProcess) -> None:
    req = urllib.request.Request(petcd.http_endpoint + "/debug/raft", data=b"{}",
                                 method="POST")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 405


def _entry(**request: Any) -> Entry:
    return Entry(term=2, index=7, data=InternalRequest(id=1, **request).SerializeToString())


@pytest.mark.parametrize(("entry", "text"), [
    (_entry(put=rpc.PutRequest(key=b"k", value=b"xyz")), "put key=k (3 bytes)"),
    (_entry(put=rpc.PutRequest(key=b"k" * 50)), "put key=" + "k" * 40 + "... (0 bytes)"),
    (_entry(put=rpc.PutRequest(key=b"\x00\xff\n")), "put key=\\x00\\xff\\n (0 bytes)"),
    (_entry(delete_range=rpc.DeleteRangeRequest(key=b"a", range_end=b"b")),
     "delete key=a (range)"),
    (_entry(txn=rpc.TxnRequest(success=[rpc.RequestOp()])), "txn (0 compares, 1 then, 0 else)"),
    (_entry(compaction=rpc.CompactionRequest(revision=5)), "compact revision=5"),
    (_entry(lease_grant=rpc.LeaseGrantRequest(ID=255, TTL=10)), "lease grant id=ff ttl=10"),
    (_entry(auth_user_add=rpc.AuthUserAddRequest(name="u", password="pw")), "auth user add"),
    (_entry(v2=V2Request(method="PUT", path=b"/1/a/b", val=b"xyz")), "v2 PUT key=/a/b (3 bytes)"),
    (_entry(v2=V2Request(method="SYNC", time=5)), "v2 expire TTL keys due"),
    (Entry(term=2, index=7), "empty (a new leader's first entry)"),
    (Entry(term=2, index=7, data=b"\xff\xff"), "undecodable (2 bytes)"),
    (Entry(term=2, index=7, type=EntryType.CONF_CHANGE,
           data=encode_conf_change(ConfChange(ConfChangeType.REMOVE_NODE, 0xab))),
     "conf change: remove member ab"),
])
def test_summaries(entry: Entry, text: str) -> None:
    assert summarize(entry) == text


def test_learner_and_leader_progress(tmp_path: Path) -> None:
    """A learner says so; the leader reports its follower's match and next."""
    with PetcdCluster(tmp_path, 1, args=["--heartbeat-interval", "50",
                                         "--election-timeout", "500"]) as c:
        leader = c.members[0]
        proc = c.add_process("learner")
        out = Etcdctl(leader.endpoint).ok("member", "add", "learner", "--learner",
                                          f"--peer-urls={proc.peer_url}")
        assert "added to cluster" in out
        proc.start()
        Etcdctl(leader.endpoint).ok("put", "rs/learner", "v")

        def both() -> tuple[dict[str, Any], dict[str, Any]] | None:
            lead, learner = _get(leader, "/debug/raft"), _get(proc, "/debug/raft")
            pr = lead.get("progress", {}).get(learner["id"])
            if pr is None or pr["match"] != lead["lastIndex"] or \
                    learner["applied"] != lead["commit"]:
                return None
            return lead, learner

        deadline = time.monotonic() + 30
        while (got := both()) is None:
            assert time.monotonic() < deadline, "the learner did not catch up"
            time.sleep(0.1)
        lead, learner = got
        assert learner["role"] == "learner"
        assert learner["leader"] == lead["id"] and learner["term"] == lead["term"]
        pr = lead["progress"][learner["id"]]
        assert pr["learner"] is True and pr["next"] == lead["lastIndex"] + 1
        assert pr["state"] == "replicate"
        assert {m["name"]: m["learner"] for m in lead["members"]} == {
            "m0": False, "learner": True}
