"""Lock and Election under auth, beside etcd 3.4: a user with READWRITE on the lock's
keys takes it; one without is refused with etcd's words; nobody logged in likewise."""

from __future__ import annotations

from typing import Any

import pytest
from maintenance.conftest import error_lines

from petcd.testing import Etcdctl, have_etcd


def setup_auth(ctl: Etcdctl) -> None:
    ctl.ok("user", "add", "root:rootpw")
    ctl.ok("user", "grant-role", "root", "root")
    ctl.ok("role", "add", "lockers")
    ctl.ok("role", "grant-permission", "lockers", "readwrite", "jobs/", "--prefix=true")
    ctl.ok("user", "add", "alice:alicepw")
    ctl.ok("user", "grant-role", "alice", "lockers")
    ctl.ok("user", "add", "bob:bobpw")
    ctl.ok("auth", "enable")


def outcome(ctl: Etcdctl, *args: str) -> tuple[int, list[str], str]:
    r = ctl(*args)
    return r.returncode, error_lines(r.stderr), r.stdout


@pytest.mark.skipif(not have_etcd(), reason="etcd 3.4 not installed")
def test_lock_and_elect_under_auth_as_etcd(petcd_factory: Any, etcd_factory: Any) -> None:
    results = []
    for m in (petcd_factory(), etcd_factory()):
        ctl = Etcdctl(m.endpoint)
        setup_auth(ctl)
        alice = ("--user", "alice:alicepw")
        bob = ("--user", "bob:bobpw")
        results.append([
            outcome(ctl, *alice, "lock", "jobs/nightly", "--", "echo", "held"),
            outcome(ctl, *bob, "lock", "jobs/nightly", "--", "echo", "held"),
            outcome(ctl, *alice, "lock", "other", "--", "echo", "held"),
            outcome(ctl, "lock", "jobs/nightly", "--", "echo", "held"),
            outcome(ctl, *bob, "elect", "jobs/leader", "me", "--", "true")[:2],
        ])
    ours, theirs = results
    assert ours == theirs
    assert ours[0][0] == 0 and ours[0][2] == "held\n"
    assert ours[1][0] != 0 and "permission denied" in ours[1][1][0]
