"""The Raft paper (Ongaro & Ousterhout, "In Search of an Understandable
Consensus Algorithm"), section by section, against the core."""

from __future__ import annotations

import pytest
from raft_harness import (
    Network,
    become_leader,
    entry_terms,
    new_raft,
    persist,
    storage_with,
    take,
)

from petcd.raft import Entry, HardState, Message, MessageType
from petcd.raft.basics import Role
from petcd.raft.raft import Raft

M = MessageType


def msg(type_: MessageType, frm: int, to: int, term: int = 0, **kw: object) -> Message:
    return Message(type_, to=to, from_=frm, term=term, **kw)  # type: ignore[arg-type]


# ---------------------------------------------------------------- 5.1 terms


@pytest.mark.parametrize("role", ["follower", "candidate", "leader"])
def test_5_1_newer_term_turns_anyone_into_a_follower(role: str) -> None:
    r = new_raft(1)
    if role == "candidate":
        r.hup()
    elif role == "leader":
        become_leader(r)
    before = r.term
    r.step(msg(M.APP, 2, 1, term=before + 5))
    assert (r.role, r.term, r.lead) == (Role.FOLLOWER, before + 5, 2)


def test_5_1_stale_term_messages_are_ignored() -> None:
    r = new_raft(1)
    r.term = 5
    r.step(msg(M.APP, 2, 1, term=4, index=0, log_term=0, entries=[Entry(4, 1)]))
    assert r.log.last_index() == 0 and take(r) == []


def test_5_1_a_vote_is_never_granted_for_an_older_term() -> None:
    r = new_raft(1)
    r.term = 5
    r.step(msg(M.VOTE, 2, 1, term=3, index=10, log_term=3))
    assert take(r) == [] and r.vote == 0


# ---------------------------------------------------------- 5.2 elections


def test_5_2_members_start_as_followers() -> None:
    r = new_raft(1)
    assert (r.role, r.term, r.vote, r.lead) == (Role.FOLLOWER, 0, 0, 0)


def test_5_2_leader_sends_heartbeats_every_heartbeat_timeout() -> None:
    r = new_raft(1, heartbeat=2)
    become_leader(r)
    take(r)
    r.tick()
    assert take(r) == []
    r.tick()
    beats = take(r)
    assert sorted((m.type, m.to, m.term) for m in beats) == [
        (M.HEARTBEAT, 2, r.term),
        (M.HEARTBEAT, 3, r.term),
    ]


@pytest.mark.parametrize("start_as_candidate", [False, True])
def test_5_2_election_timeout_starts_an_election_for_the_next_term(
    start_as_candidate: bool,
) -> None:
    r = new_raft(1)
    if start_as_candidate:
        r.hup()
        take(r)
    term = r.term
    for _ in range(2 * r.election_timeout):
        r.tick()
    assert r.role == Role.CANDIDATE and r.term == term + 1 and r.vote == 1
    requests = sorted((m.to, m.type, m.term) for m in take(r))
    assert requests == [(2, M.VOTE, term + 1), (3, M.VOTE, term + 1)]


@pytest.mark.parametrize(
    ("members", "granted", "role"),
    [
        (1, [], Role.LEADER),
        (3, [2], Role.LEADER),
        (3, [2, 3], Role.LEADER),
        (5, [2, 3], Role.LEADER),
        (5, [2], Role.CANDIDATE),
        (5, [], Role.CANDIDATE),
        (3, [], Role.CANDIDATE),
    ],
)
def test_5_2_a_majority_of_votes_wins(members: int, granted: list[int], role: Role) -> None:
    ids = list(range(1, members + 1))
    r = new_raft(1, ids)
    r.hup()
    for voter in ids[1:]:
        if voter in granted:
            r.step(msg(M.VOTE_RESP, voter, 1, term=r.term))
    assert r.role == role


def test_5_2_a_majority_of_rejections_loses() -> None:
    r = new_raft(1, [1, 2, 3])
    r.hup()
    r.step(msg(M.VOTE_RESP, 2, 1, term=r.term, reject=True))
    assert r.role == Role.CANDIDATE
    r.step(msg(M.VOTE_RESP, 3, 1, term=r.term, reject=True))
    assert r.role == Role.FOLLOWER


@pytest.mark.parametrize(
    ("vote", "candidate", "granted"),
    [(0, 2, True), (0, 3, True), (2, 2, True), (3, 3, True), (2, 3, False), (3, 2, False)],
)
def test_5_2_one_vote_per_term_first_come_first_served(
    vote: int, candidate: int, granted: bool
) -> None:
    r = new_raft(1)
    r.term = 1
    r.vote = vote
    r.step(msg(M.VOTE, candidate, 1, term=1, index=0, log_term=0))
    (resp,) = take(r)
    assert resp.type == M.VOTE_RESP and resp.reject == (not granted)
    assert r.vote == (candidate if granted else vote)


