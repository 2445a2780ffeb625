"""Disaster recovery: a 3-member cluster loses two data dirs for good; the survivor restarts
with --force-new-cluster as the single voter of its cluster, keeps every acknowledged
write, serves, and grows back to three members with `member add`."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from typing import Any

from petcd.testing import Etcdctl, PetcdCluster


def add_member(ctl: Etcdctl, name: str, peer_url: str, timeout: float = 20.0) -> None:
    """`member add`, again while the cluster is not yet healthy enough for it (strict
    reconfiguration waits until the last member added is connected)."""
    deadline = time.monotonic() + timeout
    while True:
        r = ctl("member", "add", name, f"--peer-urls={peer_url}")
        if r.returncode == 0:
            return
        assert "unhealthy cluster" in r.stderr, r.stderr
        assert time.monotonic() < deadline, r.stderr
        time.sleep(0.3)


def test_force_new_cluster_after_losing_two_members(
        cluster_factory: Callable[..., PetcdCluster]) -> None:
    c = cluster_factory(3)
    c.wait_leader()
    ctl = Etcdctl(c.endpoints)
    for i in range(50):
        ctl.ok("put", f"dr/{i:02d}", f"v{i}")
    before = ctl.ok("get", "dr/", "--prefix")
    survivor, *lost = c.members
    c.kill_all()
    for m in lost:
        shutil.rmtree(m.data_dir)  # gone for good: quorum can never come back

    survivor.extra_args.append("--force-new-cluster")
    survivor.start()
    sctl = Etcdctl(survivor.endpoint)
    assert sctl.ok("get", "dr/", "--prefix") == before
    members: dict[str, Any] = json.loads(sctl.ok("member", "list", "-w", "json"))
    assert [m["name"] for m in members["members"]] == [survivor.name]
    sctl.ok("put", "dr/after", "written by the new cluster")
    status = json.loads(sctl.ok("endpoint", "status", "-w", "json"))[0]["Status"]
    assert status["leader"] == status["header"]["member_id"]

    # A later restart without the flag is an ordinary restart of a one-member cluster.
    survivor.extra_args.remove("--force-new-cluster")
    survivor.stop()
    survivor.start()
    assert Etcdctl(survivor.endpoint).ok("get", "dr/after", "--print-value-only") == \
        "written by the new cluster\n"

    # Grow back: members added one by one join from the survivor's data.
    c.members = [survivor]
    for name in ("n1", "n2"):
        m = c.add_process(name)
        add_member(Etcdctl(survivor.endpoint), name, m.peer_url)
        m.start()
        assert Etcdctl(m.endpoint).ok("get", "dr/", "--prefix",
                                      "--consistency=s").startswith("dr/00\nv0\n")
    grown = json.loads(Etcdctl(survivor.endpoint).ok("member", "list", "-w", "json"))
    assert len(grown["members"]) == 3
    Etcdctl(c.endpoints).ok("put", "dr/grown", "yes")
