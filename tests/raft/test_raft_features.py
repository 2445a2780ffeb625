"""Behaviour beyond the paper's basics: pre-vote, check-quorum, leader
transfer, ReadIndex, proposals, flow control, snapshots, learners and
membership, and the corner cases etcd's raft is known for."""

from __future__ import annotations

import pytest
from raft_harness import Network, become_leader, entry_terms, new_raft, persist, storage_with, take

from petcd.raft import (
    ConfChange,
    ConfChangeType,
    DropReason,
    Entry,
    EntryType,
    HardState,
    InvariantViolation,
    Message,
    MessageType,
    ProgressState,
    ProposalDropped,
    ReadIndexDropped,
    encode_conf_change,
)
from petcd.raft.basics import ReadState, Role
from petcd.raft.raft import Raft

M = MessageType


def msg(type_: MessageType, frm: int, to: int, term: int = 0, **kw: object) -> Message:
    return Message(type_, to=to, from_=frm, term=term, **kw)  # type: ignore[arg-type]


def elected(n: int = 3, **config: object) -> Network:
    net = Network(*([None] * n), **config)
    net.campaign(1)
    assert net.peers[1].role == Role.LEADER
    return net


def tick_all(net: Network, n: int) -> None:
    for _ in range(n):
        for node_id in list(net.peers):
            net.tick(node_id)


# ------------------------------------------------------------------ pre-vote


def test_prevote_keeps_a_partitioned_member_from_inflating_its_term() -> None:
    net = elected(3, pre_vote=True)
    leader = net.peers[1]
    net.isolate(3)
    for _ in range(5):
        net.campaign(3)
    lonely = net.peers[3]
    assert lonely.term == leader.term and lonely.role == Role.PRE_CANDIDATE
    net.recover()
    net.tick(1)  # a heartbeat brings it back
    assert leader.role == Role.LEADER and lonely.role == Role.FOLLOWER and lonely.lead == 1


def test_without_prevote_a_rejoining_member_disrupts_the_leader() -> None:
    net = elected(3)
    net.isolate(3)
    for _ in range(3):
        net.campaign(3)
    net.recover()
    net.tick(1)
    net.campaign(3)
    assert net.peers[1].term == net.peers[3].term and net.peers[1].role != Role.LEADER


def test_granting_a_prevote_changes_neither_term_nor_vote() -> None:
    r = new_raft(1, pre_vote=True)
    r.term = 2
    r.step(msg(M.PRE_VOTE, 2, 1, term=3, index=5, log_term=2))
    (resp,) = take(r)
    assert (resp.type, resp.reject, resp.term) == (M.PRE_VOTE_RESP, False, 3)
    assert (r.term, r.vote) == (2, 0)


def test_prevote_win_leads_to_a_real_election() -> None:
    net = Network(None, None, None, pre_vote=True)
    net.campaign(2)
    assert net.peers[2].role == Role.LEADER and net.peers[2].term == 1


def test_prevote_is_refused_to_a_stale_log() -> None:
    net = elected(3, pre_vote=True)
    net.isolate(3)
    net.propose(1, b"x")
    net.recover()
    net.ignored.add(M.APP)  # 3 stays behind
    net.ignored.add(M.HEARTBEAT)
    net.campaign(3)
    assert net.peers[3].role != Role.LEADER and net.peers[1].role == Role.LEADER


# ------------------------------------------------------------- check-quorum


def test_check_quorum_leader_steps_down_without_a_quorum() -> None:
    net = elected(3, check_quorum=True)
    leader = net.peers[1]
    net.isolate(1)
    # Within an election timeout it may still count on answers from before the
    # cut; within two it must have noticed.
    for _ in range(2 * leader.election_timeout):
        net.tick(1)
    assert leader.role == Role.FOLLOWER and leader.lead == 0


def test_check_quorum_leader_stays_while_it_hears_from_a_quorum() -> None:
    net = elected(3, check_quorum=True)
    net.cut(1, 3)
    for _ in range(3 * net.peers[1].election_timeout):
        net.tick(1)
    assert net.peers[1].role == Role.LEADER