def test_5_2_candidate_yields_to_a_leader_of_its_term() -> None:
    r = new_raft(1)
    r.hup()
    r.step(msg(M.APP, 2, 1, term=r.term, index=0, log_term=0))
    assert (r.role, r.lead) == (Role.FOLLOWER, 2)


@pytest.mark.parametrize("start_as_candidate", [False, True])
def test_5_2_election_timeouts_are_randomized_in_one_to_two_timeouts(
    start_as_candidate: bool,
) -> None:
    seen = set()
    for seed in range(200):
        r = new_raft(1, election=10)
        r.rng.seed(seed)
        r.become_follower(0, 0)
        if start_as_candidate:
            r.hup()
        term = r.term
        ticks = 0
        while r.term == term:
            r.tick()
            ticks += 1
        seen.add(ticks)
    assert min(seen) >= 10 and max(seen) <= 19
    assert len(seen) >= 8  # really spread over the range


def test_5_2_split_votes_resolve_thanks_to_randomized_timeouts() -> None:
    net = Network(None, None, None)
    for _ in range(100):
        for node_id in net.peers:
            net.tick(node_id)
        if net.leader() is not None:
            break
    leader = net.leader()
    assert leader is not None
    assert [r.role for r in net.peers.values()].count(Role.LEADER) == 1
    assert all(r.lead == leader.id for r in net.peers.values())


# ------------------------------------------------------- 5.3 replication


def _elected(n: int = 3) -> Network:
    net = Network(*([None] * n))
    net.campaign(1)
    assert net.peers[1].role == Role.LEADER
    return net


def test_5_3_leader_appends_then_replicates_proposals() -> None:
    r = new_raft(1)
    become_leader(r)
    for peer in (2, 3):  # acknowledging the no-op moves them from probing to replicating
        r.step(msg(M.APP_RESP, peer, 1, term=r.term, index=r.log.last_index()))
    take(r)
    r.propose_batch([b"x"])
    li = r.log.last_index()
    assert r.log.slice(li, li + 1) == [Entry(r.term, li, data=b"x")]
    apps = sorted(take(r), key=lambda m: m.to)
    assert [(m.type, m.to, m.index, list(m.entries)) for m in apps] == [
        (M.APP, peer, li - 1, [Entry(r.term, li, data=b"x")]) for peer in (2, 3)
    ]


def test_5_3_entry_commits_once_a_majority_stores_it() -> None:
    r = new_raft(1, [1, 2, 3, 4, 5])
    become_leader(r)
    noop = r.log.last_index()
    for peer in (2, 3):
        r.step(msg(M.APP_RESP, peer, 1, term=r.term, index=noop))
    assert r.log.committed == noop
    r.propose_batch([b"x"])
    r.step(msg(M.APP_RESP, 2, 1, term=r.term, index=noop + 1))
    assert r.log.committed == noop  # 2 of 5
    r.step(msg(M.APP_RESP, 4, 1, term=r.term, index=noop + 1))
    assert r.log.committed == noop + 1  # 3 of 5
    # Followers learn the new commit index from the next append.
    assert {m.commit for m in take(r) if m.type == M.APP} >= {noop + 1}


def test_5_3_committing_an_entry_commits_all_before_it() -> None:
    st = storage_with([1, 2, 3], entries=[(2, 1), (2, 2)])
    r = new_raft(1, storage=st)
    r.term = 2
    become_leader(r)  # term 3, no-op at index 3
    r.step(msg(M.APP_RESP, 2, 1, term=r.term, index=3))
    assert r.log.committed == 3


def test_5_3_follower_commits_what_the_leader_says_is_committed() -> None:
    r = new_raft(2)
    r.step(
        msg(M.APP, 1, 2, term=1, index=0, log_term=0, entries=[Entry(1, 1), Entry(1, 2)], commit=1)
    )
    assert r.log.committed == 1
    # ...but never past what it holds.
    r.step(msg(M.APP, 1, 2, term=1, index=2, log_term=1, commit=9))
    assert r.log.committed == 2


@pytest.mark.parametrize(
    ("prev_term", "prev_index", "accepted", "hint"),
    [
        (0, 0, True, None),  # nothing before: always matches
        (1, 1, True, None),
        (2, 2, True, None),
        (1, 2, False, 1),  # term mismatch at 2: our term there (2) > 1, back to index 1
        (3, 3, False, 2),  # beyond our last index: hint our last index
    ],
)
def test_5_3_follower_checks_the_previous_entry(
    prev_term: int, prev_index: int, accepted: bool, hint: int | None
) -> None:
    r = new_raft(2, storage=storage_with([1, 2, 3], entries=[(1, 1), (2, 2)]))
    r.term = 2
    r.step(msg(M.APP, 1, 2, term=2, index=prev_index, log_term=prev_term))
    (resp,) = take(r)
    assert resp.type == M.APP_RESP and resp.reject == (not accepted)
    if not accepted:
        assert resp.index == prev_index and resp.reject_hint == hint


