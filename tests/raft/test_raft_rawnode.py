"""The RawNode driving API and the Ready-loop contract, through the public API only."""

from __future__ import annotations

import pytest

from petcd.raft import (
    NONE,
    ConfChange,
    ConfChangeType,
    Config,
    ConfigError,
    ConfState,
    DropReason,
    EntryType,
    HardState,
    MemoryStorage,
    Message,
    MessageType,
    Peer,
    ProgressState,
    ProposalDropped,
    RawNode,
    ReadState,
    Ready,
    Role,
    decode_conf_change,
)


class Driver:
    """Follows the Ready contract of petcd.raft.rawnode literally."""

    def __init__(self, node_id: int, storage: MemoryStorage | None = None, **cfg: object) -> None:
        self.storage = storage if storage is not None else MemoryStorage()
        self.config = Config(id=node_id, seed=node_id, **cfg)  # type: ignore[arg-type]
        self.node = RawNode(self.config, self.storage)
        self.applied: list[bytes] = []
        self.conf_state = ConfState()
        self.outbox: list[Message] = []
        self.readies: list[Ready] = []

    def handle(self) -> bool:
        if not self.node.has_ready():
            return False
        rd = self.node.ready()
        self.readies.append(rd)
        if rd.snapshot is not None:
            self.storage.apply_snapshot(rd.snapshot)
        self.storage.append(rd.entries)
        if rd.hard_state is not None:
            self.storage.set_hard_state(rd.hard_state)
        self.outbox.extend(rd.messages)
        for e in rd.committed_entries:
            if e.type == EntryType.CONF_CHANGE:
                self.conf_state = self.node.apply_conf_change(decode_conf_change(e.data))
            elif e.data:
                self.applied.append(e.data)
        self.node.advance(rd)
        return True


def run(drivers: dict[int, Driver]) -> None:
    busy = True
    while busy:
        busy = False
        for d in drivers.values():
            while d.handle():
                busy = True
            msgs, d.outbox = d.outbox, []
            for m in msgs:
                busy = True
                drivers[m.to].node.step(m)


def cluster(n: int = 3, **cfg: object) -> dict[int, Driver]:
    ids = list(range(1, n + 1))
    drivers = {i: Driver(i, **cfg) for i in ids}
    for d in drivers.values():
        d.node.bootstrap([Peer(i, b"member-%d" % i) for i in ids])
    run(drivers)
    return drivers


# -------------------------------------------------------------- bootstrap


def test_bootstrap_first_ready_persists_and_applies_the_membership() -> None:
    d = Driver(1)
    d.node.bootstrap([Peer(1, b"a"), Peer(2, b"b"), Peer(3, b"c")])
    rd = d.node.ready()
    assert rd.hard_state == HardState(term=1, vote=0, commit=3)
    assert [(e.index, e.term, e.type) for e in rd.entries] == [
        (i, 1, EntryType.CONF_CHANGE) for i in (1, 2, 3)
    ]
    assert rd.committed_entries == rd.entries and rd.must_sync
    ccs = [decode_conf_change(e.data) for e in rd.committed_entries]
    assert [(cc.type, cc.node_id, cc.context) for cc in ccs] == [
        (ConfChangeType.ADD_NODE, 1, b"a"),
        (ConfChangeType.ADD_NODE, 2, b"b"),
        (ConfChangeType.ADD_NODE, 3, b"c"),
    ]


def test_bootstrap_single_member_elects_itself_on_the_first_tick() -> None:
    d = Driver(1)
    d.node.bootstrap([Peer(1)])
    d.handle()
    d.node.tick()
    assert d.node.is_leader
    d.handle()
    soft = d.readies[-1].soft_state
    assert soft is not None and (soft.lead, soft.role) == (1, Role.LEADER)


def test_bootstrap_three_members_then_replicate() -> None:
    drivers = cluster(3)
    assert all(d.conf_state.voters == (1, 2, 3) for d in drivers.values())
    drivers[2].node.campaign()
    run(drivers)
    assert drivers[2].node.is_leader and drivers[1].node.lead == 2
    drivers[3].node.propose(b"via follower")
    run(drivers)
    drivers[2].node.propose_batch([b"a", b"b"])
    run(drivers)
    for d in drivers.values():
        assert d.applied == [b"via follower", b"a", b"b"]


@pytest.mark.parametrize(
    "peers", [[], [Peer(1), Peer(1)], [Peer(0)]], ids=["empty", "duplicate", "zero"]
)
def test_bootstrap_rejects_bad_peer_lists(peers: list[Peer]) -> None:
    with pytest.raises(ConfigError):
        Driver(1).node.bootstrap(peers)


def test_bootstrap_rejects_non_empty_storage() -> None:
    d = Driver(1)
    d.node.bootstrap([Peer(1)])
    d.handle()
    with pytest.raises(ConfigError):
        RawNode(Config(id=1), d.storage).bootstrap([Peer(1)])


# ------------------------------------------------------------ Ready loop


