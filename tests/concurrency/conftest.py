"""Multi-member clusters for the lock failover test (the cluster tests' fixture)."""

import pytest
from cluster.conftest import cluster_factory

from petcd.testing import MemberProcess

__all__ = ["cluster_factory"]


@pytest.fixture(params=["petcd", "etcd"])
def member(request: pytest.FixtureRequest) -> MemberProcess:
    """The module's petcd member, then real etcd 3.4's: the same test against both."""
    m = request.getfixturevalue(request.param)
    assert isinstance(m, MemberProcess)
    return m
