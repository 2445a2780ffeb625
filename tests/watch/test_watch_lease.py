"""Revoking a lease deletes its keys: watchers see the deletions, all in one revision,
as etcd shows them (etcdctl against both). Skipped where petcd has no Lease service
yet."""

from __future__ import annotations

import re

import pytest

from petcd.testing import Etcdctl, MemberProcess, have_etcd

from .test_etcdctl_watch import END, next_revision, watch_output

pytestmark = pytest.mark.skipif(not have_etcd(), reason="etcd/etcdctl 3.4 not installed")


def test_revoke_deletes_are_watched(etcd: MemberProcess, petcd: MemberProcess) -> None:
    probe = Etcdctl(petcd.endpoint)("lease", "grant", "100")
    if probe.returncode != 0 and "Unimplemented" in probe.stderr + probe.stdout:
        pytest.skip("petcd has no Lease service in this build")
    results = []
    for m in (etcd, petcd):
        ctl = Etcdctl(m.endpoint)
        rev = next_revision(ctl)

        def writes(ctl: Etcdctl) -> None:
            lease = re.search(r"lease ([0-9a-f]+) granted", ctl.ok("lease", "grant", "100"))
            assert lease
            for k in ("l/a", "l/b", "l/c"):
                ctl.ok("put", "--lease", lease.group(1), k, "leased")
            ctl.ok("put", "l/free", "kept")
            ctl.ok("lease", "revoke", lease.group(1))
            ctl.ok("put", "l/z", END)

        out, err, _ = watch_output(m, ["--rev", str(rev), "--prefix", "--prev-kv", "l/"],
                                   writes, lambda out: out.rstrip("\n").endswith(END))
        results.append((out, err))
    assert results[1] == results[0]
    assert results[1][0].count("DELETE") == 3
