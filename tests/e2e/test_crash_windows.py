"""kill -9 in the narrow windows of the write path, hit every run by a crash point
(PETCD_CRASHPOINT, server/raftnode/crashpoints.py) rather than by a lucky kill:

- propose_inline on a lone voter: after the entry's fdatasync, before its apply; and after
  the apply (the backend committed), before the answer left;
- a Ready without new entries on the leader of 3 members: its committed entries applied
  and answered and the backend committed, the commit index not yet in the WAL (so the
  restarted member finds an applied index above its recorded commit);
- a Ready with new entries on a follower of 3 members: the committed entries it already
  had applied (and the backend committed) while the WAL syncs the new ones.

After the restart every acknowledged put is there, on every member, at the revision its
answer gave (an entry applied twice across the restart would have moved it), and the
members agree on the store's hash."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.pb.etcdserverpb import rpc_pb2_grpc as rpc_grpc
from petcd.testing import PetcdCluster, PetcdProcess, backend_index
from petcd.wal.frame import WalSnapshot
from petcd.wal.replay import replay
from petcd.wal.segments import list_segments

HITS = 40  # the crash point fires on its 40th time: well into a stream of puts

# key -> (value, the revision its Put answered); a store read gives (value, mod_revision)
Acked = dict[bytes, tuple[bytes, int]]


def _wal_commit(data_dir: Path) -> int:
    """The commit index a stopped member's WAL records."""
    segments = list_segments(str(data_dir / "member" / "wal"))
    return replay(segments, WalSnapshot(), want_entries=False, repair=False).state.commit


def _put_until_dead(writer: PetcdProcess, victim: PetcdProcess,
                    acked: Acked) -> bytes | None:
    """Sequential puts to `writer` until `victim` is dead (then a few more while it is,
    unless it is the writer); the key of the put in flight when the writer died, if so."""
    after_death = 0
    with grpc.insecure_channel(writer.address) as ch:
        kv = rpc_grpc.KVStub(ch)
        deadline = time.monotonic() + 60
        seq = 0
        while after_death < 20:
            assert time.monotonic() < deadline, "the crash point never fired"
            key, value = b"w/%05d" % seq, b"v%d" % seq
            try:
                resp = kv.Put(rpc.PutRequest(key=key, value=value), timeout=10)
            except grpc.RpcError:
                if victim is writer and _dies(victim):
                    return key
                time.sleep(0.1)  # (an election on a loaded machine: the same put again)
                continue
            acked[key] = (value, resp.header.revision)
            seq += 1
            if victim.proc is not None and victim.proc.poll() is not None:
                after_death += 1
    return None


def _dies(m: PetcdProcess) -> bool:
    assert m.proc is not None
    try:
        m.proc.wait(5)
    except subprocess.TimeoutExpired:
        return False
    return True


def _read_all(m: PetcdProcess) -> tuple[Acked, int]:
    """Every w/ key's value and last revision, and the store's revision."""
    with grpc.insecure_channel(m.address) as ch:
        resp = rpc_grpc.KVStub(ch).Range(
            rpc.RangeRequest(key=b"w/", range_end=b"w0"), timeout=30)
    return {kv.key: (kv.value, kv.mod_revision) for kv in resp.kvs}, resp.header.revision


def _hash(m: PetcdProcess, revision: int) -> int:
    with grpc.insecure_channel(m.address) as ch:
        return rpc_grpc.MaintenanceStub(ch).HashKV(
            rpc.HashKVRequest(revision=revision), timeout=30).hash


def _assert_died_by_crash_point(m: PetcdProcess) -> None:
    assert m.proc is not None
    m.proc.wait(30)
    assert m.proc.returncode == -9, m.log_tail(3000)
    m.kill()  # (reaps: closes its log)