def test_check_quorum_lease_ignores_disruptive_votes() -> None:
    net = elected(3, check_quorum=True)
    follower = net.peers[2]
    term = follower.term
    follower.step(msg(M.VOTE, 3, 2, term=term + 1, index=100, log_term=term))
    assert take(follower) == [] and follower.term == term and follower.lead == 1


def test_check_quorum_stale_leader_learns_the_new_term_from_an_append_reply() -> None:
    net = elected(3, check_quorum=True)
    follower = net.peers[2]
    follower.term += 2
    follower.step(msg(M.APP, 1, 2, term=net.peers[1].term, index=0, log_term=0))
    (resp,) = take(follower)
    assert (resp.type, resp.term) == (M.APP_RESP, follower.term)


# ---------------------------------------------------------- leader transfer


def test_transfer_to_an_up_to_date_follower() -> None:
    net = elected(3)
    net.propose(1, b"x")
    term = net.peers[1].term
    net.send(msg(M.TRANSFER_LEADER, 2, 1))
    assert net.peers[2].role == Role.LEADER and net.peers[2].term == term + 1
    assert net.peers[1].role == Role.FOLLOWER and net.peers[1].lead == 2


def test_transfer_request_sent_to_a_follower_is_forwarded() -> None:
    net = elected(3)
    net.send(msg(M.TRANSFER_LEADER, 3, 2))
    assert net.peers[3].role == Role.LEADER


def test_transfer_to_a_slow_follower_catches_it_up_first() -> None:
    net = elected(3)
    net.isolate(3)
    net.propose(1, b"a", b"b")
    net.recover()
    leader = net.peers[1]
    net.send(msg(M.TRANSFER_LEADER, 3, 1))
    assert net.peers[3].role == Role.LEADER
    assert entry_terms(net.peers[3])[: leader.log.last_index()] == entry_terms(leader)


def test_transfer_pending_refuses_proposals_then_times_out() -> None:
    net = elected(3)
    net.isolate(3)
    leader = net.peers[1]
    leader.step(msg(M.TRANSFER_LEADER, 3, 1))
    assert leader.lead_transferee == 3
    with pytest.raises(ProposalDropped) as err:
        leader.propose_batch([b"x"])
    assert err.value.reason == DropReason.TRANSFER_PENDING
    for _ in range(leader.election_timeout):
        net.tick(1)
    assert leader.lead_transferee == 0 and leader.role == Role.LEADER
    leader.propose_batch([b"x"])


@pytest.mark.parametrize("target", [1, 9])
def test_transfer_to_self_or_a_stranger_is_ignored(target: int) -> None:
    net = elected(3)
    net.send(msg(M.TRANSFER_LEADER, target, 1))
    assert net.peers[1].role == Role.LEADER and net.peers[1].lead_transferee == 0


def test_transfer_overrides_the_followers_lease() -> None:
    net = elected(3, check_quorum=True)
    net.send(msg(M.TRANSFER_LEADER, 2, 1))
    assert net.peers[2].role == Role.LEADER


# ---------------------------------------------------------------- ReadIndex


def test_read_index_on_the_leader_after_a_heartbeat_round() -> None:
    net = elected(3)
    net.propose(1, b"x")
    leader = net.peers[1]
    net.ignored.add(M.HEARTBEAT_RESP)
    leader.read_index(b"ctx")
    net.send(*take(leader))
    assert leader.read_states == []  # not confirmed yet
    net.recover()
    leader.read_index(b"ctx")  # a retry of the same request
    net.send(*take(leader))
    assert leader.read_states == [ReadState(leader.log.committed, b"ctx")]


def test_read_index_on_a_follower_is_forwarded() -> None:
    net = elected(3)
    net.propose(1, b"x")
    follower = net.peers[2]
    follower.read_index(b"r1")
    net.send(*take(follower))
    assert follower.read_states == [ReadState(net.peers[1].log.committed, b"r1")]


