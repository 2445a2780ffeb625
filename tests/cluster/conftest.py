"""Fixtures for multi-member tests: clusters of petcd processes on loopback ports."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from petcd.testing import FAST_ELECTIONS, Etcdctl, PetcdCluster, Started

FAST = list(FAST_ELECTIONS)


@pytest.fixture
def cluster_factory(request: pytest.FixtureRequest, tmp_path: Path
                    ) -> Iterator[Callable[..., PetcdCluster]]:
    """cluster_factory(size=3, args=[...]) starts a cluster; all are killed at teardown
    (their logs printed if the test failed)."""
    with Started(request) as started:
        def make(size: int = 3, *, args: list[str] | None = None, start: bool = True,
                 **kw: Any) -> PetcdCluster:
            c = started.add(PetcdCluster(tmp_path / f"cluster-{len(started.made)}", size,
                                         args=[*FAST, *(args or [])], **kw))
            if start:
                c.start()
            return c

        yield make


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[PetcdCluster]:
    """One 3-member cluster shared by a module's tests. A test that stops a member
    restarts it before it ends (see `healed`)."""
    with Started(request) as started:
        yield started.add(PetcdCluster(tmp_path_factory.mktemp("cluster"), 3,
                                       args=FAST)).start()


@pytest.fixture
def healed(cluster: PetcdCluster) -> Iterator[PetcdCluster]:
    """The shared cluster with every member running and a leader, before and after."""
    for m in cluster.members[:3]:
        if not m.running:
            m.start()
    cluster.wait_leader()
    yield cluster
    for m in cluster.members[:3]:
        if m.proc is not None and m.proc.poll() is None:
            m.resume()
        if not m.running:
            m.start()
    cluster.wait_leader()


def add_member(ctl: Etcdctl, name: str, peer_url: str, *flags: str,
               timeout: float = 20.0) -> None:
    """`member add`, again while the cluster is not yet healthy enough for it (strict
    reconfiguration waits until every member has been connected for a while)."""
    deadline = time.monotonic() + timeout
    while True:
        r = ctl("member", "add", name, f"--peer-urls={peer_url}", *flags)
        if r.returncode == 0:
            return
        assert "unhealthy cluster" in r.stderr, r.stderr
        assert time.monotonic() < deadline, r.stderr
        time.sleep(0.3)
