"""Fixtures of the attack suite: a fresh petcd member per test (an attack's damage,
memory above all, must not be measured against another attack's)."""

from __future__ import annotations

from typing import Any

import pytest

from petcd.testing import MemberProcess

from .kit import MEMBER_ARGS


@pytest.fixture
def member(petcd_factory: Any) -> MemberProcess:
    m: MemberProcess = petcd_factory(args=MEMBER_ARGS)
    return m