def test_read_index_waits_for_the_new_leader_to_commit_in_its_term() -> None:
    net = elected(3)
    net.ignored.add(M.APP_RESP)
    net.campaign(2)  # 2 wins but its no-op cannot commit
    leader = net.peers[2]
    assert leader.role == Role.LEADER and leader.log.committed < leader.log.last_index()
    leader.read_index(b"early")
    net.send(*take(leader))
    assert leader.read_states == []
    net.recover()
    net.tick(2)  # heartbeats: followers ask for the missing entries, the no-op commits
    assert leader.read_states == [ReadState(leader.log.committed, b"early")]
    assert leader.log.term(leader.log.committed) == leader.term


def test_read_index_single_member_answers_at_once() -> None:
    r = new_raft(1, [1])
    become_leader(r)
    r.read_index(b"x")
    assert r.read_states == [ReadState(r.log.committed, b"x")]


def test_read_index_without_a_leader_is_refused() -> None:
    r = new_raft(1)
    with pytest.raises(ReadIndexDropped) as err:
        r.read_index(b"x")
    assert err.value.reason == DropReason.NO_LEADER


def test_read_index_never_answered_by_a_deposed_leader() -> None:
    net = elected(3)
    old = net.peers[1]
    net.isolate(1)
    net.campaign(2)
    net.recover()
    net.ignored.add(M.APP)  # keep the old leader unaware
    old.read_index(b"stale")
    net.send(*take(old))
    assert old.read_states == []
    assert not [m for m in net.delivered if m.type == M.HEARTBEAT_RESP and m.context == b"stale"]


def test_read_index_from_a_learner() -> None:
    net = elected(3)
    leader = net.peers[1]
    leader.apply_conf_change(ConfChange(ConfChangeType.ADD_LEARNER_NODE, 4))
    learner = new_raft(4, voters=[1, 2, 3], learners=[4])
    net.peers[4] = learner
    net.send(*take(leader))
    net.tick(1)
    learner.read_index(b"l")
    net.send(*take(learner))
    assert learner.read_states == [ReadState(leader.log.committed, b"l")]


# ---------------------------------------------------------------- proposals


def test_proposal_without_a_leader_is_refused() -> None:
    r = new_raft(1)
    with pytest.raises(ProposalDropped) as err:
        r.propose_batch([b"x"])
    assert err.value.reason == DropReason.NO_LEADER


def test_proposal_on_a_candidate_is_refused() -> None:
    r = new_raft(1)
    r.hup()
    with pytest.raises(ProposalDropped):
        r.propose_batch([b"x"])


def test_proposal_on_a_follower_is_forwarded_to_the_leader() -> None:
    net = elected(3)
    net.propose(2, b"via-2")
    leader = net.peers[1]
    last = leader.log.slice(leader.log.last_index(), leader.log.last_index() + 1)[0]
    assert (last.data, last.term) == (b"via-2", leader.term)
    assert leader.log.committed == last.index


def test_proposal_forwarding_can_be_disabled() -> None:
    net = elected(3, disable_proposal_forwarding=True)
    with pytest.raises(ProposalDropped) as err:
        net.peers[2].propose_batch([b"x"])
    assert err.value.reason == DropReason.FORWARDING_DISABLED


def test_uncommitted_size_limit() -> None:
    r = new_raft(1, max_uncommitted_size=100)
    become_leader(r)
    r.propose_batch([b"x" * 60])  # first one always fits
    with pytest.raises(ProposalDropped) as err:
        r.propose_batch([b"x" * 60])
    assert err.value.reason == DropReason.UNCOMMITTED_LIMIT
    r.reduce_uncommitted_size([Entry(1, 1, data=b"x" * 60)])
    r.propose_batch([b"x" * 60])


def test_one_conf_change_at_a_time() -> None:
    net = elected(3)
    leader = net.peers[1]
    persist(leader)
    leader.log.applied_to(leader.log.committed)  # the caller applied everything
    cc = encode_conf_change(ConfChange(ConfChangeType.ADD_LEARNER_NODE, 4))
    prop = msg(M.PROP, 1, 1, entries=[Entry(0, 0, EntryType.CONF_CHANGE, cc)])
    net.send(prop)
    with pytest.raises(ProposalDropped) as err:
        leader.step(prop)
    assert err.value.reason == DropReason.CONF_CHANGE_PENDING


