"""A 3-member cluster whose leader is attacked (the SETTINGS flood over thousands of
blocked streams, which used to block a member's event loop for seconds): its Raft
heartbeats go on, so no election happens, and writes through another member succeed."""

from __future__ import annotations

import time
from pathlib import Path

from petcd.api.h2 import frames as F
from petcd.testing import PetcdCluster, member_status

from .kit import MEMBER_ARGS, Raw, guarded, range_request, run_for


def test_no_election_while_the_leader_is_attacked(tmp_path: Path) -> None:
    cluster = PetcdCluster(tmp_path, size=3, args=MEMBER_ARGS)
    try:
        cluster.start()
        deadline = time.monotonic() + 30
        while True:
            statuses = [member_status(m) for m in cluster.members]
            leaders = {s.leader for s in statuses if s is not None}
            if len(leaders) == 1 and 0 not in leaders and None not in statuses:
                break
            assert time.monotonic() < deadline, "no stable leader"
            time.sleep(0.2)
        before = statuses[0]
        assert before is not None
        leader = next(m for m, s in zip(cluster.members, statuses, strict=True)
                      if s is not None and s.id == before.leader)
        other = next(m for m in cluster.members if m is not leader)

        c = Raw(leader.client_port, {F.SETTINGS_INITIAL_WINDOW_SIZE: 0}).reading()
        block = c.block()
        frames = []
        for sid in range(1, 2 * 1500, 2):
            frames += [c.headers_frame(sid, block),
                       F.frame(F.DATA, F.END_STREAM, sid, range_request())]
        c.send(*frames)
        c.wait_headers(1500)
        settings = F.settings_frame({F.SETTINGS_INITIAL_WINDOW_SIZE: 0}) * 100
        with guarded(other) as g:  # writes go through a follower to the attacked leader
            run_for(6.0, g, lambda: c.send(settings), per_second=30)
        c.close()
        after = member_status(other)
        assert after is not None
        assert (after.leader, after.term) == (before.leader, before.term), (
            f"leader {before.leader:x} term {before.term} -> "
            f"leader {after.leader:x} term {after.term}")
        g.check()
    except BaseException:
        print(cluster.dump_logs())
        raise
    finally:
        cluster.kill_all()
