"""--experimental-learner-auto-promote: a learner added under write load is promoted by
the leader, through the log, once it has caught up; without the flag it stays a learner."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

import pytest

from petcd.testing import Etcdctl, PetcdCluster


def learners(ctl: Etcdctl) -> dict[str, bool]:
    doc = json.loads(ctl.ok("member", "list", "-w", "json"))
    return {m.get("name", ""): bool(m.get("isLearner")) for m in doc["members"]}


@pytest.mark.parametrize("auto", [True, False])
def test_learner_promoted_when_caught_up(auto: bool,
                                         cluster_factory: Callable[..., PetcdCluster]) -> None:
    flags = ["--experimental-learner-auto-promote"] if auto else []
    c = cluster_factory(3, args=flags)
    c.wait_leader()
    ctl = Etcdctl(c.endpoints)
    for i in range(20):
        ctl.ok("put", f"lap/{i}", str(i))
    stop = threading.Event()

    def load() -> None:  # writes keep coming while the learner catches up
        i = 0
        while not stop.is_set():
            Etcdctl(c.endpoints)("put", f"lap/load{i % 10}", str(i))
            i += 1

    loader = threading.Thread(target=load)
    loader.start()
    try:
        new = c.add_process("m3", args=flags)
        ctl.ok("member", "add", "m3", "--learner", f"--peer-urls={new.peer_url}")
        new.start()
        deadline = time.monotonic() + (30 if auto else 8)
        while learners(ctl).get("m3", True) and time.monotonic() < deadline:
            time.sleep(0.3)
        state = learners(ctl)
    finally:
        stop.set()
        loader.join()
    assert state["m3"] is (not auto), state
    if auto:
        assert "promoted learner" in c.leader().log_tail(100000)  # type: ignore[union-attr]
