"""Corruption checks on a real 3-member cluster: one follower's backend is changed behind
petcd's back (a value rewritten in its history); the leader's periodic check raises the
CORRUPT alarm for exactly that member and writes stop; the initial check keeps the
corrupted member from starting at all."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import lmdb

from petcd.pb.mvccpb.kv_pb2 import KeyValue
from petcd.testing import Etcdctl, PetcdCluster, PetcdProcess


def corrupt_backend(member: PetcdProcess) -> None:
    """Rewrite the newest record's value in the member's LMDB history (keys, revisions and
    sizes of everything else untouched)."""
    env = lmdb.open(str(member.data_dir / "member" / "snap" / "db"), subdir=False,
                    max_dbs=64, lock=True)
    try:
        kv = env.open_db(b"kv")
        with env.begin(write=True, db=kv) as txn:
            cur = txn.cursor()
            assert cur.last()
            record = KeyValue.FromString(cur.value())
            record.value = b"flipped bits"
            txn.put(cur.key(), record.SerializeToString())
    finally:
        env.close()


def alarms(ctl: Etcdctl) -> str:
    return ctl.ok("alarm", "list")


def test_corrupt_member_found(cluster_factory: Callable[..., PetcdCluster]) -> None:
    c = cluster_factory(3, args=["--experimental-corrupt-check-time", "1s"])
    leader = c.wait_leader()
    ctl = Etcdctl(c.endpoints)
    for i in range(20):
        ctl.ok("put", f"cc/{i}", f"v{i}")
    victim = c.followers(leader)[0]
    victim_id = c.member_id(victim)
    victim.stop()
    corrupt_backend(victim)
    victim.start()
    deadline = time.monotonic() + 30
    while "CORRUPT" not in alarms(ctl):
        assert time.monotonic() < deadline, "no CORRUPT alarm"
        time.sleep(0.3)
    listed = alarms(ctl)
    assert listed.strip() == f"memberID:{victim_id} alarm:CORRUPT", listed
    r = ctl("put", "cc/after", "x")
    assert r.returncode != 0 and "corrupt cluster" in r.stderr, r.stderr
    status = json.loads(ctl.ok("endpoint", "status", "-w", "json"))
    assert any("CORRUPT" in " ".join(s["Status"].get("errors", [])) for s in status)

    # The initial check refuses to start the corrupted member.
    victim.stop()
    victim.extra_args.append("--experimental-initial-corrupt-check")
    victim.start(wait=False)
    assert victim.proc is not None
    code = victim.proc.wait(60)
    assert code != 0
    assert "found data inconsistency with peers" in victim.log_tail()


def test_initial_check_passes_on_a_sound_member(
        cluster_factory: Callable[..., PetcdCluster]) -> None:
    c = cluster_factory(3)
    leader = c.wait_leader()
    Etcdctl(c.endpoints).ok("put", "ok", "1")
    follower = c.followers(leader)[0]
    follower.stop()
    follower.extra_args.append("--experimental-initial-corrupt-check")
    follower.start()
    assert Etcdctl(follower.endpoint).ok("get", "ok", "--print-value-only") == "1\n"