def test_removing_the_last_voter_is_refused() -> None:
    r = new_raft(1, [1])
    become_leader(r)
    r.log.applied_to(r.log.committed)
    cc = encode_conf_change(ConfChange(ConfChangeType.REMOVE_NODE, 1))
    with pytest.raises(ProposalDropped) as err:
        r.step(msg(M.PROP, 1, 1, entries=[Entry(0, 0, EntryType.CONF_CHANGE, cc)]))
    assert err.value.reason == DropReason.INVALID_CONF_CHANGE


def test_new_leader_refuses_conf_changes_until_its_first_entry_is_applied() -> None:
    net = elected(3)
    leader = net.peers[1]
    cc = encode_conf_change(ConfChange(ConfChangeType.ADD_NODE, 4))
    prop = msg(M.PROP, 1, 1, entries=[Entry(0, 0, EntryType.CONF_CHANGE, cc)])
    with pytest.raises(ProposalDropped):
        leader.step(prop)
    leader.log.applied_to(leader.log.committed)
    leader.step(prop)


# ------------------------------------------------------------- flow control


def _replicating_leader(max_inflight: int = 3, max_size: int = 1 << 20) -> Raft:
    r = new_raft(1, [1, 2], max_inflight_msgs=max_inflight, max_size_per_msg=max_size)
    r.term = 4
    become_leader(r)
    r.step(msg(M.APP_RESP, 2, 1, term=r.term, index=r.log.last_index()))
    assert r.prs[2].state == ProgressState.REPLICATE
    take(r)
    return r


def test_flow_control_stops_at_max_inflight_and_resumes_on_acks() -> None:
    r = _replicating_leader(max_inflight=3)
    for i in range(5):
        r.propose_batch([b"%d" % i])
    apps = take(r)
    assert len(apps) == 3 and r.prs[2].is_paused()
    r.step(msg(M.APP_RESP, 2, 1, term=r.term, index=apps[0].entries[-1].index))
    more = take(r)
    assert len(more) == 1 and [e.data for e in more[0].entries] == [b"3", b"4"]


def test_flow_control_heartbeat_response_frees_one_slot() -> None:
    r = _replicating_leader(max_inflight=2)
    for i in range(4):
        r.propose_batch([b"%d" % i])
    assert len(take(r)) == 2
    r.step(msg(M.HEARTBEAT_RESP, 2, 1, term=r.term))
    assert [m.type for m in take(r)] == [M.APP]


def test_appends_are_size_limited() -> None:
    r = _replicating_leader(max_inflight=100, max_size=100)
    r.propose_batch([b"x" * 30] * 10)  # 46 bytes each with overhead: 2 per message
    apps = take(r)
    assert [len(m.entries) for m in apps] == [2, 2, 2, 2, 2]
    r.propose_batch([b"y" * 500])  # an oversized entry still goes, alone
    assert [len(m.entries) for m in take(r)] == [1]


def test_probe_sends_one_append_until_answered() -> None:
    r = new_raft(1, [1, 2])
    become_leader(r)
    assert [m.type for m in take(r)] == [M.VOTE, M.APP]  # the probe carries the no-op
    r.propose_batch([b"a"])
    r.propose_batch([b"b"])
    assert take(r) == [] and r.prs[2].state == ProgressState.PROBE


def test_unreachable_peer_goes_back_to_probing() -> None:
    r = _replicating_leader()
    r.step(Message(M.UNREACHABLE, from_=2))
    assert r.prs[2].state == ProgressState.PROBE


# ----------------------------------------------------- fast conflict back-off


