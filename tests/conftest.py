"""Process fixtures shared by every test that needs a running member.

- `petcd_factory(**kw)` starts a petcd member (free ports, a tmp data dir) and waits
  until /health answers; every member it started is killed at teardown, and its log
  is printed when the test failed.
- `petcd` / `etcd`: one member per test module (tests in a module must not depend on
  each other's keys: use distinct key prefixes).
- `etcdctl` / `etcd_etcdctl`: etcdctl (v3) bound to those members.
"""

from __future__ import annotations

import os
import sys

# Small WAL segments for every member the suite starts (inherited by spawned processes):
# a full run starts hundreds of members and 64 MiB preallocations filled the disk.
os.environ.setdefault("PETCD_WAL_SEGMENT_SIZE", str(4 * 1024 * 1024))
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from petcd.testing import Etcdctl, EtcdProcess, MemberProcess, PetcdProcess, have_etcd

needs_etcd = pytest.mark.skipif(not have_etcd(), reason="etcd/etcdctl 3.4 not installed")


def _dump_logs(members: list[MemberProcess]) -> None:
    for m in members:
        sys.stderr.write(f"\n===== {m.kind} log ({m.log_path}) =====\n{m.log_tail()}\n")


class _Factory:
    def __init__(self, cls: type[MemberProcess], base: Path) -> None:
        self.cls = cls
        self.base = base
        self.members: list[MemberProcess] = []

    def __call__(self, name: str = "default", *, start: bool = True,
                 **kw: Any) -> MemberProcess:
        data_dir = self.base / f"{self.cls.kind}-{len(self.members)}"
        m = self.cls(data_dir, name=name, **kw)
        self.members.append(m)
        if start:
            try:
                m.start()
            except Exception:
                m.kill()
                raise
        return m

    def close(self, failed: bool) -> None:
        if failed:
            _dump_logs(self.members)
        for m in self.members:
            m.kill()


def _make(request: pytest.FixtureRequest, cls: type[MemberProcess],
          base: Path) -> Iterator[_Factory]:
    factory = _Factory(cls, base)
    failed_before = request.session.testsfailed
    try:
        yield factory
    finally:
        factory.close(request.session.testsfailed > failed_before)


@pytest.fixture
def petcd_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[_Factory]:
    yield from _make(request, PetcdProcess, tmp_path)


@pytest.fixture
def etcd_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[_Factory]:
    if not have_etcd():
        pytest.skip("etcd/etcdctl 3.4 not installed")
    yield from _make(request, EtcdProcess, tmp_path)


@pytest.fixture(scope="module")
def petcd(request: pytest.FixtureRequest,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[MemberProcess]:
    """One petcd member shared by the tests of a module."""
    for f in _make(request, PetcdProcess, tmp_path_factory.mktemp("petcd")):
        yield f()


@pytest.fixture(scope="module")
def etcd(request: pytest.FixtureRequest,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[MemberProcess]:
    """One real etcd member shared by the tests of a module."""
    if not have_etcd():
        pytest.skip("etcd/etcdctl 3.4 not installed")
    for f in _make(request, EtcdProcess, tmp_path_factory.mktemp("etcd")):
        yield f()


@pytest.fixture(scope="module")
def etcdctl(petcd: MemberProcess) -> Etcdctl:
    return Etcdctl(petcd.endpoint)


@pytest.fixture(scope="module")
def etcd_etcdctl(etcd: MemberProcess) -> Etcdctl:
    return Etcdctl(etcd.endpoint)


EtcdctlFactory = Callable[[MemberProcess], Etcdctl]
