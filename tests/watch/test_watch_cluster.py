"""Watches on a 3-member cluster: every member (followers too) delivers the same
events as it applies them; a client resumes on another member from its last revision
+ 1 without loss or duplicates, also when the member it watched dies; a follower that
is sent a snapshot catches its watchers up from the store."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator

import grpc
import pytest

from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.pb.etcdserverpb import rpc_pb2_grpc as rpc_grpc
from petcd.server.watch import prefix_end
from petcd.testing import FAST_ELECTIONS, PetcdCluster, Started

from .client import WatchClient

FAST = list(FAST_ELECTIONS)
Put = tuple[int, bytes, bytes]


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[PetcdCluster]:
    with Started(request) as started:
        c = started.add(PetcdCluster(tmp_path_factory.mktemp("watch-cluster"), 3, args=FAST))
        c.start()
        c.wait_leader()
        yield c


def events(client: WatchClient, watch_id: int = 0) -> list[Put]:
    return [(e.kv.mod_revision, e.kv.key, e.kv.value) for e in client.events(watch_id)]


def put(address: str, key: bytes, value: bytes) -> int:
    with grpc.insecure_channel(address) as ch:
        resp = rpc_grpc.KVStub(ch).Put(rpc.PutRequest(key=key, value=value), timeout=10)
    return int(resp.header.revision)


def test_every_member_delivers_the_same_events(cluster: PetcdCluster) -> None:
    leader = cluster.wait_leader()
    members = cluster.running()
    clients = [WatchClient(m.address) for m in members]
    try:
        for c in clients:
            c.create(b"every/", prefix_end(b"every/"), prev_kv=True)
            c.wait_created(1)
        written = [put(m.address, b"every/%d" % (i % 4), b"%d" % i)
                   for i, m in enumerate(members * 10)]  # through followers too
        first = written[0]
        # A start revision the follower may not have applied yet is fine.
        follower = next(c for c, m in zip(clients, members, strict=True) if m is not leader)
        follower.create(b"every/", prefix_end(b"every/"), start_revision=written[-1] + 1)
        follower.wait_created(2)
        last = put(leader.address, b"every/x", b"late")
        for c in clients:
            c.wait_events(0, 31)
        follower.wait_events(1, 1)
        streams = [events(c) for c in clients]
        assert streams[0] == streams[1] == streams[2]
        assert [r for r, _, _ in streams[0]] == [*range(first, first + 30), last]
        prevs = [[e.prev_kv.value for e in c.events(0)] for c in clients]
        assert prevs[0] == prevs[1] == prevs[2]
        assert events(follower, 1) == [(last, b"every/x", b"late")]
    finally:
        for c in clients:
            c.close()


def test_resume_on_other_members_without_loss_or_duplicates(cluster: PetcdCluster) -> None:
    leader = cluster.wait_leader()
    stop = threading.Event()
    written: list[Put] = []

    def writer() -> None:
        with grpc.insecure_channel(leader.address) as ch:
            kv = rpc_grpc.KVStub(ch)
            for i in range(400):
                if stop.is_set():
                    return
                key = b"hop/%d" % (i % 7)
                resp = kv.Put(rpc.PutRequest(key=key, value=b"%d" % i), timeout=10)
                written.append((resp.header.revision, key, b"%d" % i))

    start = put(leader.address, b"hop-start", b"") + 1
    t = threading.Thread(target=writer)
    t.start()
    got: list[Put] = []
    hops = 0
    try:
        while len(got) < 400:
            member = cluster.running()[hops % 3]  # leader and followers in turn
            hops += 1
            with WatchClient(member.address) as c:
                c.create(b"hop/", prefix_end(b"hop/"), start_revision=got[-1][0] + 1 if got
                         else start)
                more = min(25, 400 - len(got))
                c.wait(lambda rs, more=more: sum(len(r.events) for r in rs) >= more)
                got += events(c)
    finally:
        stop.set()
        t.join()
    assert got == written and hops >= 3


def test_resume_after_the_watched_member_dies(cluster: PetcdCluster) -> None:
    leader = cluster.wait_leader()
    victim = cluster.followers(leader)[0]
    start = put(leader.address, b"die-start", b"") + 1
    with WatchClient(victim.address) as c:
        c.create(b"die/", prefix_end(b"die/"), start_revision=start)
        written = [(put(leader.address, b"die/%d" % i, b"a"), b"die/%d" % i, b"a")
                   for i in range(10)]
        c.wait_events(0, 10)
        got = events(c)
        victim.kill()
    try:
        written += [(put(leader.address, b"die/%d" % i, b"b"), b"die/%d" % i, b"b")
                    for i in range(10)]
        other = next(m for m in cluster.running() if m is not victim)
        with WatchClient(other.address) as c:
            c.create(b"die/", prefix_end(b"die/"), start_revision=got[-1][0] + 1)
            c.wait_events(0, 20 - len(got))
            got += events(c)
        assert got == written
    finally:
        victim.start()
        cluster.wait_leader()


def test_follower_sent_a_snapshot_catches_its_watchers_up(tmp_path_factory: pytest.TempPathFactory,
                                                          request: pytest.FixtureRequest) -> None:
    c = PetcdCluster(tmp_path_factory.mktemp("watch-snap"), 3, args=[
        *FAST, "--snapshot-count", "40", "--experimental-snapshot-catchup-entries", "10"])
    failed_before = request.session.testsfailed
    try:
        c.start()
        leader = c.wait_leader()
        lagging = c.followers(leader)[0]
        with WatchClient(lagging.address) as w:
            w.create(b"snap/", prefix_end(b"snap/"), prev_kv=True)
            w.wait_created(1)
            written = [(put(leader.address, b"snap/%d" % (i % 9), b"%d" % i),
                        b"snap/%d" % (i % 9), b"%d" % i) for i in range(5)]
            w.wait_events(0, 5)
            lagging.pause()
            try:
                written += [(put(leader.address, b"snap/%d" % (i % 9), b"%d" % i),
                             b"snap/%d" % (i % 9), b"%d" % i) for i in range(5, 300)]
            finally:
                lagging.resume()
            w.wait_events(0, 300, timeout=60)
            time.sleep(0.3)
            assert events(w) == written
            prev: dict[bytes, bytes] = {}
            for e in w.events(0):
                assert e.prev_kv.value == prev.get(e.kv.key, b"")
                prev[e.kv.key] = e.kv.value
        assert "installed the snapshot" in lagging.log_tail(200_000)
    finally:
        if request.session.testsfailed > failed_before:
            sys.stderr.write(c.dump_logs())
        c.kill_all()