def test_rejection_hint_skips_a_whole_divergent_term() -> None:
    # The follower holds 50 entries of term 2 that the term-3 leader never had.
    follower_log = [(1, i) for i in range(1, 6)] + [(2, i) for i in range(6, 56)]
    leader_log = [(1, i) for i in range(1, 6)] + [(3, i) for i in range(6, 60)]
    leader = new_raft(1, [1, 2, 3], storage=storage_with([1, 2, 3], entries=leader_log))
    leader._load_hard_state(HardState(term=3, commit=5))
    follower = new_raft(2, [1, 2, 3], storage=storage_with([1, 2, 3], entries=follower_log))
    follower._load_hard_state(HardState(term=3, commit=5))
    net = Network(leader, follower, new_raft(3))
    net.peers[3]._load_hard_state(HardState(term=3))
    net.campaign(1)
    assert leader.role == Role.LEADER
    rejections = [m for m in net.delivered if m.type == M.APP_RESP and m.from_ == 2 and m.reject]
    assert 1 <= len(rejections) <= 2
    assert entry_terms(follower) == entry_terms(leader)


# ---------------------------------------------------------- append corners


def _follower_with(entries: list[tuple[int, int]], term: int = 2) -> Raft:
    r = new_raft(2, storage=storage_with([1, 2, 3], entries=entries))
    r.term = term
    return r


def test_duplicate_append_is_idempotent() -> None:
    r = _follower_with([(1, 1)])
    app = msg(M.APP, 1, 2, term=2, index=1, log_term=1, entries=[Entry(2, 2), Entry(2, 3)])
    r.step(app)
    first = take(r)
    r.step(app)
    assert take(r) == first and entry_terms(r) == [(1, 1), (2, 2), (2, 3)]


def test_reordered_appends() -> None:
    r = _follower_with([(1, 1)])
    early = msg(M.APP, 1, 2, term=2, index=1, log_term=1, entries=[Entry(2, 2)])
    late = msg(M.APP, 1, 2, term=2, index=2, log_term=2, entries=[Entry(2, 3)])
    r.step(late)  # arrives first: gap, rejected
    (resp,) = take(r)
    assert resp.reject and resp.reject_hint == 1
    r.step(early)
    r.step(late)
    assert entry_terms(r) == [(1, 1), (2, 2), (2, 3)]
    # A delayed copy of the early append must not truncate what came after it.
    r.step(early)
    assert entry_terms(r) == [(1, 1), (2, 2), (2, 3)]
    assert take(r)[-1].index == 2


def test_append_below_the_commit_index_is_acknowledged_with_the_commit_index() -> None:
    r = _follower_with([(1, 1), (1, 2), (1, 3)])
    r.log.commit_to(3)
    r.step(msg(M.APP, 1, 2, term=2, index=1, log_term=1, entries=[Entry(1, 2)]))
    (resp,) = take(r)
    assert (resp.reject, resp.index) == (False, 3)


def test_conflict_with_a_committed_entry_is_an_invariant_violation() -> None:
    r = _follower_with([(1, 1), (1, 2)])
    r.log.commit_to(2)
    with pytest.raises(InvariantViolation):
        r.log.maybe_append(1, 1, 2, [Entry(2, 2)])


def test_stale_append_responses_from_old_terms_are_ignored() -> None:
    r = _replicating_leader()
    match = r.prs[2].match
    r.step(msg(M.APP_RESP, 2, 1, term=r.term - 1, index=match + 10))
    assert r.prs[2].match == match


def test_vote_survives_a_restart() -> None:
    r = new_raft(1)
    r.step(msg(M.VOTE, 2, 1, term=5, index=0, log_term=0))
    assert take(r)[0].reject is False
    persist(r)
    restarted = new_raft(1, storage=r.log.storage)  # type: ignore[arg-type]
    assert (restarted.term, restarted.vote) == (5, 2)
    restarted.step(msg(M.VOTE, 3, 1, term=5, index=0, log_term=0))
    assert take(restarted)[0].reject is True
    restarted.step(msg(M.VOTE, 2, 1, term=5, index=0, log_term=0))
    assert take(restarted)[0].reject is False


def test_candidate_gives_up_on_a_heartbeat_of_its_term() -> None:
    r = new_raft(1)
    r.hup()
    r.step(msg(M.HEARTBEAT, 2, 1, term=r.term, commit=0))
    assert (r.role, r.lead) == (Role.FOLLOWER, 2)