def test_ready_reports_hard_state_only_when_it_changes() -> None:
    drivers = cluster(3)
    drivers[1].node.campaign()
    run(drivers)
    follower = drivers[2]
    follower.readies.clear()
    for _ in range(3):
        drivers[1].node.tick()  # heartbeats carry nothing new
        run(drivers)
    assert follower.readies and all(rd.hard_state is None for rd in follower.readies)


def test_commit_only_changes_need_no_fsync() -> None:
    drivers = cluster(3)
    drivers[1].node.campaign()
    run(drivers)
    drivers[1].node.propose(b"x")
    leader = drivers[1]
    leader.readies.clear()
    run(drivers)
    commit_only = [rd for rd in leader.readies if rd.hard_state and not rd.entries]
    assert commit_only and all(not rd.must_sync for rd in commit_only)
    with_entries = [rd for rd in leader.readies if rd.entries]
    assert with_entries and all(rd.must_sync for rd in with_entries)


def test_votes_must_be_persisted_before_they_are_sent() -> None:
    drivers = cluster(3, pre_vote=False)
    drivers[1].node.campaign()
    rd = drivers[1].node.ready()
    assert rd.hard_state is not None and rd.hard_state.vote == 1 and rd.must_sync
    assert not rd.send_before_persist  # it is a candidate: its vote must be durable first
    drivers[1].node.advance(rd)


def test_leader_messages_may_be_sent_before_persisting() -> None:
    drivers = cluster(3)
    drivers[1].node.campaign()
    run(drivers)
    drivers[1].node.propose(b"x")
    rd = drivers[1].node.ready()
    assert rd.entries and rd.messages and rd.send_before_persist and rd.hard_state is None
    drivers[1].node.advance(rd)


def test_single_member_commits_within_the_same_ready() -> None:
    d = Driver(1)
    d.node.bootstrap([Peer(1)])
    d.handle()
    d.node.tick()
    d.handle()
    d.node.propose(b"x")
    rd = d.node.ready()
    assert [e.data for e in rd.entries] == [b"x"] and rd.committed_entries == rd.entries
    d.node.advance(rd)


def test_ready_twice_without_advance_is_an_error() -> None:
    d = Driver(1)
    d.node.bootstrap([Peer(1)])
    d.node.ready()
    assert not d.node.has_ready()
    with pytest.raises(RuntimeError):
        d.node.ready()


def test_advance_without_ready_is_an_error() -> None:
    d = Driver(1)
    d.node.bootstrap([Peer(1)])
    rd = d.node.ready()
    d.node.advance(rd)
    with pytest.raises(RuntimeError):
        d.node.advance(rd)


def test_inputs_between_ready_and_advance_are_kept() -> None:
    drivers = cluster(3)
    drivers[1].node.campaign()
    run(drivers)
    leader = drivers[1].node
    leader.propose(b"a")
    rd = leader.ready()
    leader.propose(b"b")  # arrives while the caller is persisting "a"
    drivers[1].storage.append(rd.entries)
    leader.advance(rd)
    rd2 = leader.ready()
    assert [e.data for e in rd2.entries] == [b"b"]
    leader.advance(rd2)


def test_committed_entries_are_paginated() -> None:
    drivers = cluster(3, max_committed_size_per_ready=100)
    drivers[1].node.campaign()
    run(drivers)
    drivers[1].node.propose_batch([b"x" * 40] * 10)
    drivers[2].readies.clear()
    run(drivers)
    sizes = [len(rd.committed_entries) for rd in drivers[2].readies if rd.committed_entries]
    assert max(sizes) <= 2 and sum(sizes) == 10
    assert drivers[2].applied == [b"x" * 40] * 10


def test_read_index_comes_back_in_a_ready() -> None:
    drivers = cluster(3)
    drivers[1].node.campaign()
    run(drivers)
    drivers[1].node.propose(b"x")
    run(drivers)
    drivers[3].node.read_index(b"batch-1")
    drivers[3].readies.clear()
    run(drivers)
    states = [rs for rd in drivers[3].readies for rs in rd.read_states]
    assert states == [ReadState(drivers[1].node.status().commit, b"batch-1")]


# ------------------------------------------------------------------ inputs


def test_step_refuses_local_message_types() -> None:
    d = Driver(1)
    with pytest.raises(ValueError):
        d.node.step(Message(MessageType.HUP, to=1, from_=1))


def test_step_drops_answers_from_strangers() -> None:
    drivers = cluster(3)
    drivers[1].node.campaign()
    run(drivers)
    drivers[1].node.step(Message(MessageType.APP_RESP, to=1, from_=9, term=2, index=99))
    assert 9 not in drivers[1].node.status().progress


def test_forwarded_proposal_dropped_by_the_leader_is_silent() -> None:
    drivers = cluster(3)
    drivers[1].node.campaign()
    run(drivers)
    drivers[1].node.transfer_leader(3)
    drivers[1].node.step(
        Message(MessageType.PROP, to=1, from_=2, entries=[]),
    )


def test_propose_without_leader_raises_with_reason() -> None:
    drivers = cluster(3)
    with pytest.raises(ProposalDropped) as err:
        drivers[1].node.propose(b"x")
    assert err.value.reason == DropReason.NO_LEADER


