"""The v2 store on a 3-member petcd cluster: every member answers the same, a follower
forwards writes, one of many concurrent prevExist=false creators wins, POSTs get
distinct ordered names, TTL expiry reaches every member through the log, and v2 state
survives kill -9 and a follower catching up from the leader's snapshot."""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from petcd.testing import (
    FAST_ELECTIONS,
    EtcdProcess,
    PetcdCluster,
    PetcdProcess,
    Started,
    have_etcd,
)

from .client import LongPoll, call

FAST = list(FAST_ELECTIONS)
ARGS = [*FAST, "--enable-v2", "--snapshot-count", "50",
        "--experimental-snapshot-catchup-entries", "10"]


@pytest.fixture
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[PetcdCluster]:
    with Started(request) as started:
        yield started.add(PetcdCluster(tmp_path / "c", 3, args=ARGS)).start()


def _index(m: PetcdProcess) -> int:
    return int(call(m.endpoint, "GET", "/v2/keys/").headers["x-etcd-index"])


def _converged(c: PetcdCluster, members: list[PetcdProcess] | None = None,
               timeout: float = 30.0) -> int:
    """Waits until every member's v2 index is the same; returns it."""
    members = members or c.running()
    deadline = time.monotonic() + timeout
    while True:
        seen = {_index(m) for m in members}
        if len(seen) == 1:
            return seen.pop()
        assert time.monotonic() < deadline, f"v2 indexes differ: {seen}"
        time.sleep(0.1)


def _tree(m: PetcdProcess) -> Any:
    return _tree_at(m.endpoint)


def _tree_at(url: str) -> Any:
    r = call(url, "GET", "/v2/keys/?recursive=true&sorted=true")
    assert r.status == 200

    def strip(n: Any) -> Any:  # ttl depends on when it is read
        if isinstance(n, dict):
            return {k: strip(v) for k, v in n.items() if k != "ttl"}
        if isinstance(n, list):
            return [strip(x) for x in n]
        return n
    return strip(r.json)


