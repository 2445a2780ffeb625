"""Helpers for the Raft unit tests: members built at the Raft level, and a
synchronous in-memory network between them that can drop or cut links."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from petcd.raft import ConfState, Entry, MemoryStorage, Message, MessageType, Snapshot
from petcd.raft.basics import Config, Role
from petcd.raft.raft import Raft
from petcd.raft.types import SnapshotMetadata


def storage_with(
    voters: Sequence[int] = (),
    learners: Sequence[int] = (),
    entries: Iterable[tuple[int, int]] | Iterable[Entry] = (),
) -> MemoryStorage:
    """A MemoryStorage whose (empty) snapshot carries the membership, holding
    `entries` (Entry objects or (term, index) pairs)."""
    st = MemoryStorage()
    st._snapshot = Snapshot(SnapshotMetadata(0, 0, ConfState(tuple(voters), tuple(learners))))
    ents = [e if isinstance(e, Entry) else Entry(e[0], e[1]) for e in entries]
    st.append(ents)
    return st


def new_raft(
    node_id: int,
    voters: Sequence[int] = (1, 2, 3),
    *,
    learners: Sequence[int] = (),
    storage: MemoryStorage | None = None,
    election: int = 10,
    heartbeat: int = 1,
    **config: object,
) -> Raft:
    st = storage if storage is not None else storage_with(voters, learners)
    cfg = Config(
        id=node_id,
        election_tick=election,
        heartbeat_tick=heartbeat,
        pre_vote=bool(config.pop("pre_vote", False)),
        check_quorum=bool(config.pop("check_quorum", False)),
        seed=node_id,
    )
    for key, value in config.items():
        setattr(cfg, key, value)
    return Raft(cfg, st)


def take(r: Raft) -> list[Message]:
    """The messages r queued, removing them from r."""
    msgs = r.msgs
    r.msgs = []
    return msgs


def persist(r: Raft) -> None:
    """Persist r's unstable log to its storage, as a caller handling a Ready would."""
    log = r.log
    st = log.storage
    assert isinstance(st, MemoryStorage)
    if log.pending_snapshot is not None:
        st.apply_snapshot(log.pending_snapshot)
        log.stable_snap_to(log.pending_snapshot.metadata.index)
    if log.unstable:
        last = log.unstable[-1]
        st.append(log.unstable)
        log.stable_to(last.index, last.term)
    st.set_hard_state(r.hard_state())


def entry_terms(r: Raft) -> list[tuple[int, int]]:
    """(term, index) of every entry in r's log."""
    log = r.log
    return [(e.term, e.index) for e in log.slice(log.first_index(), log.last_index() + 1)]


def become_leader(r: Raft) -> None:
    """Make a member leader without a network (tests of the leader alone)."""
    r.hup(transfer=True)  # skips pre-vote; wins outright only in a 1-voter config
    if r.role != Role.LEADER:
        for voter in r.voters:
            if voter != r.id:
                r.step(Message(MessageType.VOTE_RESP, to=r.id, from_=voter, term=r.term))
    assert r.role == Role.LEADER, r.role


class Network:
    """Delivers messages synchronously, depth-first, until none are left."""

    def __init__(self, *members: Raft | None, **config: object) -> None:
        ids = list(range(1, len(members) + 1))
        self.peers: dict[int, Raft] = {}
        for node_id, member in zip(ids, members, strict=True):
            self.peers[node_id] = member if member is not None else new_raft(node_id, ids, **config)
        self.cut_links: set[tuple[int, int]] = set()
        self.ignored: set[MessageType] = set()
        self.delivered: list[Message] = []

    def send(self, *msgs: Message) -> None:
        queue = list(msgs)
        while queue:
            m = queue.pop(0)
            if (m.from_, m.to) in self.cut_links or m.type in self.ignored:
                continue
            peer = self.peers.get(m.to)
            if peer is None:
                continue
            self.delivered.append(m)
            peer.step(m)
            queue.extend(take(peer))

    def campaign(self, node_id: int) -> None:
        self.send(Message(MessageType.HUP, to=node_id, from_=node_id))

    def propose(self, node_id: int, *datas: bytes) -> None:
        r = self.peers[node_id]
        r.propose_batch(list(datas))
        self.send(*take(r))

    def tick(self, node_id: int, n: int = 1) -> None:
        r = self.peers[node_id]
        for _ in range(n):
            r.tick()
        self.send(*take(r))

    def cut(self, a: int, b: int) -> None:
        self.cut_links |= {(a, b), (b, a)}

    def isolate(self, node_id: int) -> None:
        for other in self.peers:
            if other != node_id:
                self.cut(node_id, other)

    def recover(self) -> None:
        self.cut_links.clear()
        self.ignored.clear()

    def leader(self) -> Raft | None:
        leaders = [r for r in self.peers.values() if r.role == Role.LEADER]
        return max(leaders, key=lambda r: r.term) if leaders else None
