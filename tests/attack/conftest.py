"""Fixtures of the attack suite: a fresh petcd member per test (an attack's damage,
memory above all, must not be measured against another attack's)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from petcd.testing import MemberProcess, PetcdProcess

from . import kit
from .kit import MEMBER_ARGS


@pytest.fixture(scope="session", autouse=True)
def control_member(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MemberProcess]:
    """A member nobody attacks: the guards' yardstick for the machine's own load."""
    m = PetcdProcess(tmp_path_factory.mktemp("attack-control") / "m", args=MEMBER_ARGS)
    m.start()
    kit.CONTROL.append(m)
    try:
        yield m
    finally:
        kit.CONTROL.remove(m)
        m.kill()


@pytest.fixture
def member(petcd_factory: Any) -> MemberProcess:
    m: MemberProcess = petcd_factory(args=MEMBER_ARGS)
    return m
