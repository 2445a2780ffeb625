"""Soak (make soak): a 3-member cluster under writes through every member, watchers
that hop between members (resuming at their last revision + 1) while a follower is
killed and restarted. Every watcher's concatenated stream must be exactly the history
(read back at the end by one watch from revision 1): nothing lost, nothing repeated."""

from __future__ import annotations

import random
import sys
import threading
import time

import grpc
import pytest

from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.pb.etcdserverpb import rpc_pb2_grpc as rpc_grpc
from petcd.server.watch import prefix_end
from petcd.testing import PetcdCluster

from .client import WatchClient

FAST = ["--heartbeat-interval", "50", "--election-timeout", "500"]
Event = tuple[int, int, bytes, bytes]


def _events(c: WatchClient) -> list[Event]:
    return [(e.kv.mod_revision, e.type, e.kv.key, e.kv.value) for e in c.events(0)]


@pytest.mark.slow
def test_hopping_watchers_see_the_history_exactly_once(
        tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> None:
    c = PetcdCluster(tmp_path_factory.mktemp("watch-soak"), 3, args=FAST)
    failed_before = request.session.testsfailed
    stop = threading.Event()
    try:
        c.start()
        c.wait_leader()
        start = 2

        def writer(seed: int) -> None:
            rnd = random.Random(seed)
            while not stop.is_set():
                m = rnd.choice(c.running())
                try:
                    with grpc.insecure_channel(m.address) as ch:
                        kv = rpc_grpc.KVStub(ch)
                        for _ in range(50):
                            key = b"soak/%d" % rnd.randrange(20)
                            if rnd.random() < 0.2:
                                kv.DeleteRange(rpc.DeleteRangeRequest(key=key), timeout=3)
                            else:
                                kv.Put(rpc.PutRequest(key=key, value=b"%d" % rnd.random()),
                                       timeout=3)
                except grpc.RpcError:
                    time.sleep(0.05)

        def hopper(seed: int, out: list[Event]) -> None:
            rnd = random.Random(seed)
            while not stop.is_set():
                m = rnd.choice(c.running())
                try:
                    with WatchClient(m.address) as w:
                        w.create(b"soak/", prefix_end(b"soak/"),
                                 start_revision=out[-1][0] + 1 if out else start)
                        time.sleep(rnd.uniform(0.1, 1.0))
                        out += _events(w)
                except Exception:  # the member died under us: resume elsewhere
                    time.sleep(0.05)

        streams: list[list[Event]] = [[] for _ in range(4)]
        threads = [threading.Thread(target=writer, args=(i,)) for i in range(3)]
        threads += [threading.Thread(target=hopper, args=(10 + i, s))
                    for i, s in enumerate(streams)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            time.sleep(10)
            victim = random.choice(c.followers())
            victim.kill()
            time.sleep(2)
            victim.start()
        stop.set()
        for t in threads:
            t.join(30)
        leader = c.wait_leader()
        with WatchClient(leader.address) as w:
            w.create(b"soak/", prefix_end(b"soak/"), start_revision=start)
            w.settle(1.0)
            history = _events(w)
        assert len(history) > 1000
        for s in streams:
            assert len(s) > 100
            # A hopper's stream is the history up to where it stopped; the events it
            # received last may lack a final piece it never asked again for.
            assert s == history[:len(s)]
    finally:
        stop.set()
        if request.session.testsfailed > failed_before:
            sys.stderr.write(c.dump_logs())
        c.kill_all()