def test_conf_change_round_trip() -> None:
    drivers = cluster(3)
    drivers[1].node.campaign()
    run(drivers)
    drivers[4] = Driver(4)  # joins empty
    drivers[1].node.propose_conf_change(
        ConfChange(ConfChangeType.ADD_LEARNER_NODE, 4, context=b"peer-url", id=77)
    )
    run(drivers)
    assert drivers[1].conf_state == ConfState((1, 2, 3), (4,))
    drivers[1].node.propose(b"after")
    run(drivers)
    assert drivers[4].conf_state == ConfState((1, 2, 3), (4,))
    assert drivers[4].applied == [b"after"]
    ccs = [
        decode_conf_change(e.data)
        for rd in drivers[4].readies
        for e in rd.committed_entries
        if e.type == EntryType.CONF_CHANGE
    ]
    assert ccs[-1] == ConfChange(ConfChangeType.ADD_LEARNER_NODE, 4, b"peer-url", 77)
    drivers[1].node.propose_conf_change(ConfChange(ConfChangeType.ADD_NODE, 4))
    run(drivers)
    assert drivers[1].conf_state == ConfState((1, 2, 3, 4), ())
    assert drivers[1].node.status().progress[4].is_learner is False


def test_transfer_leader_and_status() -> None:
    drivers = cluster(3)
    drivers[1].node.campaign()
    run(drivers)
    drivers[1].node.transfer_leader(2)
    run(drivers)
    status = drivers[2].node.status()
    assert status.role == Role.LEADER and status.lead == 2 and status.lead_transferee == NONE
    assert status.conf_state == ConfState((1, 2, 3), ())
    assert set(status.progress) == {1, 2, 3}
    for pr in status.progress.values():
        assert pr.match == status.last_index and pr.state == ProgressState.REPLICATE
    assert drivers[1].node.status().progress == {}


def test_report_snapshot_and_unreachable_are_harmless_on_followers() -> None:
    drivers = cluster(3)
    drivers[2].node.report_unreachable(1)
    drivers[2].node.report_snapshot(1, False)
    assert drivers[2].node.role == Role.FOLLOWER


# ----------------------------------------------------------------- restart


def test_restart_hands_out_only_entries_after_applied() -> None:
    d = Driver(1)
    d.node.bootstrap([Peer(1)])
    d.handle()
    d.node.tick()
    d.handle()
    d.node.propose_batch([b"a", b"b", b"c"])
    d.handle()
    applied_index = d.node.status().applied - 1  # pretend "c" was not applied yet
    again = RawNode(Config(id=1, applied=applied_index), d.storage)
    rd = again.ready()
    assert [e.data for e in rd.committed_entries] == [b"c"] and rd.entries == []
    assert again.status().conf_state == ConfState((1,), ())  # replayed from the log
    again.advance(rd)
    again.tick()
    assert again.is_leader


def test_restart_from_snapshot_plus_log() -> None:
    d = Driver(1)
    d.node.bootstrap([Peer(1)])
    d.handle()
    d.node.tick()
    d.handle()
    d.node.propose_batch([b"a", b"b"])
    d.handle()
    applied = d.node.status().applied
    d.storage.create_snapshot(applied - 1, d.conf_state, b"state")
    d.storage.compact(applied - 1)
    # Seed a fresh storage the way a server does from its WAL.
    st = MemoryStorage()
    st.apply_snapshot(d.storage.snapshot())
    st.append(d.storage.entries(d.storage.first_index(), d.storage.last_index() + 1))
    st.set_hard_state(d.storage.hard_state)
    again = RawNode(Config(id=1, applied=applied - 1), st)
    rd = again.ready()
    assert [e.data for e in rd.committed_entries] == [b"b"]


def test_restart_with_applied_behind_the_snapshot_is_refused() -> None:
    st = MemoryStorage()
    d = Driver(1, st)
    d.node.bootstrap([Peer(1)])
    d.handle()
    d.node.tick()
    d.handle()
    st.create_snapshot(2, ConfState((1,)), b"")
    st.compact(2)
    with pytest.raises(ConfigError):
        RawNode(Config(id=1, applied=1), st)


def test_restart_tolerates_an_unsynced_commit_index() -> None:
    d = Driver(1)
    d.node.bootstrap([Peer(1)])
    d.handle()
    d.node.tick()
    d.handle()
    d.node.propose(b"a")
    d.handle()
    hs = d.storage.hard_state
    d.storage.set_hard_state(HardState(hs.term, hs.vote, 1))  # the commit index was not synced
    again = RawNode(Config(id=1, applied=hs.commit), d.storage)
    assert again.status().commit == hs.commit


@pytest.mark.parametrize(
    "cfg",
    [
        {"id": 0},
        {"id": 1, "heartbeat_tick": 0},
        {"id": 1, "election_tick": 1, "heartbeat_tick": 1},
        {"id": 1, "max_inflight_msgs": 0},
        {"id": 1, "max_size_per_msg": 0},
    ],
)
def test_invalid_config(cfg: dict[str, int]) -> None:
    with pytest.raises(ConfigError):
        RawNode(Config(**cfg), MemoryStorage())  # type: ignore[arg-type]
