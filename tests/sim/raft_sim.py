"""Deterministic simulation of a Raft cluster over a faulty network.

Everything is driven by one seeded random.Random: ticks, message delays,
drops, duplicates, reordering, partitions, crashes (a crashed member keeps only
what it persisted), restarts, proposals, reads, leader transfers, compactions
and, in some runs, membership changes. After every step the simulator checks:

  Election Safety      at most one leader per term
  Log Matching         an (index, term) pair names the same entry and the same
                       log prefix on every member (checked on each persisted
                       batch, and by a full pairwise comparison now and then)
  Leader Completeness  a leader holds every entry known committed
  State Machine Safety every member applies the same entry at each index, and
                       reaches the same state digest
  Read safety          a read index is never below an index already committed
                       when the read was requested

Then faults stop: the cluster must elect a leader and commit and apply a new
proposal on every member.

Replay one seed:  python tests/sim/raft_sim.py --seed 123 [-v]
             or:  pytest tests/sim -k seed_123
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import random
import sys
from dataclasses import dataclass
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

import contextlib

from petcd.raft import (
    ConfChange,
    ConfChangeType,
    Config,
    ConfState,
    Entry,
    EntryType,
    HardState,
    MemoryStorage,
    Message,
    MessageType,
    Peer,
    ProposalDropped,
    RawNode,
    ReadIndexDropped,
    Ready,
    Role,
    decode_conf_change,
)


class SimFailure(AssertionError):
    pass


@dataclass
class SimConfig:
    members: int = 3
    spares: int = 0  # extra ids that membership changes may add
    membership: bool = False
    pre_vote: bool = True
    check_quorum: bool = True
    election_tick: int = 10
    heartbeat_tick: int = 2
    fault_ticks: int = 1000
    liveness_ticks: int = 600
    drop: float = 0.05
    duplicate: float = 0.03
    max_delay: int = 3  # ticks
    partition_rate: float = 0.01  # per tick
    crash_rate: float = 0.01  # per tick
    restart_rate: float = 0.08  # per tick, per crashed member
    propose_rate: float = 0.3
    read_rate: float = 0.1
    transfer_rate: float = 0.005
    compact_rate: float = 0.02
    conf_change_rate: float = 0.02
    early_send: bool = True  # use Ready.send_before_persist when offered
    max_inflight: int = 4
    max_size_per_msg: int = 200  # small: forces many size-limited appends
    # Raft's Config.defer_commit; the held-back commit index goes out on the leader's
    # next tick (petcd's driver: a few ms later, well under a tick).
    defer_commit: bool = False
    full_check_every: int = 25  # ticks

    @classmethod
    def for_seed(cls, seed: int) -> SimConfig:
        """Vary the cluster shape and features with the seed (deterministically)."""
        r = random.Random(seed * 7919 + 1)
        members = 3 if seed % 2 == 0 else 5
        membership = seed % 3 == 2
        election = r.choice((5, 10, 10, 20))
        storm = r.random() < 0.3  # frequent crashes and partitions, tiny appends
        return cls(
            crash_rate=0.05 if storm else 0.01,
            partition_rate=0.03 if storm else 0.01,
            members=members,
            spares=2 if membership else 0,
            membership=membership,
            pre_vote=r.random() < 0.75,
            check_quorum=r.random() < 0.75,
            election_tick=election,
            heartbeat_tick=r.choice((1, 2, 3)),
            liveness_ticks=60 * election,
            # Raft needs a round trip well under an election timeout to make progress.
            max_delay=min(r.choice((1, 3, 3, 8)), election // 2),
            propose_rate=0.6 if storm else r.choice((0.1, 0.3, 0.6)),
            early_send=r.random() < 0.5,
            max_inflight=r.choice((1, 4, 64)),
            max_size_per_msg=20 if storm else r.choice((200, 200, 4096)),
            defer_commit=r.random() < 0.5,  # (drawn last: earlier draws stay as they were)
        )


class Member:
    def __init__(self, node_id: int) -> None:
        self.id = node_id
        self.storage = MemoryStorage()  # what survives a crash
        self.node: RawNode | None = None
        # Durable state machine (like petcd's LMDB): applied index, digest, membership.
        self.applied = 0
        self.digest = b""
        self.conf_state = ConfState()
        self.synced_commit = 0  # commit index known to be fsynced
        self.recorded_commit = 0  # entries up to here were added to the committed record
        self.removed = False
        self.busy = False


def _chain(digest: bytes, entry: Entry) -> bytes:
    return hashlib.blake2b(
        digest + entry.term.to_bytes(8, "little") + entry.data, digest_size=8
    ).digest()


class Simulation:
    def __init__(self, seed: int, cfg: SimConfig | None = None, verbose: bool = False) -> None:
        self.seed = seed
        self.cfg = cfg or SimConfig.for_seed(seed)
        self.verbose = verbose
        self.rng = random.Random(seed)
        self.now = 0
        self.faults = True
        ids = list(range(1, self.cfg.members + 1))
        self.members: dict[int, Member] = {}
        for i in ids:
            m = Member(i)
            self.members[i] = m
            self._start(m)
            assert m.node is not None
            m.node.bootstrap([Peer(j) for j in ids])
        self.spares = list(range(self.cfg.members + 1, self.cfg.members + 1 + self.cfg.spares))
        self.queue: list[tuple[int, int, Message]] = []
        self.seq = 0
        self.partition: dict[int, int] | None = None
        # Global records the invariants are checked against.
        self.leader_of_term: dict[int, int] = {}
        self.entry_at: dict[tuple[int, int], tuple[bytes, int, EntryType]] = {}
        self.committed: dict[int, tuple[int, bytes, int]] = {}  # term, data, commit term
        self.max_committed = 0
        self.applied_at: dict[int, tuple[int, bytes, bytes]] = {}  # index -> term, data, digest
        self.reads: dict[bytes, tuple[int, int]] = {}  # ctx -> (member, committed at request)
        self.next_proposal = 0
        self.marker = f"liveness-{seed}".encode()
        self.marker_index = 0
        self.to_retire: set[int] = set()
        self.leader_checked: dict[tuple[int, int], int] = {}  # (member, term) -> index
        self.next_read = 0
        self.stats = {
            "elections": 0,
            "crashes": 0,
            "delivered": 0,
            "snapshots_sent": 0,
            "reads_done": 0,
            "committed": 0,
        }

    # ------------------------------------------------------------ plumbing

    def log(self, text: str) -> None:
        if self.verbose:
            print(f"[t={self.now}] {text}")

    def fail(self, text: str) -> None:
        raise SimFailure(
            f"seed {self.seed} at tick {self.now}: {text}\n"
            f"replay: python tests/sim/raft_sim.py --seed {self.seed} -v"
            f"  (or pytest tests/sim -k seed_{self.seed})"
        )

    def _start(self, m: Member) -> None:
        cfg = self.cfg
        m.node = RawNode(
            Config(
                id=m.id,
                election_tick=cfg.election_tick,
                heartbeat_tick=cfg.heartbeat_tick,
                applied=m.applied,
                pre_vote=cfg.pre_vote,
                check_quorum=cfg.check_quorum,
                max_inflight_msgs=cfg.max_inflight,
                max_size_per_msg=cfg.max_size_per_msg,
                defer_commit=cfg.defer_commit,
                seed=self.rng.randrange(1 << 30),
            ),
            m.storage,
        )

    def live(self) -> list[Member]:
        return [m for m in self.members.values() if m.node is not None]

    def _connected(self, a: int, b: int) -> bool:
        p = self.partition
        return p is None or p.get(a, 0) == p.get(b, 0)

    def send(self, msg: Message) -> None:
        cfg = self.cfg
        if self.faults and self.rng.random() < cfg.drop:
            self._lost(msg)
            return
        copies = 2 if self.faults and self.rng.random() < cfg.duplicate else 1
        for _ in range(copies):
            delay = self.rng.randint(0, cfg.max_delay)
            self.seq += 1
            heapq.heappush(self.queue, (self.now + delay, self.seq, msg))

    def _lost(self, msg: Message) -> None:
        sender = self.members[msg.from_]
        if sender.node is None:
            return
        if msg.type == MessageType.SNAP:
            sender.node.report_snapshot(msg.to, False)
        elif self.rng.random() < 0.2:
            # A transport notices some failed sends (e.g. a broken connection).
            sender.node.report_unreachable(msg.to)
        self.process(sender)

    def deliver_due(self) -> None:
        while self.queue and self.queue[0][0] <= self.now:
            batch = []
            while self.queue and self.queue[0][0] <= self.now:
                batch.append(heapq.heappop(self.queue)[2])
            self.rng.shuffle(batch)  # reorder messages due at the same time
            for msg in batch:
                self._deliver(msg)

    def _deliver(self, msg: Message) -> None:
        dest = self.members.get(msg.to)
        if dest is None or dest.node is None or not self._connected(msg.from_, msg.to):
            self._lost(msg)
            return
        self.stats["delivered"] += 1
        if msg.type == MessageType.SNAP:
            self.stats["snapshots_sent"] += 1
        dest.node.step(msg)
        self.process(dest)
        if msg.type == MessageType.SNAP:
            sender = self.members[msg.from_]
            if sender.node is not None:
                sender.node.report_snapshot(msg.to, True)
                self.process(sender)

    # ------------------------------------------------------- Ready handling

    def process(self, m: Member) -> None:
        if m.busy:
            return  # re-entered while handling its Ready: the outer loop goes on
        m.busy = True
        try:
            while m.node is not None and m.node.has_ready():
                self._handle_ready(m, m.node.ready())
        finally:
            m.busy = False

    def _handle_ready(self, m: Member, rd: Ready) -> None:
        node = m.node
        assert node is not None
        if rd.soft_state is not None:
            self.log(f"{m.id}: {rd.soft_state.role.name} lead={rd.soft_state.lead} t={node.term}")
            if rd.soft_state.role == Role.LEADER:
                self.stats["elections"] += 1
                self._check_new_leader(m)
        early = rd.send_before_persist and self.cfg.early_send
        crash_roll = self.rng.random() if self.faults else 1.0
        if node.is_leader and rd.hard_state is not None and rd.committed_entries:
            # Leaders that just advanced their commit index are the most
            # interesting to lose: new leaders must then find those entries.
            crash_roll *= 0.05
        if early:
            for msg in rd.messages:
                self.send(msg)
            if crash_roll < 0.001:
                self.crash(m, "after sending, before persisting")
                return
        if rd.entries and rd.snapshot is None and 0.002 <= crash_roll < 0.003:
            # A torn write: only a prefix of the batch reaches the disk.
            kept = rd.entries[: self.rng.randrange(len(rd.entries))]
            if kept:
                self._check_new_entries(m, kept)
                m.storage.append(kept)
            self.crash(m, f"torn write, kept {len(kept)} of {len(rd.entries)} entries")
            return
        self._persist(m, rd)
        if not early:
            if crash_roll < 0.001:
                self.crash(m, "after persisting, before sending")
                return
            for msg in rd.messages:
                self.send(msg)
        self._apply(m, rd)
        if crash_roll < 0.002:
            self.crash(m, "after applying, before advance")
            return
        node.advance(rd)
        self._record_commits(m)

    def _persist(self, m: Member, rd: Ready) -> None:
        node = m.node
        assert node is not None
        st = m.storage
        if rd.snapshot is not None:
            st.apply_snapshot(rd.snapshot)
        if rd.entries:
            self._check_new_entries(m, rd.entries)
            st.append(rd.entries)
        if rd.hard_state is not None:
            st.set_hard_state(rd.hard_state)
            if rd.must_sync:
                m.synced_commit = rd.hard_state.commit

    def _apply(self, m: Member, rd: Ready) -> None:
        node = m.node
        assert node is not None
        if rd.snapshot is not None:
            meta = rd.snapshot.metadata
            m.applied = meta.index
            m.digest = rd.snapshot.data
            m.conf_state = meta.conf_state
            self._check_digest(m)
        for e in rd.committed_entries:
            if e.index != m.applied + 1:
                self.fail(f"member {m.id} applies {e.index} after {m.applied}")
            seen = self.applied_at.get(e.index)
            m.digest = _chain(m.digest, e)
            if seen is None:
                self.applied_at[e.index] = (e.term, e.data, m.digest)
            elif seen[:2] != (e.term, e.data):
                self.fail(
                    f"State Machine Safety: member {m.id} applied {(e.term, e.data)!r} at "
                    f"{e.index}, another member applied {seen[:2]!r}"
                )
            m.applied = e.index
            self._check_digest(m)
            if e.data == self.marker and self.marker_index == 0:
                self.marker_index = e.index
            if e.type == EntryType.CONF_CHANGE:
                cc = decode_conf_change(e.data)
                m.conf_state = node.apply_conf_change(cc)
                if cc.type == ConfChangeType.REMOVE_NODE:
                    # The server of a removed member shuts it down.
                    self.to_retire.add(cc.node_id)
                self.log(f"{m.id}: applied {cc.type.name} {cc.node_id} -> {m.conf_state}")
        for rs in rd.read_states:
            req = self.reads.pop(rs.request_ctx, None)
            if req is None:
                continue
            member, committed_then = req
            if member != m.id:
                self.fail(f"read {rs.request_ctx!r} of member {member} answered on {m.id}")
            if rs.index < committed_then:
                self.fail(
                    f"read safety: read index {rs.index} < {committed_then}, "
                    f"already committed when the read was requested"
                )
            self.stats["reads_done"] += 1

    def _check_digest(self, m: Member) -> None:
        seen = self.applied_at.get(m.applied)
        if seen is not None and seen[2] != m.digest:
            self.fail(f"State Machine Safety: member {m.id} state differs at index {m.applied}")

    # ------------------------------------------------------------ invariants

    def _check_new_entries(self, m: Member, entries: list[Entry]) -> None:
        """Log Matching, incrementally: (index, term) must always name the same
        data and the same predecessor term."""
        assert m.node is not None
        log = m.node._raft.log
        prev_term = log.term(entries[0].index - 1)
        for e in entries:
            key = (e.index, e.term)
            value = (e.data, prev_term, e.type)
            seen = self.entry_at.setdefault(key, value)
            if seen != value:
                self.fail(
                    f"Log Matching: member {m.id} has entry {key} = {value!r}, elsewhere {seen!r}"
                )
            prev_term = e.term

    def _record_commits(self, m: Member) -> None:
        assert m.node is not None
        log = m.node._raft.log
        commit = log.committed
        if commit <= m.recorded_commit:
            return
        # The term an entry was committed in is at most the term of the member
        # that learns of it (the leader itself, normally, which records first).
        term = m.node.term
        lo = max(m.recorded_commit + 1, log.first_index())
        for e in log.slice(lo, commit + 1) if lo <= commit else []:
            seen = self.committed.get(e.index)
            if seen is None:
                self.committed[e.index] = (e.term, e.data, term)
            elif seen[:2] != (e.term, e.data):
                self.fail(
                    f"committed entry {e.index} is {(e.term, e.data)!r} on member {m.id} "
                    f"but {seen[:2]!r} elsewhere"
                )
            elif term < seen[2]:
                self.committed[e.index] = (e.term, e.data, term)
        m.recorded_commit = commit
        if commit > self.max_committed:
            self.max_committed = commit
            # Leaders of later terms must hold what got committed, even if
            # they were elected before we learned of the commit.
            for other in self.live():
                assert other.node is not None
                if other.node.is_leader and other.node.term > term:
                    self._check_leader_complete(other)

    def _check_new_leader(self, m: Member) -> None:
        assert m.node is not None
        term = m.node.term
        prev = self.leader_of_term.setdefault(term, m.id)
        if prev != m.id:
            self.fail(f"Election Safety: members {prev} and {m.id} both led term {term}")
        self.log(f"{m.id}: became leader of term {term}")
        self._check_leader_complete(m)

    def _check_leader_complete(self, m: Member) -> None:
        """Every entry committed in a term below the leader's is in its log."""
        assert m.node is not None
        log = m.node._raft.log
        lead_term = m.node.term
        first = log.first_index()
        last = log.last_index()
        # A leader never rewrites its log: what was checked stays checked.
        key = (m.id, lead_term)
        start = max(first - 1, 1, self.leader_checked.get(key, 0) + 1)
        self.leader_checked[key] = self.max_committed
        for index in range(start, self.max_committed + 1):
            known = self.committed.get(index)
            if known is None or known[2] >= lead_term:
                continue
            if index > last or log.term(index) != known[0]:
                self.fail(
                    f"Leader Completeness: leader {m.id} (term {lead_term}, log ends at {last}) "
                    f"has term {log.term(index)} at index {index}, committed in term "
                    f"{known[2]} with term {known[0]}"
                )

    def check_leaders(self) -> None:
        for m in self.live():
            assert m.node is not None
            if m.node.is_leader:
                prev = self.leader_of_term.setdefault(m.node.term, m.id)
                if prev != m.id:
                    self.fail(f"Election Safety: {prev} and {m.id} both led term {m.node.term}")

    def full_log_check(self) -> None:
        """Log Matching, by brute force over every pair of live members."""
        logs = {}
        for m in self.live():
            assert m.node is not None
            log = m.node._raft.log
            first, last = log.first_index(), log.last_index()
            logs[m.id] = (first, {e.index: e for e in log.slice(first, last + 1)}, log)
        ids = sorted(logs)
        for a_pos, a in enumerate(ids):
            fa, ea, _la = logs[a]
            for b in ids[a_pos + 1 :]:
                fb, eb, _lb = logs[b]
                lo, hi = max(fa, fb), min(max(ea, default=0), max(eb, default=0))
                agreed = False  # scanning down: once terms agree, all below must be equal
                for i in range(hi, lo - 1, -1):
                    x, y = ea[i], eb[i]
                    if x.term == y.term:
                        agreed = True
                    if agreed and (x.term, x.data, x.type) != (y.term, y.data, y.type):
                        self.fail(f"Log Matching: members {a} and {b} differ at {i}")

    # ----------------------------------------------------------------- faults

    def crash(self, m: Member, why: str) -> None:
        self.log(f"{m.id}: CRASH ({why})")
        self.stats["crashes"] += 1
        m.node = None
        # A commit index written without fsync may be lost.
        hs = m.storage.hard_state
        if hs.commit > m.synced_commit and self.rng.random() < 0.5:
            m.storage.set_hard_state(HardState(hs.term, hs.vote, m.synced_commit))

    def restart(self, m: Member) -> None:
        snap = m.storage.snapshot()
        if snap.metadata.index > m.applied:
            # Crashed after saving a snapshot but before restoring the state
            # machine from it: a server restores it on start-up.
            m.applied = snap.metadata.index
            m.digest = snap.data
            m.conf_state = snap.metadata.conf_state
            self._check_digest(m)
        self.log(f"{m.id}: restart (applied {m.applied})")
        self._start(m)
        m.synced_commit = m.storage.hard_state.commit
        m.recorded_commit = 0
        self.process(m)

    def inject_faults(self) -> None:
        cfg = self.cfg
        rng = self.rng
        if rng.random() < cfg.partition_rate:
            if self.partition is None:
                ids = list(self.members)
                side = set(rng.sample(ids, rng.randint(1, len(ids) // 2)))
                self.partition = {i: (1 if i in side else 0) for i in ids}
                self.log(f"partition {sorted(side)} | rest")
            else:
                self.partition = None
                self.log("partition healed")
        live = [m for m in self.live() if not m.removed]
        if live and rng.random() < cfg.crash_rate:
            self.crash(rng.choice(live), "random")
        for m in self.members.values():
            if m.node is None and not m.removed and rng.random() < cfg.restart_rate:
                self.restart(m)

    def stop_faults(self) -> None:
        self.faults = False
        self.partition = None
        for m in self.members.values():
            if m.node is None and not m.removed:
                self.restart(m)
        self.log("faults stopped")

    # ----------------------------------------------------------------- client

    def leader(self) -> Member | None:
        best = None
        for m in self.live():
            assert m.node is not None
            if m.node.is_leader and (best is None or m.node.term > best.node.term):  # type: ignore[union-attr]
                best = m
        return best

    def client_actions(self) -> None:
        cfg = self.cfg
        rng = self.rng
        live = self.live()
        if not live:
            return
        # Once faults stop, only reads and compactions go on: the liveness
        # check then measures recovery, not a backlog of client load.
        busy = self.faults
        if busy and rng.random() < cfg.propose_rate:
            m = rng.choice(live)
            n = rng.choice((1, 1, 1, 3, 10))
            datas = []
            for _ in range(n):
                self.next_proposal += 1
                datas.append(f"p{self.next_proposal}".encode() * rng.randint(1, 4))
            assert m.node is not None
            with contextlib.suppress(ProposalDropped):
                m.node.propose_batch(datas)
            self.process(m)
        live = self.live()
        if live and rng.random() < cfg.read_rate:
            m = rng.choice(live)
            self.next_read += 1
            ctx = f"r{self.next_read}".encode()
            assert m.node is not None
            try:
                m.node.read_index(ctx)
                self.reads[ctx] = (m.id, self.max_committed)
            except ReadIndexDropped:
                pass
            self.process(m)
        if busy and rng.random() < cfg.transfer_rate:
            lead = self.leader()
            if lead is not None and lead.node is not None:
                target = rng.choice(list(lead.node._raft.voters))
                self.log(f"transfer leadership {lead.id} -> {target}")
                lead.node.transfer_leader(target)
                self.process(lead)
        live = self.live()
        if live and rng.random() < cfg.compact_rate:
            self.compact(rng.choice(live))
        if busy and cfg.membership and rng.random() < cfg.conf_change_rate:
            self.change_membership()

    def compact(self, m: Member) -> None:
        st = m.storage
        index = m.applied
        if index <= st.snapshot().metadata.index or index > st.last_index():
            return
        st.create_snapshot(index, m.conf_state, m.digest)
        keep = self.rng.choice((0, 0, 2, 10))
        if index - keep > st.first_index() - 1:
            st.compact(index - keep)
        self.log(f"{m.id}: snapshot at {index}, compacted to {st.first_index() - 1}")

    def change_membership(self) -> None:
        lead = self.leader()
        if lead is None or lead.node is None:
            return
        r = lead.node._raft
        voters, learners = list(r.voters), list(r.learners)
        options: list[ConfChange] = []
        if self.spares:
            options.append(ConfChange(ConfChangeType.ADD_LEARNER_NODE, self.spares[0]))
        for lid in learners:
            options.append(ConfChange(ConfChangeType.ADD_NODE, lid))
            options.append(ConfChange(ConfChangeType.REMOVE_NODE, lid))
        if len(voters) > 3:
            options.extend(ConfChange(ConfChangeType.REMOVE_NODE, v) for v in voters)
        if not options:
            return
        cc = self.rng.choice(options)
        try:
            lead.node.propose_conf_change(cc)
        except ProposalDropped:
            return
        self.log(f"propose {cc.type.name} {cc.node_id} on leader {lead.id}")
        if cc.type == ConfChangeType.ADD_LEARNER_NODE:
            new_id = self.spares.pop(0)
            m = Member(new_id)  # joins with empty storage, no bootstrap
            self.members[new_id] = m
            self._start(m)
        self.process(lead)

    # ------------------------------------------------------------------- run

    def retire_removed(self) -> None:
        for node_id in sorted(self.to_retire):
            m = self.members.get(node_id)
            if m is not None and not m.removed:
                self.log(f"{node_id}: removed from the cluster, shut down")
                m.removed = True
                m.node = None
        self.to_retire.clear()

    def tick(self) -> None:
        self.now += 1
        self.retire_removed()
        if self.faults:
            self.inject_faults()
        self.client_actions()
        members = self.live()
        self.rng.shuffle(members)
        for m in members:
            if m.node is not None and (not self.faults or self.rng.random() < 0.95):
                m.node.tick()
                if m.node.commit_unsent:
                    m.node.flush_commit()
                self.process(m)
        self.deliver_due()
        self.check_leaders()
        if self.now % self.cfg.full_check_every == 0:
            self.full_log_check()

    def run(self) -> dict[str, int]:
        for m in self.members.values():
            self.process(m)
        for _ in range(self.cfg.fault_ticks):
            self.tick()
        self.stop_faults()
        self.full_log_check()
        self._check_liveness()
        self.full_log_check()
        self.stats["committed"] = self.max_committed
        return self.stats

    def _check_liveness(self) -> None:
        """With faults gone, a leader must emerge and commit a new proposal
        everywhere. Fails after liveness_ticks without any entry replicated or
        applied anywhere (a backlog may take longer, as long as it moves)."""
        marker = self.marker
        proposed_in: tuple[int, int] | None = None  # (leader, term) that took the marker
        window = self.cfg.liveness_ticks
        deadline = self.now + window
        hard_deadline = self.now + 50 * window
        progress = -1
        while self.now < deadline:
            self.tick()
            # Progress: entries applied, or replicated (client load is off now).
            moved = sum(
                m.applied + m.storage.last_index() for m in self.members.values() if not m.removed
            )
            if moved > progress:
                progress = moved
                deadline = min(hard_deadline, self.now + window)
            lead = self.leader()
            if lead is None or lead.node is None:
                continue
            if proposed_in != (lead.id, lead.node.term) and not self.marker_index:
                try:
                    lead.node.propose(marker)
                    proposed_in = (lead.id, lead.node.term)
                    self.process(lead)
                except ProposalDropped:
                    pass
            members = set(lead.node._raft.voters) | set(lead.node._raft.learners)
            done = [
                m
                for m in self.members.values()
                if m.id in members and self.marker_index and m.applied >= self.marker_index
            ]
            if len(done) == len(members):
                self.log(f"liveness: marker applied on {sorted(m.id for m in done)}")
                return
        self.fail(
            f"liveness: after faults stopped, no proposal was committed and applied on every "
            f"member (nothing moved for {window} ticks, or {50 * window} ticks in all; "
            f"leader: {self.leader().id if self.leader() else None})"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description="Replay Raft simulation seeds.")
    ap.add_argument("--seed", type=int, action="append", help="seed to run (repeatable)")
    ap.add_argument("--seeds", type=int, help="run seeds 0..N-1")
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a SimConfig field",
    )
    args = ap.parse_args()
    seeds = args.seed or list(range(args.seeds or 1))
    for seed in seeds:
        cfg = SimConfig.for_seed(seed)
        for item in args.set:
            key, value = item.split("=", 1)
            setattr(cfg, key, type(getattr(cfg, key))(value))
        sim = Simulation(seed, cfg, verbose=args.verbose)
        stats = sim.run()
        print(f"seed {seed} ok: {sim.cfg} {stats}")


if __name__ == "__main__":
    main()
