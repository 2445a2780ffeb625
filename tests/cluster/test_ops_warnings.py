"""The warnings an operator reads in a member's log, seen in the logs of real members
under real faults (SIGSTOP): a follower falling behind and catching up, a leader
that could not send its heartbeats on time, leader changes and a lost leader. One
member writes petcd's default human-readable lines, the others zap JSON lines with
etcd's field names."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from petcd.testing import Etcdctl, PetcdCluster, PetcdProcess


def _events(m: PetcdProcess) -> list[tuple[str, dict[str, Any]]]:
    """(message, fields) per log line: JSON lines parsed, other lines as they are."""
    out: list[tuple[str, dict[str, Any]]] = []
    for line in m.log_path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            doc = json.loads(line)  # a zap line must parse
            out.append((doc["msg"], doc))
        else:
            out.append((line, {}))
    return out


def _matching(m: PetcdProcess, words: tuple[str, ...],
              fields: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    return [doc for msg, doc in _events(m) if any(w in msg for w in words) and fields(doc)]


def _wait_for(m: PetcdProcess, *words: str, fields: Callable[[dict[str, Any]], bool]
              = lambda f: True, after: int = 0, timeout: float = 60.0) -> dict[str, Any]:
    """The first line (past the first `after` such lines) with any of `words`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = _matching(m, words, fields)
        if len(found) > after:
            return found[after]
        time.sleep(0.2)
    raise AssertionError(f"{m.name} never logged {words!r}:\n{m.log_tail(3000)}")


def _is_json(m: PetcdProcess) -> bool:
    return "--logger" in m.extra_args


def test_operator_warnings(cluster_factory: Callable[..., PetcdCluster]) -> None:
    c = cluster_factory(3, start=False)
    for m in c.members[1:]:
        m.extra_args += ["--logger", "zap"]
    c.start()
    leader = c.wait_leader()
    lead_id = f"{c.member_id(leader):x}"
    for m in c.members:  # every member saw the election, in its own format
        doc = _wait_for(m, f"elected leader {lead_id} at term")
        assert "raft.node: " in (doc.get("msg") or "raft.node: ")
        if _is_json(m):
            assert {"level", "ts", "caller", "msg"} <= set(doc)

    # A follower stops (SIGSTOP) while writes go on: the leader reports it behind,
    # then caught up once it runs again.
    follower = c.followers(leader)[0]
    fid = f"{c.member_id(follower):x}"
    follower.pause()
    try:
        ctl = Etcdctl(leader.endpoint)
        for i in range(5):
            ctl.ok("put", f"ops/{i}", "x")
        doc = _wait_for(leader, f"slow follower: member {fid} is",
                        fields=lambda d: not d or d.get("remote-peer-id") == fid)
        if _is_json(leader):
            assert doc["level"] == "warn"
            assert doc["commit-index"] > doc["match-index"]
    finally:
        follower.resume()
    _wait_for(leader, f"member {fid} caught up with the leader")

    # The leader stops for a few heartbeat intervals (less than an election timeout):
    # its next heartbeats are late, and it says so as etcd does.
    late = ("leader failed to send out heartbeat on time; took too long, leader is "
            "overloaded likely from slow disk",)
    before = len(_matching(leader, late, lambda d: True))  # (a loaded machine: maybe some)
    leader.pause()
    time.sleep(0.3)
    leader.resume()
    doc = _wait_for(leader, *late, after=before)
    if _is_json(leader):
        assert doc["heartbeat-interval"] == "50ms"
        assert doc["expected-duration"] == "100ms"
        assert doc["exceeded-duration"].endswith("s")
        assert doc["to"] in {f"{c.member_id(m):x}" for m in c.members if m is not leader}

    # Both followers stop: a linearizable read on the leader gets no ReadIndex answer;
    # it is retried with etcd's warning, then fails with etcd's other one.
    followers = c.followers(leader)
    for m in followers:
        m.pause()
    try:
        got = Etcdctl(leader.endpoint, timeout=60)("get", "ops/0", "--command-timeout=20s")
        assert got.returncode != 0
        _wait_for(leader, "waiting for ReadIndex response took too long, retrying")
        _wait_for(leader, "timed out waiting for read index response (local node might "
                  "have slow network)")
    finally:
        for m in followers:
            m.resume()
    metrics = urllib.request.urlopen(leader.endpoint + "/metrics", timeout=30).read()
    assert b"\netcd_server_slow_read_indexes_total 0" not in metrics
    assert b"\netcd_server_read_indexes_failed_total 0" not in metrics
    assert b"\netcd_server_heartbeat_send_failures_total 0" not in metrics

    # The leader stops for good (well past an election timeout): the others lose it and
    # elect another; back again, it learns of the change.
    leader = c.wait_leader()
    lead_id = f"{c.member_id(leader):x}"
    leader.pause()
    try:
        others = [m for m in c.members if m is not leader]
        for m in others:
            _wait_for(m, f"lost leader {lead_id} at term")
        new = c.wait_leader(exclude=[leader])
    finally:
        leader.resume()
    new_id = f"{c.member_id(new):x}"
    # (straight to the new leader, or first to "no leader" if a vote request of the
    # election reached it first)
    _wait_for(leader, f"changed leader from {lead_id} to {new_id} at term",
              f"elected leader {new_id} at term")
