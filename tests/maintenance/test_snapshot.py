"""Snapshots: `etcdctl snapshot save` against petcd (the sha256 trailer etcdctl checks),
`petcdctl snapshot status` (etcdctl's output formats), and `petcdctl snapshot restore`
into a new member that keeps all the data; restore errors worded as etcdctl's."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from petcd.cli.ctl.common import humanize_bytes
from petcd.cli.ctl.snapshot import format_status
from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.server.restore import SnapshotStatus
from petcd.testing import Etcdctl, PetcdProcess, free_port

from .conftest import Stubs, error_lines, needs_etcd, petcdctl


def load(ctl: Etcdctl) -> None:
    for i in range(20):
        ctl.ok("put", f"snap/{i:02d}", f"value-{i}")
    ctl.ok("put", "snap/00", "rewritten")
    ctl.ok("del", "snap/01")
    ctl.ok("compact", "5")
    ctl.ok("put", "long/" + "k" * 600, "a key longer than LMDB's limit")


def trailer_ok(data: bytes) -> bool:
    return len(data) % 512 == 32 and hashlib.sha256(data[:-32]).digest() == data[-32:]


def test_save_status_restore(petcd_factory: Any, tmp_path: Path) -> None:
    src = petcd_factory()
    ctl = Etcdctl(src.endpoint, cwd=str(tmp_path))
    load(ctl)
    saved = ctl.ok("snapshot", "save", "snap.db")
    assert saved == "Snapshot saved at snap.db\n"
    data = (tmp_path / "snap.db").read_bytes()
    assert trailer_ok(data)
    assert not (tmp_path / "snap.db.part").exists()
    r = petcdctl("--endpoints", src.endpoint, "snapshot", "save", "again.db", cwd=tmp_path)
    assert (r.returncode, r.stdout) == (0, "Snapshot saved at again.db\n"), r.stderr
    assert trailer_ok((tmp_path / "again.db").read_bytes())

    src_stubs = Stubs(src)
    rev = src_stubs.kv.Range(rpc.RangeRequest(key=b"x")).header.revision
    status = json.loads(petcdctl("snapshot", "status", "snap.db", "-w", "json",
                                 cwd=tmp_path).stdout)
    assert status["revision"] == rev
    assert status["totalKey"] > 20
    assert 0 < status["totalSize"] <= len(data) - 32
    simple = petcdctl("snapshot", "status", "snap.db", cwd=tmp_path).stdout
    assert simple.split(", ")[:3] == [f"{status['hash']:x}", str(rev),
                                      str(status["totalKey"])]

    peer = free_port()
    r = petcdctl("snapshot", "restore", "snap.db", "--name", "restored", "--data-dir", "new",
                 "--initial-cluster", f"restored=http://127.0.0.1:{peer}",
                 "--initial-cluster-token", "restored-token",
                 "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "new.restoring").exists()
    dst = PetcdProcess(tmp_path / "new", name="restored", peer_port=peer)
    try:
        dst.start()
        dst_ctl = Etcdctl(dst.endpoint)
        assert dst_ctl.ok("get", "", "--prefix") == ctl.ok("get", "", "--prefix")
        dst_stubs = Stubs(dst)
        assert dst_stubs.kv.Range(rpc.RangeRequest(key=b"x")).header.revision == rev
        for at in (6, rev):  # the same history, compaction included
            assert dst_stubs.maintenance.HashKV(rpc.HashKVRequest(revision=at)).hash == \
                src_stubs.maintenance.HashKV(rpc.HashKVRequest(revision=at)).hash
        with pytest.raises(Exception, match="compacted"):
            dst_stubs.kv.Range(rpc.RangeRequest(key=b"snap/00", revision=4))
        members = dst_stubs.channel.unary_unary(
            "/etcdserverpb.Cluster/MemberList",
            request_serializer=rpc.MemberListRequest.SerializeToString,
            response_deserializer=rpc.MemberListResponse.FromString)(rpc.MemberListRequest())
        assert [(m.name, list(m.peerURLs)) for m in members.members] == [
            ("restored", [f"http://127.0.0.1:{peer}"])]
        assert members.header.member_id != src_stubs.kv.Range(
            rpc.RangeRequest(key=b"x")).header.member_id
        st = dst_stubs.maintenance.Status(rpc.StatusRequest())
        # A new log: after the restored snapshot at index 1 (the one member), only the
        # new leader's empty entry and this member's published attributes.
        assert 1 < st.raftAppliedIndex <= 4
        assert src_stubs.maintenance.Status(rpc.StatusRequest()).raftAppliedIndex > 20
        dst_ctl.ok("put", "snap/new", "after restore")
        assert dst_ctl.ok("get", "snap/new", "--print-value-only") == "after restore\n"
        dst_stubs.close()
        dst.stop()
        dst.start()  # and it restarts like any member
        assert Etcdctl(dst.endpoint).ok("get", "snap/00", "--print-value-only") == \
            "rewritten\n"
    finally:
        dst.kill()
    src_stubs.close()


@needs_etcd
def test_restore_errors_like_etcdctl(petcd_factory: Any, etcd_factory: Any,
                                     tmp_path: Path) -> None:
    ours_dir, theirs_dir = tmp_path / "ours", tmp_path / "theirs"
    ours_dir.mkdir()
    theirs_dir.mkdir()
    for member, d in ((petcd_factory(), ours_dir), (etcd_factory(), theirs_dir)):
        ctl = Etcdctl(member.endpoint, cwd=str(d))
        ctl.ok("put", "k", "v")
        ctl.ok("snapshot", "save", "s.db")
        data = (d / "s.db").read_bytes()
        (d / "nohash.db").write_bytes(data[:-32])
        (d / "bad.db").write_bytes(data[:100] + bytes([data[100] ^ 1]) + data[101:])
        (d / "exists").mkdir()
    cases = [
        ("s.db", "--data-dir", "exists"),
        ("s.db", "--name", "other", "--data-dir", "d1"),
        ("nohash.db", "--data-dir", "d2"),
        ("missing.db", "--data-dir", "d3"),
        ("s.db", "x.db", "--data-dir", "d4"),
        ("bad.db", "--data-dir", "d5"),
        ("s.db", "--name", "a", "--initial-cluster", "a=http://127.0.0.1:1",
         "--initial-advertise-peer-urls", "http://127.0.0.1:2", "--data-dir", "d6"),
    ]
    for case in cases:
        theirs = Etcdctl("127.0.0.1:1", cwd=str(theirs_dir))("snapshot", "restore", *case)
        ours = petcdctl("snapshot", "restore", *case, cwd=ours_dir)
        t_err, o_err = error_lines(theirs.stderr), error_lines(ours.stderr)
        assert ours.returncode == theirs.returncode, (case, ours.stderr, theirs.stderr)
        if case[0] == "bad.db":  # the digests differ with the data; the wording does not
            assert o_err[0].startswith("Error: expected sha256 [") and ", got [" in o_err[0]
            assert t_err[0].startswith("Error: expected sha256 [")
        else:
            assert o_err == t_err, case
    assert sorted(p.name for p in ours_dir.iterdir()) == [
        "bad.db", "exists", "nohash.db", "s.db"]  # a failed restore leaves nothing
    r = petcdctl("snapshot", "restore", "nohash.db", "--skip-hash-check", "--data-dir", "ok",
                 cwd=ours_dir)
    assert r.returncode == 0 and (ours_dir / "ok" / "member" / "snap" / "db").exists()


@needs_etcd
def test_status_output_formats_like_etcdctl(etcd_factory: Any, tmp_path: Path) -> None:
    """etcdctl's own rendering of an etcd snapshot's status, against ours of the same
    numbers, in every format."""
    etcd = etcd_factory()
    ctl = Etcdctl(etcd.endpoint, cwd=str(tmp_path))
    ctl.ok("put", "k", "v")
    ctl.ok("snapshot", "save", "s.db")
    numbers = json.loads(ctl.ok("snapshot", "status", "s.db", "-w", "json"))
    st = SnapshotStatus(numbers["hash"], numbers["revision"], numbers["totalKey"],
                        numbers["totalSize"])
    for fmt in ("simple", "table", "fields", "json"):
        assert format_status(st, fmt) == ctl.ok("snapshot", "status", "s.db", "-w", fmt), fmt


def test_sizes_as_go_humanize_prints_them() -> None:
    cases = {0: "0 B", 9: "9 B", 10: "10 B", 999: "999 B", 1000: "1.0 kB", 1549: "1.5 kB",
             20480: "20 kB", 196608: "197 kB", 1769472: "1.8 MB", 84914176: "85 MB",
             2 << 30: "2.1 GB"}
    assert {n: humanize_bytes(n) for n in cases} == cases


def test_petcdctl_usage_errors(tmp_path: Path) -> None:
    r = petcdctl("snapshot", "status")
    assert (r.returncode, r.stderr) == (128, "Error: snapshot status requires exactly one "
                                             "argument\n")
    r = petcdctl("snapshot", "status", "nope.db", cwd=tmp_path)
    assert (r.returncode, r.stderr) == (1, "Error: stat nope.db: no such file or directory\n")
    r = petcdctl("--endpoints", "a:1,b:2", "snapshot", "save", "x.db", cwd=tmp_path)
    assert r.returncode == 5 and "not multiple" in r.stderr
    r = petcdctl("snapshot", "bogus")
    assert r.returncode == 128