def test_heartbeat_never_commits_past_the_followers_match() -> None:
    net = elected(3)
    net.isolate(3)
    net.propose(1, b"a", b"b")
    leader = net.peers[1]
    beats = []
    leader._bcast_heartbeat()
    beats = [m for m in take(leader) if m.to == 3]
    assert beats[0].commit == leader.prs[3].match < leader.log.committed


# ----------------------------------------------------------------- snapshots


def _compacted_leader() -> tuple[Network, Raft]:
    net = elected(3)
    net.isolate(3)
    net.propose(1, b"a", b"b", b"c")
    leader = net.peers[1]
    persist(leader)
    st = leader.log.storage
    st.create_snapshot(leader.log.committed, leader.conf_state(), b"S")  # type: ignore[attr-defined]
    st.compact(leader.log.committed)  # type: ignore[attr-defined]
    return net, leader


def test_snapshot_pauses_then_resumes_on_success_report() -> None:
    net, leader = _compacted_leader()
    net.recover()
    net.ignored.add(M.SNAP)
    net.tick(1)
    pr = leader.prs[3]
    assert pr.state == ProgressState.SNAPSHOT and pr.pending_snapshot == leader.log.committed
    assert pr.is_paused()
    leader.step(Message(M.SNAP_STATUS, from_=3, reject=False))
    assert (pr.state == ProgressState.PROBE and pr.next == pr.pending_snapshot + 1) or pr.next > 1


def test_snapshot_failure_report_goes_back_to_probing_from_match() -> None:
    net, leader = _compacted_leader()
    net.recover()
    net.ignored.add(M.SNAP)
    net.tick(1)
    pr = leader.prs[3]
    leader.step(Message(M.SNAP_STATUS, from_=3, reject=True))
    assert pr.state == ProgressState.PROBE and pr.next == pr.match + 1 and pr.probe_sent


def test_follower_restores_a_snapshot_and_its_membership() -> None:
    net, leader = _compacted_leader()
    net.recover()
    net.tick(1)
    follower = net.peers[3]
    snap = follower.log.pending_snapshot
    assert snap is not None and follower.voters == (1, 2, 3)
    assert follower.log.first_index() == snap.metadata.index + 1
    assert leader.prs[3].match >= snap.metadata.index


def test_follower_ignores_an_older_snapshot() -> None:
    net, leader = _compacted_leader()
    snap = leader.log.storage.snapshot()
    follower = net.peers[2]  # already has everything
    follower.step(msg(M.SNAP, 1, 2, term=leader.term, snapshot=snap))
    assert follower.log.pending_snapshot is None
    (resp,) = take(follower)
    assert resp.index == follower.log.committed


def test_snapshot_matching_the_log_just_commits() -> None:
    _net, leader = _compacted_leader()
    snap = leader.log.storage.snapshot()
    assert (snap.metadata.term, snap.metadata.index) == (1, 4)
    follower = new_raft(2, storage=storage_with([1, 2, 3], entries=[(1, i) for i in range(1, 5)]))
    follower.step(msg(M.SNAP, 1, 2, term=leader.term, snapshot=snap))
    assert follower.log.pending_snapshot is None and follower.log.committed == snap.metadata.index


def test_snapshot_is_not_sent_to_an_inactive_follower() -> None:
    _net, leader = _compacted_leader()
    leader.prs[3].become_probe()  # next = match + 1, below the first index kept
    leader.prs[3].recent_active = False
    leader._bcast_append()
    assert [m for m in take(leader) if m.to == 3] == []


# ----------------------------------------------------- learners, membership


def test_learner_replicates_but_never_campaigns_or_counts() -> None:
    leader = new_raft(1, [1, 2], learners=[3])
    learner = new_raft(3, [1, 2], learners=[3])
    net = Network(leader, new_raft(2, [1, 2], learners=[3]), learner)
    net.campaign(1)
    net.propose(1, b"x")
    assert entry_terms(learner) == entry_terms(leader)
    for _ in range(3 * learner.election_timeout):
        net.tick(3)
    assert learner.role == Role.FOLLOWER and learner.is_learner
    net.isolate(3)
    net.propose(1, b"y")
    assert leader.log.committed == leader.log.last_index()  # 2 of 2 voters
    net.recover()
    net.isolate(2)
    net.propose(1, b"z")
    assert leader.log.committed < leader.log.last_index()  # the learner does not count


