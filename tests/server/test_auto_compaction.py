"""Auto-compaction: etcd 3.4's schedules stepped with a scripted clock, the flags parsed as
etcd parses them, and periodic compaction on a real member beside etcd with the same flags."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from petcd import errors
from petcd.cli.config import Config, ConfigError
from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.pb.etcdserverpb import rpc_pb2_grpc as rpc_grpc
from petcd.server.compactor import AutoCompactor, PeriodicPolicy, RevisionPolicy, make_policy
from petcd.testing import Etcdctl, MemberProcess, have_etcd


def run_schedule(policy: PeriodicPolicy | RevisionPolicy, rev_at: Any, until: float,
                 fail_at: frozenset[float] = frozenset(),
                 leader: Any = lambda t: True) -> list[tuple[float, int]]:
    """Drives an AutoCompactor's loop by hand: sample, one interval later maybe compact."""
    now = [0.0]
    done: list[tuple[float, int]] = []

    async def compact(rev: int) -> None:
        if round(now[0], 6) in fail_at:
            raise errors.NO_LEADER
        done.append((round(now[0], 6), rev))

    c = AutoCompactor(policy, current_revision=lambda: rev_at(now[0]),
                      is_leader=lambda: leader(now[0]), compact=compact, clock=lambda: now[0])

    async def loop() -> None:
        while now[0] < until:
            policy.sample(c._rev())
            now[0] += policy.retry_interval
            if leader(now[0]):
                await c.step(now[0])
    asyncio.run(loop())
    return done


def test_periodic_schedule_as_etcd() -> None:
    # P = 10 s: samples every 1 s; the first compaction after P, at the revision sampled
    # at t=0; then every P at the oldest of the last 11 samples (about P ago).
    policy = PeriodicPolicy(10.0, 0.0)
    assert (policy.retry_interval, policy.window) == (1.0, 11)
    done = run_schedule(policy, lambda t: int(t) + 1, 40.0)
    assert done == [(10.0, 1), (20.0, 10), (30.0, 20), (40.0, 30)]


def test_periodic_long_retention_compacts_hourly() -> None:
    # P = 5 h: samples every 6 min, the first compaction after 5 h, then hourly, always
    # at a revision about 5 h old.
    policy = PeriodicPolicy(5 * 3600.0, 0.0)
    assert (policy.retry_interval, policy.window) == (360.0, 51)
    done = run_schedule(policy, lambda t: int(t // 60), 8 * 3600.0)
    assert [t for t, _ in done] == [5 * 3600.0, 6 * 3600.0, 7 * 3600.0, 8 * 3600.0]
    assert [rev for _, rev in done] == [0, 54, 114, 174]


def test_periodic_failure_retries_next_sample_and_followers_skip() -> None:
    policy = PeriodicPolicy(10.0, 0.0)
    done = run_schedule(policy, lambda t: int(t) + 1, 25.0, fail_at=frozenset({10.0}))
    assert done[0] == (11.0, 1)  # retried one interval later, same oldest sample
    policy = PeriodicPolicy(10.0, 0.0)
    done = run_schedule(policy, lambda t: int(t) + 1, 25.0, leader=lambda t: t >= 15)
    assert done[0][0] == 15.0


def test_revision_schedule_as_etcd() -> None:
    revs = {300.0: 50, 600.0: 150, 900.0: 150, 1200.0: 400}
    policy = RevisionPolicy(100)
    done = run_schedule(policy, lambda t: revs.get(t + 300.0, 400), 1200.0)
    # 50-100 <= 0: nothing; 150-100 = 50; the same again: nothing; 400-100 = 300.
    assert done == [(600.0, 50), (1200.0, 300)]


@pytest.mark.parametrize(("mode", "text", "want"), [
    ("periodic", "1", 3600.0), ("periodic", "30m", 1800.0), ("periodic", "2s", 2.0),
    ("revision", "1000", 1000.0), ("periodic", "0", 0.0)])
def test_retention_parsed_as_etcd(mode: str, text: str, want: float) -> None:
    cfg = Config()
    cfg.values["auto-compaction-mode"] = mode
    cfg.values["auto-compaction-retention"] = text
    assert cfg.auto_compaction == (mode, want)
    assert (make_policy(mode, want, 0.0) is None) == (want == 0)


def test_bad_retention_refused() -> None:
    cfg = Config()
    cfg.values["auto-compaction-retention"] = "soon"
    with pytest.raises(ConfigError, match="error parsing CompactionRetention"):
        _ = cfg.auto_compaction


def compact_revision(m: MemberProcess) -> int:
    """The member's compacted revision, as a watch from revision 1 reports it."""
    done = threading.Event()

    def reqs() -> Iterator[rpc.WatchRequest]:
        yield rpc.WatchRequest(create_request=rpc.WatchCreateRequest(
            key=b"\0", range_end=b"\0", start_revision=1))
        done.wait(10)
    with grpc.insecure_channel(m.address) as ch:
        stream = rpc_grpc.WatchStub(ch).Watch(reqs(), timeout=10)
        try:
            for resp in stream:
                if resp.canceled or resp.events:
                    return resp.compact_revision if resp.canceled else 0
        finally:
            done.set()
            stream.cancel()
    return 0


def test_periodic_compaction_on_a_member_as_on_etcd(petcd_factory: Any,
                                                     etcd_factory: Any) -> None:
    """The same flags and the same writes (one per 100 ms for 3.5 s) on petcd and etcd:
    both compact by themselves, to a revision written about the retention ago."""
    if not have_etcd():
        pytest.skip("etcd 3.4 not installed")
    flags = ["--auto-compaction-mode", "periodic", "--auto-compaction-retention", "1s"]
    members = [petcd_factory(args=flags), etcd_factory(args=flags)]
    ctls = [Etcdctl(m.endpoint) for m in members]
    started = time.monotonic()
    for i in range(35):
        for ctl in ctls:
            ctl.ok("put", "auto/key", str(i))
        time.sleep(max(0.0, started + 0.1 * (i + 1) - time.monotonic()))
    deadline = time.monotonic() + 10
    revs = [0, 0]
    while time.monotonic() < deadline and not all(revs):
        revs = [compact_revision(m) for m in members]
        time.sleep(0.2)
    assert all(r > 1 for r in revs), revs
    current = [int(ctl.ok("get", "auto/key", "-w", "json").split('"revision":')[1].split(",")[0])
               for ctl in ctls]
    for rev, cur in zip(revs, current, strict=True):
        assert rev < cur