def _converged_urls(urls: list[str], timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while True:
        seen = {int(call(u, "GET", "/v2/keys/").headers["x-etcd-index"]) for u in urls}
        if len(seen) == 1:
            return seen.pop()
        assert time.monotonic() < deadline, f"v2 indexes differ: {seen}"
        time.sleep(0.1)


def _locks_and_queues(urls: list[str]) -> None:
    """The lock and queue patterns of the v2 API through every member at once: one of
    many prevExist=false creators wins; concurrent POSTs get distinct names listed in
    creation order; every member then shows the same tree."""
    def create(n: int) -> Any:
        return call(urls[n % 3], "PUT", "/v2/keys/lock", f"value=owner{n}"
                    "&prevExist=false&ttl=60")
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        results = list(pool.map(create, range(30)))
    won = [r for r in results if r.status == 201]
    assert len(won) == 1, [r.status for r in results]
    assert all(r.status == 412 and r.json["errorCode"] == 105 for r in results
               if r.status != 201)
    owner = won[0].json["node"]["value"]
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        posted = list(pool.map(lambda n: call(urls[n % 3], "POST", "/v2/keys/queue",
                                              f"value=job{n}"), range(30)))
    assert all(r.status == 201 for r in posted)
    names = sorted(r.json["node"]["key"] for r in posted)
    assert len(set(names)) == 30
    _converged_urls(urls)
    trees = [_tree_at(u) for u in urls]
    assert trees[0] == trees[1] == trees[2]
    listed = next(n for n in trees[0]["node"]["nodes"] if n["key"] == "/queue")["nodes"]
    assert [n["key"] for n in listed] == names
    assert [n["createdIndex"] for n in listed] == sorted(n["createdIndex"] for n in listed)
    lock = next(n for n in trees[0]["node"]["nodes"] if n["key"] == "/lock")
    assert lock["value"] == owner


def test_locks_and_queues_on_etcd(tmp_path: Path) -> None:
    """The same checks on a 3-member etcd 3.4 cluster (what petcd's must match)."""
    if not have_etcd():
        pytest.skip("etcd 3.4 not installed")
    members = [EtcdProcess(tmp_path / f"e{i}", name=f"e{i}",
                           args=["--enable-v2=true", *FAST]) for i in range(3)]
    initial = ",".join(f"{m.name}={m.peer_url}" for m in members)
    try:
        for m in members:
            m.initial_cluster = initial
            m.start(wait=False)
        for m in members:
            m.wait_ready()
        _locks_and_queues([m.endpoint for m in members])
    finally:
        for m in members:
            m.kill()


def test_cluster_agreement_locks_and_queues(cluster: PetcdCluster) -> None:
    c = cluster
    leader = c.wait_leader()
    followers = c.followers(leader)
    # A follower forwards the write; its answer is its own apply of it.
    r = call(followers[0].endpoint, "PUT", "/v2/keys/cfg/a", "value=1")
    assert r.status == 201 and r.json["node"]["value"] == "1"
    r = call(followers[1].endpoint, "GET", "/v2/keys/cfg/a?quorum=true")
    assert r.status == 200 and r.json["node"]["value"] == "1"
    members = c.members
    _locks_and_queues([m.endpoint for m in members])
    # A wait on one follower hears a write made through the other.
    poll = LongPoll(followers[1].endpoint, "/v2/keys/cfg?wait=true&recursive=true")
    assert poll.status == 200
    call(followers[0].endpoint, "PUT", "/v2/keys/cfg/b", "value=2")
    ev = poll.result().json
    assert (ev["action"], ev["node"]["key"], ev["node"]["value"]) == ("set", "/cfg/b", "2")
    # TTL expiry is decided by the leader and applied by all, at the same index.
    r = call(followers[0].endpoint, "PUT", "/v2/keys/eph", "value=x&ttl=1")
    set_index = r.json["node"]["modifiedIndex"]
    expired = [LongPoll(m.endpoint, f"/v2/keys/eph?wait=true&waitIndex={set_index + 1}")
               for m in members]
    events = [p.result().json for p in expired]
    assert all(e["action"] == "expire" for e in events)
    assert len({e["node"]["modifiedIndex"] for e in events}) == 1
    stats = [call(m.endpoint, "GET", "/v2/stats/store").json for m in members]
    assert all(s["expireCount"] == 1 for s in stats)
    # Leader and follower views of /v2/members and stats.
    assert call(leader.endpoint, "GET", "/v2/stats/leader").status == 200
    r = call(followers[0].endpoint, "GET", "/v2/stats/leader")
    assert (r.status, r.json) == (403, {"message": "not current leader"})
    ids = {m["id"] for m in call(leader.endpoint, "GET", "/v2/members").json["members"]}
    assert len(ids) == 3 and set(call(leader.endpoint, "GET", "/v2/stats/leader").json[
        "followers"]) == ids - {f"{c.member_id(leader):x}"}
    # Append counts: the leader sent appends, a follower received them, and the
    # rates over recent appends show while the writes above are under a second old.
    for _ in range(5):
        call(leader.endpoint, "PUT", "/v2/keys/statkey", "value=s")
    own, other = (call(m.endpoint, "GET", "/v2/stats/self").json
                  for m in (leader, followers[0]))
    assert own["state"] == "StateLeader" and own["sendAppendRequestCnt"] > 0
    assert own["sendPkgRate"] > 0 and own["sendBandwidthRate"] > 0
    assert other["state"] == "StateFollower" and other["recvAppendRequestCnt"] > 0
    assert other["leaderInfo"]["leader"] == f"{c.member_id(leader):x}"
    machines = call(followers[0].endpoint, "GET", "/v2/machines").raw.decode().split(", ")
    assert sorted(machines) == sorted(m.endpoint for m in members)
    # Membership changes through /v2/members (from a follower): add, update, remove.
    peer = "http://127.0.0.1:1"
    deadline = time.monotonic() + 30
    while True:  # (refused as etcd does until every member has been connected for 5 s)
        r = call(followers[0].endpoint, "POST", "/v2/members", f'{{"peerURLs":["{peer}"]}}',
                 ctype="application/json")
        if r.status != 500 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert r.status == 201, r
    new = r.json
    assert (new["name"], new["peerURLs"], new["clientURLs"]) == ("", [peer], [])
    r = call(leader.endpoint, "POST", "/v2/members", f'{{"peerURLs":["{peer}"]}}',
             ctype="application/json")
    assert (r.status, r.json) == (409, {"message": "membership: peerURL exists"})
    r = call(leader.endpoint, "PUT", f"/v2/members/{new['id']}",
             '{"peerURLs":["http://127.0.0.1:2"]}', ctype="application/json")
    assert r.status == 204, r
    # (a follower's own view: it has the update once it applied the entry, which its
    # next message from the leader commits; poll as a client of any member must)
    want = {"id": new["id"], "name": "", "peerURLs": ["http://127.0.0.1:2"], "clientURLs": []}
    deadline = time.monotonic() + 10
    while want not in (listed := call(followers[1].endpoint, "GET",
                                      "/v2/members").json["members"]):
        assert time.monotonic() < deadline, listed
        time.sleep(0.05)
    assert call(leader.endpoint, "DELETE", f"/v2/members/{new['id']}").status == 204
    r = call(leader.endpoint, "DELETE", f"/v2/members/{new['id']}")
    assert (r.status, r.json) == (410, {"message": f"Member permanently removed: {new['id']}"})
    assert len(call(leader.endpoint, "GET", "/v2/members").json["members"]) == 3


def test_restart_and_snapshot_catch_up(cluster: PetcdCluster) -> None:
    c = cluster
    leader = c.wait_leader()
    for i in range(5):
        assert call(leader.endpoint, "PUT", f"/v2/keys/dir/k{i}", f"value=v{i}").status == 201
    call(leader.endpoint, "PUT", "/v2/keys/long", "value=l&ttl=600")
    lagging = c.followers(leader)[0]
    lagging.kill()
    # Enough entries for the leader to snapshot and compact its log past the follower.
    for i in range(120):
        call(leader.endpoint, "PUT", f"/v2/keys/more/{i % 7}", f"value={i}")
    call(leader.endpoint, "DELETE", "/v2/keys/dir/k0")
    call(leader.endpoint, "POST", "/v2/keys/queue", "value=after")
    lagging.start()
    index = _converged(c)
    assert "installed the snapshot" in lagging.log_tail(50000)
    trees = [_tree(m) for m in c.members]
    assert trees[0] == trees[1] == trees[2]
    # The history came with the snapshot: the last events are there on the follower.
    since = index - 5
    r = [call(m.endpoint, "GET", f"/v2/keys/queue?wait=true&recursive=true&waitIndex={since}")
         for m in c.members]
    assert r[0].status == 200 and r[0].raw == r[1].raw == r[2].raw
    # kill -9 of the leader: the same tree after its restart.
    leader.kill()
    c.wait_leader(exclude=[leader])
    call(c.followers(c.wait_leader())[0].endpoint, "PUT", "/v2/keys/while-down", "value=1")
    leader.start()
    _converged(c)
    trees = [_tree(m) for m in c.members]
    assert trees[0] == trees[1] == trees[2]
    assert any(n["key"] == "/while-down" for n in trees[0]["node"]["nodes"])
