"""`snapshot save` beside etcdctl's: the log lines on stderr (times, sizes and
durations aside), the saved line, the errors and exit codes; every global flag taken
by `snapshot status` as well. Over TLS (test_ctl_tls) it goes through petcdctl's
common connection."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from petcd.testing import MemberProcess, have_etcd

from .harness import PETCDCTL, Result, assert_same, run

pytestmark = pytest.mark.skipif(not have_etcd(), reason="etcd/etcdctl 3.4 not installed")

_TIMES = [(re.compile(r'"ts":("[^"]*"|[0-9.e+]+)'), '"ts":T'),
          (re.compile(r'"took":[0-9.e+-]+'), '"took":D'), (re.compile(r'"size":"[^"]*"'),
                                                           '"size":S')]


def _plain(r: Result, tmp: Path) -> Result:
    err = r.err.replace(str(tmp), "DIR")
    for pattern, repl in _TIMES:
        err = pattern.sub(repl, err)
    return Result(r.rc, r.out.replace(str(tmp).encode(), b"DIR"), err)


def test_snapshot_save_like_etcdctl(etcd: MemberProcess, petcd: MemberProcess,
                                    tmp_path: Path) -> None:
    for args in (["snapshot", "save", "{}/s.db"], ["snapshot", "save"],
                 ["snapshot", "save", "{}/no/such/dir/s.db"],
                 ["snapshot", "save", "{}/t.db", "--command-timeout", "20s"]):
        seen = []
        for tool, m in ((["etcdctl"], etcd), (PETCDCTL, petcd)):
            d = tmp_path / tool[-1].rsplit(".", 1)[-1]
            d.mkdir(exist_ok=True)
            r = run(tool, m.address, [a.format(d) for a in args], None)
            seen.append(_plain(r, d))
            if r.rc == 0:
                saved = d / Path(args[2]).name
                assert saved.stat().st_size > 0 and not Path(f"{saved}.part").exists()
        assert_same(args, *seen)
    two = f"{petcd.address},{etcd.address}"
    want = run(["etcdctl"], two, ["snapshot", "save", "x.db"], None)
    got = run(PETCDCTL, two, ["snapshot", "save", "x.db"], None)
    assert (got.rc, got.out, got.err) == (want.rc, want.out, want.err), (want, got)
    assert want.rc == 5 and "not multiple" in want.err
    # every global flag is taken by the offline snapshot commands too
    saved = str(tmp_path / "etcdctl" / "s.db")
    for args in (["--cacert", "/none", "--user", "u", "--insecure-transport=false",
                  "snapshot", "status", saved, "-w", "table"],
                 ["snapshot", "status", saved, "--keepalive-time", "3s",
                  "--insecure-skip-tls-verify", "--write-out=json"]):
        want, got = run(["etcdctl"], etcd.address, args, None), \
            run(PETCDCTL, etcd.address, args, None)
        assert want.rc == 0, want
        assert_same(args, want, got)
