"""Clusters of petcd processes for the auth tests (killed at teardown; logs printed
when a test failed)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from petcd.testing import PetcdCluster

FAST = ["--heartbeat-interval", "50", "--election-timeout", "500", "--bcrypt-cost", "4"]


@pytest.fixture
def cluster_factory(request: pytest.FixtureRequest, tmp_path: Path
                    ) -> Iterator[Callable[..., PetcdCluster]]:
    clusters: list[PetcdCluster] = []
    failed_before = request.session.testsfailed

    def make(size: int = 3, *, args: list[str] | None = None, **kw: Any) -> PetcdCluster:
        c = PetcdCluster(tmp_path / f"cluster-{len(clusters)}", size,
                         args=[*FAST, *(args or [])], **kw)
        clusters.append(c)
        c.start()
        return c

    try:
        yield make
    finally:
        if request.session.testsfailed > failed_before:
            for c in clusters:
                sys.stderr.write(c.dump_logs())
        for c in clusters:
            c.kill_all()
