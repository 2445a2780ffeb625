"""The Raft driver and the lease driver in one process, without sockets (tests/server/
inproc.py): real Nodes over an in-memory peer transport."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from petcd import errors
from petcd.errors import EtcdError, LeaderUnreachable
from petcd.lease.apply import LEASE_GRANT
from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.server.node import Node
from petcd.server.proposal import COMPACTION, PUT
from petcd.server.raftnode.leadership import LeaderWatch

from .inproc import Cluster, run


async def put(node: Node, key: bytes, value: bytes = b"v", lease: int = 0) -> rpc.PutResponse:
    req = rpc.PutRequest(key=key, value=value, lease=lease)
    resp = await node.propose(PUT, req.SerializeToString(), req)
    assert isinstance(resp, rpc.PutResponse), resp
    return resp


def test_writes_through_any_member_and_linearizable_reads(tmp_path: Path) -> None:
    async def body(c: Cluster) -> None:
        leader = await c.leader()
        f1, f2 = c.followers(leader)
        revs = [(await put(n, b"k%d" % i)).header.revision
                for i, n in enumerate([leader, f1, f2, f1])]
        assert revs == sorted(revs) and len(set(revs)) == 4
        # A follower's read barrier: afterwards it has applied every acknowledged write.
        barrier = f2.read_barrier()
        assert barrier is not None
        await barrier
        assert f2.range(rpc.RangeRequest(key=b"k3")).kvs[0].value == b"v"
        # Many reads at once share ReadIndex rounds; all see the write.
        await put(leader, b"x", b"1")
        barriers = [f1.read_barrier() for _ in range(50)]
        await asyncio.gather(*[b for b in barriers if b is not None])
        assert f1.range(rpc.RangeRequest(key=b"x")).kvs[0].value == b"1"
    run(body, tmp_path)


def test_member_ops_are_forwarded_to_the_leader(tmp_path: Path) -> None:
    async def body(c: Cluster) -> None:
        leader = await c.leader()
        f = c.followers(leader)[0]
        urls = ["http://127.0.0.1:9/moved"]
        member, members = await f.update_member(f.member_id, urls)
        assert member is None and any(m.peer_urls == urls for m in members)
        for n in c.nodes:
            await asyncio.wait_for(_until(lambda n=n: n.membership.members[
                f.member_id].peer_urls == urls), 10)
        # A refusal is the leader's answer, unchanged.
        with pytest.raises(EtcdError) as e:
            await f.remove_member(12345)
        assert e.value.message == "etcdserver: member not found"
    run(body, tmp_path)


def test_move_leader_and_stop_hands_leadership_over(tmp_path: Path) -> None:
    async def body(c: Cluster) -> None:
        leader = await c.leader()
        target = c.followers(leader)[0]
        await leader.move_leader(target.member_id)
        assert (await c.leader()).member_id == target.member_id
        with pytest.raises(EtcdError) as e:
            await leader.move_leader(leader.member_id)  # no longer the leader
        assert e.value.kind is errors.NOT_LEADER
    run(body, tmp_path)


def test_lagging_follower_catches_up_from_a_snapshot(tmp_path: Path) -> None:
    async def body(c: Cluster) -> None:
        leader = await c.leader()
        late = c.followers(leader)[0]
        grant = rpc.LeaseGrantRequest(ID=7, TTL=600)
        assert isinstance(await leader.propose(LEASE_GRANT, grant.SerializeToString(), grant),
                          rpc.LeaseGrantResponse)
        hub = late.watch_hub(response_limit=1 << 20, progress_interval=600.0)
        late.feed_watch_hub(hub)
        told: list[int] = []  # the reload's calls (the commit listener holds its own)
        notify = hub.notify
        hub.notify = lambda events, rev: (told.append(rev), notify(events, rev))  # type: ignore[method-assign]
        c.net.isolate(late.member_id)
        for i in range(60):
            await put(leader, b"s%d" % i, lease=7 if i == 0 else 0)
        # (snapshots are taken in the background: until one compacted the log past what
        # the late member has, it could still catch up from entries)
        await asyncio.wait_for(_until(
            lambda: leader._log.mem.first_index() > late._log.last_index + 1), 20)
        c.net.heal()
        sent = leader._log.transport
        await asyncio.wait_for(_until(
            lambda: late.store.current_revision == leader.store.current_revision), 20)
        assert sent.snapshots_sent >= 1  # type: ignore[attr-defined]
        # Derived state was reloaded from the installed backend: the lease and its key.
        assert late.lessor.get(7) is not None
        assert late.lessor.keys_of(late.lessor.get(7)) == [b"s0"]  # type: ignore[arg-type]
        assert late.store.hash_kv() == leader.store.hash_kv()
        assert told and told[0] > 1  # the watch hub was told last, at the restored revision
        assert hub.revision == late.store.current_revision
    run(body, tmp_path, snapshot_count=20, snapshot_catchup_entries=5)


def test_physical_compaction_in_steps_while_writes_go_on(tmp_path: Path) -> None:
    async def body(c: Cluster) -> None:
        node = c.nodes[0]
        for r in range(3):
            for i in range(0, 400, 50):
                txn = rpc.TxnRequest(success=[rpc.RequestOp(request_put=rpc.PutRequest(
                    key=b"c%04d" % k, value=b"%d" % r)) for k in range(i, i + 50)])
                req_resp = await node.propose("txn", txn.SerializeToString(), txn)
                assert isinstance(req_resp, rpc.TxnResponse)
        rev = node.store.current_revision
        steps = 0
        step = node.applier.compaction_step

        def counted() -> None:
            nonlocal steps
            steps += 1
            step()

        node.applier.compaction_step = counted  # type: ignore[method-assign]
        req = rpc.CompactionRequest(revision=rev, physical=True)
        compaction = node.propose(COMPACTION, req.SerializeToString(), req)
        written = 0
        while not compaction.done():
            await put(node, b"during")
            written += 1
            # (a put answered inside propose() never yields; a client's next request
            # comes through the loop, so the loop turns between puts, as it does here)
            await asyncio.sleep(0)
        assert isinstance(compaction.result(), rpc.CompactionResponse)
        assert node.applier.compaction_pending is False
        assert steps >= 39  # 400 keys, at most 10 a step (the first in the Compact's batch)
        assert written >= 1  # and writes were answered meanwhile
        with node.store.read() as r:
            assert r.compact_rev == rev
    # 400 keys in steps of at most 10: at least 40 steps, --experimental-compaction-
    # sleep-interval apart.
    run(body, tmp_path, size=1, compaction_batch_limit=10, compaction_sleep_interval=0.002)


def test_writes_wait_while_the_apply_path_is_held_and_keep_log_order(tmp_path: Path) -> None:
    # An idle apply loop lets the Ready loop apply on its own turn; not while someone
    # (a defragment, a snapshot install) holds the apply path: then the writes wait,
    # committed, and are applied in log order once it is released.
    async def body(c: Cluster) -> None:
        node = c.nodes[0]
        first = await put(node, b"before")
        base = node.committed_index
        async with node.applier.paused():
            reqs = [rpc.PutRequest(key=b"held%d" % i) for i in range(5)]
            futs = [node.propose(PUT, r.SerializeToString(), r) for r in reqs]
            while node.committed_index < base + 5:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)
            assert not any(f.done() for f in futs)
            assert node.store.current_revision == first.header.revision
        revs = [r.header.revision for r in await asyncio.gather(*futs)]  # type: ignore[union-attr]
        assert revs == list(range(first.header.revision + 1, first.header.revision + 6))
        assert (await put(node, b"after")).header.revision == revs[-1] + 1
    run(body, tmp_path, size=1, unsafe_no_fsync=False)  # (real fdatasyncs)


def test_stopped_driver_refuses_and_fails_waiters(tmp_path: Path) -> None:
    async def main() -> None:
        c = Cluster(tmp_path, 1)
        await c.start()
        node = c.nodes[0]
        await put(node, b"a")
        await c.stop()
        req = rpc.PutRequest(key=b"b")
        assert (await node.propose(PUT, req.SerializeToString(), req)).kind is errors.STOPPED
        with pytest.raises(EtcdError) as e:
            await node.add_member(["http://127.0.0.1:9/new"], False)
        assert e.value.kind is errors.STOPPED
    asyncio.run(main())


# -- the leader helper on its own


def test_call_leader_retries_with_the_next_leader() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        watch = LeaderWatch(1)
        asked: list[int] = []

        async def there(lead: int) -> str:
            asked.append(lead)
            if lead == 2:
                loop.call_later(0.01, watch.set, 3)  # leadership moves on
                raise LeaderUnreachable("2 no longer leads")
            return f"answered by {lead}"

        async def here() -> str:
            return "here"

        loop.call_later(0.01, watch.set, 2)  # no leader yet: the call waits for one
        got = await watch.call_leader(here, there, loop.time() + 5, pause=10)
        assert got == "answered by 3" and asked == [2, 3]
        watch.set(1)
        assert await watch.call_leader(here, there, loop.time() + 5) == "here"

    asyncio.run(main())


def test_call_leader_times_out_and_stops() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        watch = LeaderWatch(1)

        async def unreachable(lead: int) -> None:
            raise LeaderUnreachable("down")

        async def here() -> None:
            raise AssertionError("not the leader")

        with pytest.raises(EtcdError) as e:
            await watch.call_leader(here, unreachable, loop.time() + 0.05)
        assert e.value.kind is errors.TIMEOUT  # (no leader at all)
        watch.set(2)
        with pytest.raises(EtcdError) as e:
            await watch.call_leader(here, unreachable, loop.time() + 0.2, pause=0.01)
        assert e.value.kind is errors.TIMEOUT  # (retried until the deadline)
        watch.set(0)
        loop.call_later(0.01, watch.close)
        with pytest.raises(EtcdError) as e:
            await watch.call_leader(here, unreachable, loop.time() + 5)
        assert e.value.kind is errors.STOPPED

    asyncio.run(main())


async def _until(cond, step: float = 0.01) -> None:  # type: ignore[no-untyped-def]
    while not cond():
        await asyncio.sleep(step)


async def _parked(node: Node) -> None:
    """Until the lone voter's Ready loop is parked with nothing to do: its future set but
    not yet woken (a tick's wake leaves _waiter set until the loop runs; propose() then
    leaves it to the loop), and no backend commit in flight (the batch would wait for
    it)."""
    d = node._log
    await _until(lambda: d.ready_loop._waiter is not None and not d.ready_loop._woken
                 and not node.backend.committing)


async def _lone_voter_parked(c: Cluster) -> Node:
    """The lone voter, every inline fdatasync of it counting as fast, warmed by one put
    and parked (the inline path's starting point)."""
    node = c.nodes[0]
    node._log.wal_writer.fast = 1000.0
    await put(node, b"warm")
    await _parked(node)
    return node


def test_lone_proposal_on_a_lone_voter_is_answered_inside_propose(tmp_path: Path) -> None:
    """Ready loop idle, one proposal, a WAL that syncs inline: propose() itself hands it
    to Raft, makes it durable, applies it and answers (no loop wake-up). Two at once go
    the loop's way, in log order."""
    async def body(c: Cluster) -> None:
        node = await _lone_voter_parked(c)
        d = node._log
        saves, durable = d.wal_writer.inline_saves, d.ready_loop.durable
        req = rpc.PutRequest(key=b"k", value=b"1")
        fut = node.propose(PUT, req.SerializeToString(), req)
        assert fut.done()  # answered before propose() returned
        resp = fut.result()
        assert isinstance(resp, rpc.PutResponse)
        assert d.wal_writer.inline_saves == saves + 1
        assert d.ready_loop.durable == durable + 1 == d.applied_index  # synced first
        assert node.range(rpc.RangeRequest(key=b"k")).kvs[0].value == b"1"
        await _parked(node)
        a = node.propose(PUT, req.SerializeToString(), req)
        b = node.propose(PUT, req.SerializeToString(), req)
        ra, rb = await a, await b
        assert isinstance(ra, rpc.PutResponse) and isinstance(rb, rpc.PutResponse)
        assert rb.header.revision == ra.header.revision + 1 == resp.header.revision + 2
    run(body, tmp_path, size=1, unsafe_no_fsync=False)  # (real fdatasyncs)


def test_proposals_read_in_one_turn_are_not_synced_one_by_one(tmp_path: Path) -> None:
    """Concurrent writers: proposals made in one turn of the event loop (requests that
    waited in their sockets while the first one synced) go to the loop as one batch after
    the first, not each inline with its own fdatasync and the loop blocked."""
    async def body(c: Cluster) -> None:
        node = await _lone_voter_parked(c)
        d = node._log
        saves = d.wal_writer.inline_saves
        req = rpc.PutRequest(key=b"k", value=b"1")
        futs = [node.propose(PUT, req.SerializeToString(), req) for _ in range(8)]
        assert [f.done() for f in futs] == [True] + [False] * 7
        revs = [(await f).header.revision for f in futs]  # type: ignore[attr-defined]
        assert revs == list(range(revs[0], revs[0] + 8))
        assert d.wal_writer.inline_saves == saves + 1
        await put(node, b"after")  # (the loop's: its last batch was not a lone one)
        await _parked(node)
        saves = d.wal_writer.inline_saves
        fut = node.propose(PUT, req.SerializeToString(), req)  # lone again: inline
        assert fut.done() and d.wal_writer.inline_saves == saves + 1
    run(body, tmp_path, size=1, unsafe_no_fsync=False)  # (real fdatasyncs)


def test_a_followers_lone_append_is_synced_and_answered_on_arrival(tmp_path: Path) -> None:
    """Followers whose WAL syncs inline handle a lone append in the peer callback
    (ReadyLoop.receive_inline): fdatasync, answer, apply, no loop wake-up. The writes
    commit, and every follower holds them."""
    async def body(c: Cluster) -> None:
        leader = await c.leader()
        followers = c.followers(leader)
        for n in followers:
            n._log.wal_writer.fast = 1000.0  # (every inline fdatasync counts as fast)
        before = [n._log.ready_loop.inline_readies for n in followers]
        done = [0, 0]
        i = 0
        # (one event loop for all three here, woken by ticks too: not every time)
        while min(done) < 3 and i < 300:
            await put(leader, b"r%d" % i, b"%d" % i)
            done = [n._log.ready_loop.inline_readies - b
                    for n, b in zip(followers, before, strict=True)]
            i += 1
        assert min(done) >= 3, (done, i)
        await put(leader, b"r19", b"19")
        for n in followers:
            barrier = n.read_barrier()
            assert barrier is not None
            await barrier
            assert n.range(rpc.RangeRequest(key=b"r19")).kvs[0].value == b"19"
            assert n._log.applied_index == leader._log.applied_index
    run(body, tmp_path, unsafe_no_fsync=False)  # (real fdatasyncs)
def test_backend_commit_runs_beside_the_loop_and_reads_see_every_applied_write(
        tmp_path: Path) -> None:
    """The batch interval's LMDB commit runs on the backend's thread: meanwhile the loop
    goes on (a proposal is taken and persisted) but nothing is applied, and a read waits
    for the commit, so it sees every write applied before it; afterwards the held batch
    is applied and answered."""
    async def body(c: Cluster) -> None:
        n = await c.leader()
        backend = n.backend
        await put(n, b"a", b"1")
        gate = threading.Event()
        assert backend._committer is not None
        backend._committer.submit(gate.wait, 30)  # the commit queues behind this
        await asyncio.wait_for(_until(lambda: backend.committing), 10)
        later = asyncio.ensure_future(put(n, b"b", b"2"))
        await asyncio.sleep(0.2)  # (the loop runs: the put is proposed, not applied)
        assert not later.done() and backend.committing
        threading.Timer(0.2, gate.set).start()
        # A read while the commit is in flight waits for it, and sees "a".
        assert n.range(rpc.RangeRequest(key=b"a")).kvs[0].value == b"1"
        assert not backend.committing
        assert backend.committed_index() == backend.consistent_index()
        await asyncio.wait_for(later, 10)
        assert n.range(rpc.RangeRequest(key=b"b")).kvs[0].value == b"2"
    run(body, tmp_path, size=1, backend_batch_interval_ms=10)
