"""Clusters of petcd processes for the auth tests (killed at teardown; logs printed
when a test failed)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from petcd.testing import FAST_ELECTIONS, PetcdCluster, Started

FAST = [*FAST_ELECTIONS, "--bcrypt-cost", "4"]


@pytest.fixture
def cluster_factory(request: pytest.FixtureRequest, tmp_path: Path
                    ) -> Iterator[Callable[..., PetcdCluster]]:
    with Started(request) as started:
        def make(size: int = 3, *, args: list[str] | None = None, **kw: Any) -> PetcdCluster:
            return started.add(PetcdCluster(tmp_path / f"cluster-{len(started.made)}", size,
                                            args=[*FAST, *(args or [])], **kw)).start()

        yield make