@pytest.mark.parametrize("point", ["inline-synced", "inline-applied"])
def test_kill_in_propose_inline_keeps_every_put(petcd_factory: Any, point: str) -> None:
    # 60000 ms: every fdatasync counts as fast, so a lone put is proposed inline
    member = petcd_factory(env={"PETCD_WAL_INLINE_FAST_MS": "60000",
                                "PETCD_CRASHPOINT": f"{point}:{HITS}"})
    acked: Acked = {}
    in_flight = _put_until_dead(member, member, acked)
    _assert_died_by_crash_point(member)
    assert in_flight is not None and len(acked) >= HITS - 5
    if point == "inline-applied":  # the window: applied and in the backend, not answered
        assert backend_index(member.data_dir) >= _wal_commit(member.data_dir) > 0
    member.extra_env.pop("PETCD_CRASHPOINT")
    member.start()
    found, _ = _read_all(member)
    missing = [k for k, v in acked.items() if found.get(k) != v]
    assert not missing, "acknowledged puts lost or moved: " \
        f"{[(k, acked[k], found.get(k)) for k in missing[:5]]}"
    # The put in flight was fdatasynced before the kill: the WAL replays it.
    assert in_flight in found


def _serve_with_crash_point(m: PetcdProcess, point: str) -> None:
    """Restart m with the crash point armed."""
    assert m.stop() == 0
    m.extra_env["PETCD_CRASHPOINT"] = f"{point}:{HITS}"
    m.start()


def _move_leader(c: PetcdCluster, to: PetcdProcess) -> None:
    target = c.member_id(to)
    deadline = time.monotonic() + 60
    while True:
        leader = c.wait_leader()
        if leader is to:
            return
        try:
            with grpc.insecure_channel(leader.address) as ch:
                rpc_grpc.MaintenanceStub(ch).MoveLeader(
                    rpc.MoveLeaderRequest(targetID=target), timeout=10)
        except grpc.RpcError:
            pass  # (an election under way: ask the next leader)
        assert time.monotonic() < deadline, "leadership never moved"


def _put_retrying(c: PetcdCluster, key: bytes, value: bytes) -> int:
    deadline = time.monotonic() + 60
    while True:
        try:
            with grpc.insecure_channel(c.wait_leader().address) as ch:
                return int(rpc_grpc.KVStub(ch).Put(
                    rpc.PutRequest(key=key, value=value), timeout=10).header.revision)
        except grpc.RpcError:
            assert time.monotonic() < deadline, "no put got through"
            time.sleep(0.1)


@pytest.mark.parametrize(("role", "point"), [("leader", "commit-unrecorded"),
                                             ("follower", "applied-syncing")])
def test_kill_between_apply_and_commit_record_on_3_members(tmp_path: Path, role: str,
                                                           point: str) -> None:
    with PetcdCluster(tmp_path, 3) as c:
        leader = c.wait_leader()
        victim = leader if role == "leader" else c.followers(leader)[0]
        _serve_with_crash_point(victim, point)
        # The victim leads, or (a follower) the member that led before
        _move_leader(c, victim if role == "leader" else leader)
        acked: Acked = {}
        _put_until_dead(c.wait_leader(), victim, acked)
        _assert_died_by_crash_point(victim)
        assert len(acked) >= HITS // 4  # (a stream well under way)
        if point == "commit-unrecorded":
            # The window: the backend holds entries whose commit the WAL does not record.
            assert backend_index(victim.data_dir) > _wal_commit(victim.data_dir)
        victim.extra_env.pop("PETCD_CRASHPOINT")
        victim.start()
        rev = _put_retrying(c, b"w/last", b"x")
        acked[b"w/last"] = (b"x", rev)
        for m in c.members:  # (linearizable: each has applied all of it once answered)
            found, _ = _read_all(m)
            missing = [k for k, v in acked.items() if found.get(k) != v]
            assert not missing, f"{m.name} lost or moved acknowledged puts: " \
                f"{[(k, acked[k], found.get(k)) for k in missing[:5]]}"
        assert len({_hash(m, rev) for m in c.members}) == 1
    assert not any(m.running for m in c.members)