@pytest.mark.parametrize(
    ("prev", "new", "expected"),
    [
        # (prev index, prev term), new entries and the expected log as (term, index)
        # append after a matching prefix
        ((2, 2), [(3, 3)], [(1, 1), (2, 2), (3, 3)]),
        # a conflicting suffix is replaced
        ((1, 1), [(3, 2), (4, 3)], [(1, 1), (3, 2), (4, 3)]),
        # entries already present are left alone
        ((0, 0), [(1, 1)], [(1, 1), (2, 2)]),
        ((0, 0), [(1, 1), (2, 2)], [(1, 1), (2, 2)]),
        # empty append changes nothing
        ((1, 1), [], [(1, 1), (2, 2)]),
    ],
)
def test_5_3_follower_appends_and_removes_conflicting_suffixes(
    prev: tuple[int, int], new: list[tuple[int, int]], expected: list[tuple[int, int]]
) -> None:
    r = new_raft(2, storage=storage_with([1, 2, 3], entries=[(1, 1), (2, 2)]))
    r.term = 2
    r.step(
        msg(
            M.APP,
            1,
            2,
            term=4,
            index=prev[0],
            log_term=prev[1],
            entries=[Entry(t, i) for t, i in new],
        )
    )
    assert entry_terms(r) == expected


LEADER_LOG = [(1, 1), (1, 2), (1, 3), (4, 4), (4, 5), (5, 6), (5, 7), (6, 8), (6, 9), (6, 10)]


@pytest.mark.parametrize(
    "follower_log",
    [
        # The follower logs of figure 7 of the paper: missing entries (a, b),
        # extra entries (c, d), both (e, f).
        LEADER_LOG[:9],
        LEADER_LOG[:4],
        [*LEADER_LOG, (6, 11)],
        [*LEADER_LOG, (7, 11), (7, 12)],
        [*LEADER_LOG[:5], (4, 6), (4, 7)],
        [*LEADER_LOG[:3], (2, 4), (2, 5), (2, 6), (3, 7), (3, 8), (3, 9), (3, 10), (3, 11)],
    ],
    ids=list("abcdef"),
)
def test_5_3_leader_brings_any_follower_log_in_line(follower_log: list[tuple[int, int]]) -> None:
    leader = new_raft(1, storage=storage_with([1, 2, 3], entries=LEADER_LOG))
    leader._load_hard_state(HardState(term=8, commit=10))
    follower = new_raft(2, storage=storage_with([1, 2, 3], entries=follower_log))
    follower._load_hard_state(HardState(term=7))
    third = new_raft(3)
    third._load_hard_state(HardState(term=7))
    net = Network(leader, follower, third)
    net.campaign(1)  # needs the third member's vote when the follower's log is longer
    assert leader.role == Role.LEADER
    net.propose(1, b"")
    assert entry_terms(follower) == entry_terms(leader)


# ------------------------------------------------------------ 5.4 safety


@pytest.mark.parametrize(
    ("cand_index", "cand_term", "granted"),
    [
        (2, 1, False),  # older last term
        (3, 1, False),
        (1, 2, False),  # same last term, shorter log
        (2, 2, True),  # same last term, same length
        (3, 2, True),  # same last term, longer
        (1, 3, True),  # newer last term wins even when shorter
    ],
)
def test_5_4_1_votes_only_for_logs_at_least_as_up_to_date(
    cand_index: int, cand_term: int, granted: bool
) -> None:
    r = new_raft(1, storage=storage_with([1, 2, 3], entries=[(1, 1), (2, 2)]))
    r.term = 3
    r.step(msg(M.VOTE, 2, 1, term=3, index=cand_index, log_term=cand_term))
    (resp,) = take(r)
    assert resp.reject == (not granted)


def test_5_4_1_candidate_sends_its_last_index_and_term() -> None:
    r = new_raft(1, storage=storage_with([1, 2, 3], entries=[(1, 1), (2, 2)]))
    r.term = 2
    r.hup()
    assert {(m.index, m.log_term) for m in take(r)} == {(2, 2)}


@pytest.mark.parametrize(("acked", "committed"), [(1, 0), (2, 0), (3, 3)])
def test_5_4_2_only_entries_of_the_current_term_commit_by_counting(
    acked: int, committed: int
) -> None:
    st = storage_with([1, 2], entries=[(1, 1), (2, 2)])
    r = new_raft(1, [1, 2], storage=st)
    r.term = 2
    become_leader(r)  # term 3; its no-op is index 3
    r.step(msg(M.APP_RESP, 2, 1, term=r.term, index=acked))
    assert r.log.committed == committed