def test_promoted_learner_counts_and_may_campaign() -> None:
    rafts = [new_raft(i, [1, 2], learners=[3]) for i in (1, 2, 3)]
    net = Network(*rafts)
    net.campaign(1)
    for r in rafts:
        r.apply_conf_change(ConfChange(ConfChangeType.ADD_NODE, 3))
    assert rafts[2].voters == (1, 2, 3) and not rafts[2].is_learner
    net.isolate(1)
    net.campaign(3)
    assert rafts[2].role == Role.LEADER


def test_removed_leader_steps_down_and_hands_over() -> None:
    net = elected(3)
    net.propose(1, b"x")
    leader = net.peers[1]
    cs = leader.apply_conf_change(ConfChange(ConfChangeType.REMOVE_NODE, 1))
    assert cs.voters == (2, 3) and leader.role == Role.FOLLOWER
    for r in (net.peers[2], net.peers[3]):
        r.apply_conf_change(ConfChange(ConfChangeType.REMOVE_NODE, 1))
    net.send(*take(leader))  # includes a TIMEOUT_NOW to a caught-up voter
    new_leader = net.leader()
    assert new_leader is not None and new_leader.id in (2, 3)
    with pytest.raises(ProposalDropped):
        leader.propose_batch([b"y"])


def test_removing_a_follower_shrinks_the_quorum() -> None:
    net = elected(3)
    leader = net.peers[1]
    net.isolate(3)
    net.isolate(2)
    net.propose(1, b"x")
    assert leader.log.committed < leader.log.last_index()
    leader.apply_conf_change(ConfChange(ConfChangeType.REMOVE_NODE, 2))
    leader.apply_conf_change(ConfChange(ConfChangeType.REMOVE_NODE, 3))
    assert leader.log.committed == leader.log.last_index()


def test_joining_member_without_membership_waits_for_the_leader() -> None:
    r = new_raft(4, voters=[])
    for _ in range(50):
        r.tick()
    assert r.role == Role.FOLLOWER and r.term == 0 and take(r) == []


def test_forwarded_conf_changes_are_gated_one_at_a_time() -> None:
    net = elected(3)
    leader = net.peers[1]
    leader.log.applied_to(leader.log.committed)
    first = encode_conf_change(ConfChange(ConfChangeType.ADD_LEARNER_NODE, 4))
    second = encode_conf_change(ConfChange(ConfChangeType.ADD_LEARNER_NODE, 5))
    net.send(
        msg(
            M.PROP,
            2,
            2,
            entries=[
                Entry(0, 0, EntryType.CONF_CHANGE, first),
                Entry(0, 0, EntryType.NORMAL, b"plain"),
                Entry(0, 0, EntryType.CONF_CHANGE, second),
            ],
        )
    )
    log = leader.log
    tail = log.slice(log.last_index() - 1, log.last_index() + 1)
    assert [(e.type, e.data) for e in tail] == [
        (EntryType.CONF_CHANGE, first),
        (EntryType.NORMAL, b"plain"),
    ]
    assert leader.pending_conf_index == tail[0].index


# --------------------------------------------------------- catching up


