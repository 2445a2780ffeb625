"""Cluster membership: who the members are, as the replicated log says.

Every change is a CONF_CHANGE log entry whose context (JSON, petcd's own format) says what
changed; it is applied twice, in log order:

- in memory, by the Raft driver, when the entry is handed out for applying (so that Raft's
  configuration, the transport's peers and this list move together), and
- to the backend, in the same LMDB write transaction as the other entries of its batch (the
  `members` and `members_removed` databases), so a backend file sent to a lagging follower
  carries the membership with it, and a restart reads it back with the data it belongs to.

Changes are validated once, by the leader, before they are proposed (a leader proposes a
conf change only when every earlier one is applied, so it validates against the true
state); applying never refuses one, so every member ends in the same state.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import lmdb

from petcd import errors
from petcd.errors import EtcdError
from petcd.mvcc.backend import Backend, WriteBatch
from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.raft.types import ConfChange, ConfChangeType

MEMBERS_DB = b"members"
REMOVED_DB = b"members_removed"
_ID = struct.Struct(">Q")

# The Applier kind of CONF_CHANGE entries (not an InternalRequest field: these are Raft's own).
CONF_CHANGE_KIND = "_conf_change"


@dataclass(slots=True)
class Member:
    id: int
    name: str = ""  # empty until the member has started and published it
    peer_urls: list[str] = field(default_factory=list)
    client_urls: list[str] = field(default_factory=list)
    is_learner: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"id": f"{self.id:x}", "name": self.name, "peerURLs": self.peer_urls,
                "clientURLs": self.client_urls, "isLearner": self.is_learner}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Member:
        return cls(int(doc["id"], 16), str(doc.get("name", "")), list(doc.get("peerURLs", [])),
                   list(doc.get("clientURLs", [])), bool(doc.get("isLearner", False)))

    def to_pb(self) -> rpc.Member:
        return rpc.Member(ID=self.id, name=self.name, peerURLs=self.peer_urls,
                          clientURLs=self.client_urls, isLearner=self.is_learner)

    def copy(self) -> Member:
        return Member(self.id, self.name, list(self.peer_urls), list(self.client_urls),
                      self.is_learner)


# -- conf change contexts ------------------------------------------------------------------

def add_change(member: Member) -> ConfChange:
    kind = ConfChangeType.ADD_LEARNER_NODE if member.is_learner else ConfChangeType.ADD_NODE
    return ConfChange(kind, member.id, _dump({"add": member.to_json()}))


def promote_change(member_id: int) -> ConfChange:
    return ConfChange(ConfChangeType.ADD_NODE, member_id, _dump({"promote": True}))


def remove_change(member_id: int) -> ConfChange:
    return ConfChange(ConfChangeType.REMOVE_NODE, member_id, b"")


def update_change(member_id: int, peer_urls: list[str]) -> ConfChange:
    return ConfChange(ConfChangeType.UPDATE_NODE, member_id, _dump({"peerURLs": peer_urls}))


def attributes_change(member_id: int, name: str, client_urls: list[str]) -> ConfChange:
    """What a member publishes once it runs: its name and client URLs (etcd's 'publish')."""
    return ConfChange(ConfChangeType.UPDATE_NODE, member_id,
                      _dump({"name": name, "clientURLs": client_urls}))


def _dump(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


def _context(cc: ConfChange) -> dict[str, Any]:
    if not cc.context:
        return {}
    doc = json.loads(cc.context)
    if not isinstance(doc, dict):
        raise ValueError("conf change context is not an object")
    return doc


def apply_change(members: dict[int, Member], removed: set[int], cc: ConfChange) -> None:
    """Apply one committed change to a member map (the one rule both copies follow)."""
    node = cc.node_id
    ctx = _context(cc)
    if cc.type in (ConfChangeType.ADD_NODE, ConfChangeType.ADD_LEARNER_NODE):
        if ctx.get("promote"):
            m = members.get(node)
            if m is not None:
                m.is_learner = False
            return
        doc = ctx.get("add")
        if isinstance(doc, dict):
            m = Member.from_json(doc)
            m.id = node
            m.is_learner = cc.type == ConfChangeType.ADD_LEARNER_NODE
            members[node] = m
            removed.discard(node)
    elif cc.type == ConfChangeType.REMOVE_NODE:
        members.pop(node, None)
        removed.add(node)
    elif cc.type == ConfChangeType.UPDATE_NODE:
        m = members.get(node)
        if m is None:
            return
        if "peerURLs" in ctx:
            m.peer_urls = list(ctx["peerURLs"])
        if "name" in ctx:
            m.name = str(ctx["name"])
        if "clientURLs" in ctx:
            m.client_urls = list(ctx["clientURLs"])


class Membership:
    """The member list in memory, as of the last conf change handed out for applying."""

    def __init__(self, cluster_id: int, local_id: int) -> None:
        self.cluster_id = cluster_id
        self.local_id = local_id
        self.members: dict[int, Member] = {}
        self.removed: set[int] = set()
        self.index = 0  # changes at or below this log index are already reflected
        self._members_db: lmdb._Database | None = None
        self._removed_db: lmdb._Database | None = None
        self._hooked = False

    def _open_dbs(self, backend: Backend) -> None:
        self._members_db = backend.open_db(MEMBERS_DB)
        self._removed_db = backend.open_db(REMOVED_DB)

    # -- the backend copy

    def load(self, backend: Backend) -> None:
        """(Re)open the databases and load the list the backend holds (at its applied
        index). Called at start and after the backend was replaced by a snapshot."""
        self._open_dbs(backend)
        if not self._hooked:
            # Defragment swaps the file and reopens the environment: handles from the
            # old one would fail the next membership change.
            backend.reopen_hooks.append(lambda: self._open_dbs(backend))
            self._hooked = True
        members: dict[int, Member] = {}
        removed: set[int] = set()
        with backend.read() as txn:
            for _, raw in txn.cursor(db=self._members_db):
                m = Member.from_json(json.loads(raw))
                members[m.id] = m
            for key, _ in txn.cursor(db=self._removed_db):
                removed.add(_ID.unpack(key)[0])
        self.members, self.removed = members, removed
        self.index = backend.consistent_index()[0]

    def write(self, batch: WriteBatch, cc: ConfChange) -> None:
        """Apply `cc` to the backend copy inside the batch (the apply thread)."""
        assert self._members_db is not None and self._removed_db is not None
        txn = batch.txn
        key = _ID.pack(cc.node_id)
        members: dict[int, Member] = {}
        raw = txn.get(key, db=self._members_db)
        if raw is not None:
            members[cc.node_id] = Member.from_json(json.loads(raw))
        removed = {cc.node_id} if txn.get(key, db=self._removed_db) is not None else set()
        apply_change(members, removed, cc)
        m = members.get(cc.node_id)
        if m is None:
            txn.delete(key, db=self._members_db)
        else:
            txn.put(key, _dump(m.to_json()), db=self._members_db)
        if cc.node_id in removed:
            txn.put(key, b"", db=self._removed_db)
        else:
            txn.delete(key, db=self._removed_db)

    # -- the in-memory copy

    def apply(self, index: int, cc: ConfChange) -> None:
        if index <= self.index:
            return  # the backend this list was loaded from already holds it
        apply_change(self.members, self.removed, cc)
        self.index = index

    def reset(self, members: Iterable[Member], index: int = 0) -> None:
        """Start from a list learnt elsewhere (a joining member asks its peers)."""
        self.members = {m.id: m.copy() for m in members}
        self.index = index

    @property
    def local(self) -> Member | None:
        return self.members.get(self.local_id)

    def voters(self) -> list[Member]:
        return [m for m in self.members.values() if not m.is_learner]

    def sorted(self) -> list[Member]:
        return sorted(self.members.values(), key=lambda m: m.id)

    # -- validation (by the leader, before proposing)

    def check_add(self, member: Member, max_learners: int) -> EtcdError | None:
        if member.id in self.removed:
            return errors.MEMBER_NOT_FOUND()  # etcd: ID removed, answered as not found
        if member.id in self.members:
            return errors.MEMBER_EXIST()
        taken = {u for m in self.members.values() for u in m.peer_urls}
        if any(u in taken for u in member.peer_urls):
            return errors.PEER_URL_EXIST()
        if member.is_learner and \
                sum(1 for m in self.members.values() if m.is_learner) >= max_learners:
            return errors.TOO_MANY_LEARNERS()
        return None

    def check_update(self, member_id: int, peer_urls: list[str]) -> EtcdError | None:
        if member_id in self.removed or member_id not in self.members:
            return errors.MEMBER_NOT_FOUND()
        taken = {u for m in self.members.values() if m.id != member_id for u in m.peer_urls}
        if any(u in taken for u in peer_urls):
            return errors.PEER_URL_EXIST()
        return None

    def check_remove(self, member_id: int) -> EtcdError | None:
        if member_id not in self.members:
            return errors.MEMBER_NOT_FOUND()
        return None

    def check_promote(self, member_id: int) -> EtcdError | None:
        m = self.members.get(member_id)
        if m is None:
            return errors.MEMBER_NOT_FOUND()
        if not m.is_learner:
            return errors.MEMBER_NOT_LEARNER()
        return None


# -- etcd's --strict-reconfig-check rules (on the leader, before proposing) -----------------

LEARNER_READY = 0.9  # a learner may be promoted once its log matches this share of ours


def _started(m: Member) -> bool:
    return bool(m.name)  # (a member that never ran has not published its name)


def quorum_check_add(ms: Membership, member: Member,
                     healthy: Callable[[int], bool]) -> EtcdError | None:
    """A new voter must not make the started members fewer than a quorum, and every voter
    must have been connected to us for a while (etcd's mayAddMember)."""
    voters = ms.voters()
    if not member.is_learner:
        n = len(voters) + 1
        started = sum(1 for m in voters if _started(m))
        # (1 of 2 started is allowed: the way to grow a cluster of one)
        if not (started == 1 and n == 2) and started < n // 2 + 1:
            return errors.MEMBER_NOT_ENOUGH_STARTED()
    if not all(healthy(m.id) for m in voters):
        return errors.UNHEALTHY()
    return None


def quorum_check_remove(ms: Membership, member_id: int, healthy: Callable[[int], bool], *,
                        down: bool) -> EtcdError | None:
    """Removing a voter must leave a started quorum, and not break the active one unless
    the member is down anyway (etcd's mayRemoveMember)."""
    m = ms.members.get(member_id)
    if m is not None and m.is_learner:
        return None
    rest = [v for v in ms.voters() if v.id != member_id]
    if sum(1 for v in rest if _started(v)) < len(rest) // 2 + 1:
        return errors.MEMBER_NOT_ENOUGH_STARTED()
    if down:
        return None
    voters = ms.voters()
    active = sum(1 for v in voters if healthy(v.id))
    if active - 1 < 1 + (len(voters) - 1) // 2:
        return errors.UNHEALTHY()
    return None


def learner_check_promote(ms: Membership, learner_match: int, leader_match: int,
                          strict: bool) -> EtcdError | None:
    """Only a learner in sync with the leader, and (strict) with a started quorum after."""
    if learner_match < leader_match * LEARNER_READY:
        return errors.LEARNER_NOT_READY()
    if strict:
        voters = ms.voters()
        n = len(voters) + 1
        started = 1 + sum(1 for m in voters if _started(m))
        if started < n // 2 + 1:
            return errors.MEMBER_NOT_ENOUGH_STARTED()
    return None


def members_to_json(cluster_id: int, members: Iterable[Member]) -> bytes:
    return _dump({"cluster_id": f"{cluster_id:x}", "members": [m.to_json() for m in members]})


def members_from_json(raw: bytes) -> tuple[int, list[Member]]:
    doc = json.loads(raw)
    return int(doc["cluster_id"], 16), [Member.from_json(m) for m in doc["members"]]