def test_5_4_2_figure_8_an_old_entry_replicated_to_a_majority_is_not_committed() -> None:
    """Figure 8: S1 leads term 2 with entry (2, 2) on S1, S2; S5 leads term 3 with
    (3, 2) on itself only; S1 leads again in term 4 and copies (2, 2) to S3.
    (2, 2) is then on a majority but must not count as committed: S5 could
    still be elected and overwrite it. It commits only with an entry of term 4."""
    ids = [1, 2, 3, 4, 5]

    def member(node_id: int, entries: list[tuple[int, int]], term: int) -> Raft:
        r = new_raft(node_id, ids, storage=storage_with(ids, entries=entries))
        r._load_hard_state(HardState(term=term))
        return r

    s1 = member(1, [(1, 1), (2, 2)], 3)
    s2 = member(2, [(1, 1), (2, 2)], 3)
    s3 = member(3, [(1, 1)], 3)
    s4 = member(4, [(1, 1)], 3)
    s5 = member(5, [(1, 1), (3, 2)], 3)
    net = Network(s1, s2, s3, s4, s5)
    # S1 wins term 4 with S2, S3 (S5's log is newer, S4 is cut off); its no-op
    # (4, 3) must not reach anyone, but (2, 2) reaches S3.
    net.isolate(4)
    net.cut(1, 5)
    net.ignored.add(M.APP)
    net.campaign(1)
    assert s1.role == Role.LEADER and s1.term == 4
    s1.msgs.clear()
    for follower in (s2, s3):
        follower.step(
            Message(
                M.APP, to=follower.id, from_=1, term=4, index=1, log_term=1, entries=[Entry(2, 2)]
            )
        )
        net.send(*take(follower))  # the acknowledgement reaches S1; S1's appends still do not leave
    assert entry_terms(s3) == [(1, 1), (2, 2)]
    assert s1.prs[2].match == s1.prs[3].match == 2
    # (2, 2) is on S1, S2, S3: a majority, yet not committed.
    assert s1.log.committed < 2
    # Indeed S5 can still win term 5 (votes from S2, S3, S4: their last term 2 < 3)...
    net.recover()
    net.isolate(1)
    net.ignored.add(M.APP)  # S5 must win on votes alone
    net.campaign(5)  # term 4: S2 and S3 already voted for S1 in it
    net.campaign(5)  # term 5
    net.ignored.clear()
    net.tick(5)
    assert s5.role == Role.LEADER
    # ...and its log prevails.
    assert s3.log.term(2) == 3 and s2.log.term(2) == 3


def test_5_4_3_a_new_leader_holds_every_committed_entry() -> None:
    net = _elected(5)
    net.propose(1, b"a", b"b")
    committed = net.peers[1].log.committed
    # Lose the old leader and one more member: the survivors must elect a
    # leader that has everything committed.
    net.isolate(1)
    net.isolate(2)
    net.campaign(3)
    leader = net.leader()
    assert leader is not None and leader.id != 1 and leader.term > net.peers[1].term - 1
    assert leader.log.last_index() >= committed
    assert entry_terms(leader)[:committed] == entry_terms(net.peers[1])[:committed]


# ------------------------------------------------------ 6 membership changes


def test_6_new_members_catch_up_and_count_once_added() -> None:
    from petcd.raft import ConfChange, ConfChangeType

    net = _elected(3)
    net.propose(1, b"a")
    leader = net.peers[1]
    leader.apply_conf_change(ConfChange(ConfChangeType.ADD_NODE, 4))
    assert leader.voters == (1, 2, 3, 4)
    joiner = new_raft(4, voters=[])  # joins with empty storage and no membership
    net.peers[4] = joiner
    net.send(*take(leader))
    net.tick(1)  # heartbeat: the joiner answers, the leader catches it up
    assert entry_terms(joiner) == entry_terms(leader)
    # Now a quorum is 3 of 4.
    net.isolate(4)
    net.isolate(3)
    net.propose(1, b"b")
    assert leader.log.committed < leader.log.last_index()


def test_7_compaction_lagging_follower_gets_a_snapshot() -> None:
    net = _elected(3)
    net.isolate(3)
    net.propose(1, b"a", b"b", b"c")
    leader = net.peers[1]
    persist(leader)
    st = leader.log.storage
    index = leader.log.committed
    st.create_snapshot(index, leader.conf_state(), b"state")  # type: ignore[attr-defined]
    st.compact(index)  # type: ignore[attr-defined]
    net.recover()
    net.tick(1)  # heartbeat -> response -> leader finds 3 needs a snapshot
    follower = net.peers[3]
    snap = follower.log.pending_snapshot
    assert snap is not None and snap.metadata.index == index and snap.data == b"state"
    assert follower.log.committed == index
