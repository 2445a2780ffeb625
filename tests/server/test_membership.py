"""The member list: conf change contexts applied in memory and in the backend alike, and
etcd's --strict-reconfig-check rules."""

from __future__ import annotations

from pathlib import Path

from petcd import errors
from petcd.mvcc.backend import Backend
from petcd.raft import ConfChange, ConfChangeType
from petcd.server.membership import (
    Member,
    Membership,
    add_change,
    attributes_change,
    learner_check_promote,
    members_from_json,
    members_to_json,
    promote_change,
    quorum_check_add,
    quorum_check_remove,
    remove_change,
    update_change,
)

A = Member(0xA, "a", ["http://10.0.0.1:2380"], ["http://10.0.0.1:2379"])
B = Member(0xB, "b", ["http://10.0.0.2:2380"], ["http://10.0.0.2:2379"])
C = Member(0xC, "", ["http://10.0.0.3:2380"], [], is_learner=True)

CHANGES = [
    add_change(A), add_change(B), add_change(C),
    attributes_change(0xC, "c", ["http://10.0.0.3:2379"]),
    promote_change(0xC),
    update_change(0xB, ["http://10.0.0.2:2380", "http://10.0.0.9:2380"]),
    remove_change(0xA),
]


def test_changes_apply_alike_in_memory_and_in_the_backend(tmp_path: Path) -> None:
    backend = Backend(str(tmp_path / "db"))
    mem = Membership(1, 0xB)
    mem.load(backend)
    stored = Membership(1, 0xB)
    for index, cc in enumerate(CHANGES, 1):
        mem.apply(index, cc)
        with backend.begin_write() as batch:
            mem.write(batch, cc)
            batch.set_consistent_index(index, 1)
    stored.load(backend)
    for ms in (mem, stored):
        assert ms.removed == {0xA}
        assert [m.to_json() for m in ms.sorted()] == [
            Member(0xB, "b", ["http://10.0.0.2:2380", "http://10.0.0.9:2380"],
                   ["http://10.0.0.2:2379"]).to_json(),
            Member(0xC, "c", ["http://10.0.0.3:2380"], ["http://10.0.0.3:2379"]).to_json(),
        ]
    assert stored.index == len(CHANGES)
    # Replaying changes the backend already holds leaves the list alone.
    stored.apply(3, add_change(C))
    assert not stored.members[0xC].is_learner
    backend.close()


def test_wire_form_and_unknown_members() -> None:
    cluster_id, members = members_from_json(members_to_json(7, [A, C]))
    assert cluster_id == 7 and [m.to_json() for m in members] == [A.to_json(), C.to_json()]
    ms = Membership(7, 0xA)
    ms.apply(1, attributes_change(0xD, "ghost", []))  # (removed meanwhile: nothing to do)
    ms.apply(2, ConfChange(ConfChangeType.REMOVE_NODE, 0xD))
    assert ms.members == {} and ms.removed == {0xD}


def test_validation_as_etcd() -> None:
    ms = Membership(1, 0xA)
    ms.reset([A, B, C])
    ms.removed = {0xE}
    assert ms.check_add(Member(0xA, peer_urls=["http://x:1"]), 1).kind is errors.MEMBER_EXIST
    assert ms.check_add(Member(0xD, peer_urls=A.peer_urls), 1).kind is errors.PEER_URL_EXIST
    too_many = ms.check_add(Member(0xD, peer_urls=["http://x:1"], is_learner=True), 1)
    assert too_many is not None and too_many.kind is errors.TOO_MANY_LEARNERS
    assert ms.check_add(Member(0xD, peer_urls=["http://x:1"], is_learner=True), 2) is None
    assert ms.check_add(Member(0xE, peer_urls=["http://x:1"]), 1).kind is errors.MEMBER_NOT_FOUND
    assert ms.check_remove(0xD).kind is errors.MEMBER_NOT_FOUND
    assert ms.check_promote(0xB).kind is errors.MEMBER_NOT_LEARNER
    assert ms.check_promote(0xC) is None
    assert ms.check_update(0xB, A.peer_urls).kind is errors.PEER_URL_EXIST
    assert ms.check_update(0xB, B.peer_urls) is None


def test_strict_reconfig_checks() -> None:
    ms = Membership(1, 0xA)
    unstarted = Member(0xD, "", ["http://10.0.0.4:2380"])
    ms.reset([A, B, unstarted])
    everyone = lambda _: True  # noqa: E731
    only_a = lambda mid: mid == 0xA  # noqa: E731
    new_voter = Member(0xE, peer_urls=["http://10.0.0.5:2380"])
    # 2 of 4 voters started: below a quorum of 3
    assert quorum_check_add(ms, new_voter, everyone).kind is errors.MEMBER_NOT_ENOUGH_STARTED
    assert quorum_check_add(ms, C, everyone) is None  # learners do not count
    assert quorum_check_add(ms, C, only_a).kind is errors.UNHEALTHY
    assert quorum_check_remove(ms, 0xB, everyone, down=False).kind is \
        errors.MEMBER_NOT_ENOUGH_STARTED  # 1 of the 2 left started
    assert quorum_check_remove(ms, 0xD, everyone, down=True) is None
    assert quorum_check_remove(ms, 0xD, only_a, down=False).kind is errors.UNHEALTHY
    assert learner_check_promote(ms, 80, 100, strict=False).kind is errors.LEARNER_NOT_READY
    assert learner_check_promote(ms, 95, 100, strict=False) is None
    single = Membership(1, 0xA)
    single.reset([A])
    assert quorum_check_add(single, new_voter, everyone) is None  # growing a cluster of one