@pytest.mark.parametrize("restarted", [False, True])
def test_reconnecting_follower_catches_up_in_a_few_messages(restarted: bool) -> None:
    # 500 entries proposed one by one while follower 3 was cut off (or down): once it
    # can be reached, the leader sends what it misses in size-limited appends (1 MiB by
    # default) and then streams, not one entry per round trip.
    net = Network(None, None, None)
    net.campaign(1)
    leader = net.peers[1]
    net.isolate(3)
    for i in range(500):
        net.propose(1, b"entry %d" % i)
    last = leader.log.last_index()
    assert net.peers[3].log.last_index() < last - 499
    if restarted:
        leader.step(Message(M.UNREACHABLE, from_=3))  # the transport lost its connection
    net.recover()
    before = len(net.delivered)
    ticks = 0
    while net.peers[3].log.last_index() < last:
        net.tick(1)
        ticks += 1
        assert ticks <= 3, "a heartbeat round should be enough to resume replication"
    appends = [m for m in net.delivered[before:] if m.type == M.APP and m.to == 3]
    assert len(appends) <= 3
    assert leader.prs[3].state == ProgressState.REPLICATE


# ------------------------------------------------------- deferred commit


@pytest.mark.parametrize("defer", [False, True])
def test_defer_commit_lets_the_next_append_carry_the_commit_index(defer: bool) -> None:
    net = elected(defer_commit=defer)
    leader, followers = net.peers[1], (net.peers[2], net.peers[3])
    net.propose(1, b"x")
    before = len(net.delivered)
    net.propose(1, b"y")
    y = leader.log.last_index()
    assert leader.log.committed == y
    empty = [m for m in net.delivered[before:] if m.type == M.APP and not m.entries]
    if not defer:  # etcd's way: empty appends tell the followers at once
        assert sorted(m.to for m in empty) == [2, 3]
        assert [f.log.committed for f in followers] == [y, y]
        assert not leader.commit_unsent
        return
    # Held back: no empty appends, the followers know only the previous write's commit
    # (carried by y's own append).
    assert empty == []
    assert [f.log.committed for f in followers] == [y - 1, y - 1]
    assert leader.commit_unsent
    net.propose(1, b"z")  # z's append carries y's commit
    assert [f.log.committed for f in followers] == [y, y]
    assert leader.commit_unsent and leader.log.committed == y + 1
    leader.flush_commit()  # (the driver's timer)
    flushed = take(leader)
    assert sorted((m.to, m.type, len(m.entries), m.commit) for m in flushed) == \
        [(2, M.APP, 0, y + 1), (3, M.APP, 0, y + 1)]
    net.send(*flushed)
    assert [f.log.committed for f in followers] == [y + 1, y + 1]
    assert not leader.commit_unsent
    leader.flush_commit()
    assert take(leader) == []  # nothing held back: nothing sent



def test_defer_commit_does_not_hold_back_a_membership_change() -> None:
    """A committed conf change reaches the followers at once (as with etcd's way), so
    every member applies the new membership without waiting for the next write."""
    net = elected(defer_commit=True)
    leader, followers = net.peers[1], (net.peers[2], net.peers[3])
    net.propose(1, b"x")
    assert leader.commit_unsent
    leader.log.applied_to(leader.log.committed)  # (the caller applied everything)
    cc = encode_conf_change(ConfChange(ConfChangeType.ADD_LEARNER_NODE, 4))
    net.send(msg(M.PROP, 1, 1, entries=[Entry(0, 0, EntryType.CONF_CHANGE, cc)]))
    at = leader.log.last_index()
    assert leader.log.committed == at
    assert [f.log.committed for f in followers] == [at, at]
    assert not leader.commit_unsent


def test_defer_commit_does_not_hold_back_a_forwarded_proposal_or_a_followers_read() -> None:
    net = elected(defer_commit=True)
    leader, follower = net.peers[1], net.peers[2]
    net.propose(1, b"x")
    x = leader.log.last_index()
    assert leader.commit_unsent and follower.log.committed == x - 1
    # A read on follower 2: it is answered with x and must learn that x is committed.
    follower.read_index(b"ctx")
    net.send(*take(follower))
    assert follower.read_states == [ReadState(x, b"ctx")]
    assert follower.log.committed == x
    # A proposal follower 2 forwarded: its member answers once it knows the commit, so
    # the leader tells everyone at once.
    net.propose(2, b"from 2")
    assert leader.log.committed == leader.log.last_index() == x + 1
    assert [f.log.committed for f in (net.peers[2], net.peers[3])] == [x + 1, x + 1]
    assert not leader.commit_unsent
