"""How a member finds its identity and Raft state at start.

- Restart (the WAL exists): identity from the WAL's metadata, Raft state from the newest
  snapshot plus the WAL after it, membership from the backend; the --initial-cluster* flags
  are ignored, as etcd ignores them.
- New cluster (--initial-cluster-state new): IDs derived from the peer URLs and the token
  (petcd.server.initial_cluster); the log starts with one conf change per initial member.
- Joining (--initial-cluster-state existing, after `member add`): the member list and the
  cluster ID come from the peers (a REQUEST over the peer URLs); the log comes from the
  leader, as entries or as a snapshot.

`<data-dir>/member/cluster.json` records the identity before the WAL exists, so a member
that crashed in between starts the same way again.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import os
import ssl
import time
from dataclasses import dataclass
from typing import Any

from petcd.mvcc.backend import Backend
from petcd.raft import (
    ConfChangeType,
    Entry,
    EntryType,
    HardState,
    MemoryStorage,
    Peer,
    Snapshot,
)
from petcd.raft.codec import decode_conf_change, encode_conf_change
from petcd.server import initial_cluster
from petcd.server.errors import BootstrapError
from petcd.server.membership import (
    Member,
    Membership,
    add_change,
    members_from_json,
    remove_change,
)
from petcd.server.options import ServerOptions
from petcd.server.peer_tls import peer_contexts
from petcd.tls import Gate
from petcd.transport import RequestFailed, peer_request
from petcd.wal.storage import MemberStorage

log = logging.getLogger("petcd.server")

IDENTITY_FILE = "cluster.json"
JOIN_TIMEOUT = 5.0  # seconds a joining member keeps asking its peers for the member list


@dataclass(slots=True)
class Boot:
    cluster_id: int
    local_id: int
    storage: MemberStorage
    raft_storage: MemoryStorage
    applied: int  # the Raft Config's `applied`
    bootstrap_peers: list[Peer] | None  # a brand-new cluster: RawNode.bootstrap(these)
    restarted: bool
    server_ssl: ssl.SSLContext | None = None  # for https peer URLs
    client_ssl: ssl.SSLContext | None = None
    peer_gate: Gate | None = None  # etcd's checks of inbound peers' certificates


def encode_metadata(cluster_id: int, local_id: int) -> bytes:
    return json.dumps({"cluster_id": f"{cluster_id:x}", "member_id": f"{local_id:x}"}).encode()


def decode_metadata(raw: bytes) -> tuple[int, int]:
    doc = json.loads(raw)
    return int(doc["cluster_id"], 16), int(doc["member_id"], 16)


def boot(opts: ServerOptions, backend: Backend, membership: Membership) -> Boot:
    """Open or create the member's Raft storage; fills `membership`."""
    member_dir = os.path.join(opts.data_dir, "member")
    fsync = not opts.unsafe_no_fsync
    peer_tls = peer_contexts(opts)
    if MemberStorage.exists(opts.data_dir, opts.wal_dir):
        booted = _restart(opts, backend, membership, member_dir, fsync)
    else:
        booted = _first_start(opts, backend, membership, member_dir, fsync, peer_tls.client)
    booted.server_ssl, booted.client_ssl = peer_tls.server, peer_tls.client
    booted.peer_gate = peer_tls.gate
    return booted


def _first_start(opts: ServerOptions, backend: Backend, membership: Membership,
                 member_dir: str, fsync: bool, client_ssl: ssl.SSLContext | None) -> Boot:
    if backend.consistent_index()[0] > 0:
        raise BootstrapError(f"{member_dir} holds data but no WAL: not a petcd member's data "
                             f"directory (or written by a petcd without Raft)")
    ident = _read_identity(member_dir)
    if ident is None:
        ident = _new_identity(opts, client_ssl)
        _write_identity(member_dir, ident)
    cluster_id, local_id = int(ident["cluster_id"], 16), int(ident["local_id"], 16)
    members = [Member.from_json(m) for m in ident["members"]]
    membership.cluster_id, membership.local_id = cluster_id, local_id
    membership.load(backend)  # (empty: opens its databases)
    storage = MemberStorage.create(opts.data_dir, encode_metadata(cluster_id, local_id),
                                   fsync=fsync, wal_path=opts.wal_dir)
    peers = None
    if ident["state"] == "new":
        peers = [Peer(m.id, add_change(m).context) for m in members]
    else:
        # Until the leader's log (or snapshot) arrives, this is all we know.
        membership.reset(members)
    return Boot(cluster_id, local_id, storage, MemoryStorage(), 0, peers, restarted=False)


def _restart(opts: ServerOptions, backend: Backend, membership: Membership, member_dir: str,
             fsync: bool) -> Boot:
    storage, rec = MemberStorage.restore(opts.data_dir, fsync=fsync, wal_path=opts.wal_dir)
    if rec.torn_tail is not None:
        log.warning("WAL: cut off a torn write at the end (%s)", rec.torn_tail)
    cluster_id, local_id = decode_metadata(rec.metadata)
    membership.cluster_id, membership.local_id = cluster_id, local_id
    mem = MemoryStorage()
    snap_index = 0
    if rec.snapshot is not None:
        mem.apply_snapshot(rec.snapshot)
        snap_index = rec.snapshot.metadata.index
    entries, hard_state = rec.entries, rec.hard_state
    if opts.force_new_cluster:
        entries, hard_state = _force_new_cluster(storage, rec.snapshot, entries, hard_state,
                                                 local_id, backend.consistent_index()[0])
    mem.append(entries)
    mem.set_hard_state(hard_state)
    applied = backend.consistent_index()[0]
    if applied < snap_index:
        # The snapshot came from the leader with a backend file that was not swapped in yet.
        path = storage.snapshotter.db_file_path(snap_index)
        if path is None:
            storage.close()
            raise BootstrapError(f"backend at index {applied} is behind the snapshot at "
                                 f"{snap_index} and its backend file is missing")
        log.info("swapping in the backend of snapshot %d (%s)", snap_index, path)
        backend.restore_from(path)
        applied = backend.consistent_index()[0]
    membership.load(backend)
    # A backend from the leader may be ahead of our log; entries up to its index are
    # handed out again and skipped by the Applier.
    applied = max(snap_index, min(applied, mem.last_index()))
    peers = None
    if mem.last_index() == 0:
        # Crashed before the first Ready was saved: start over as configured then. A
        # joining member that heard the leader (a term saved) but got no log or snapshot
        # yet (killed while receiving one) still knows only the member list it was given.
        ident = _read_identity(member_dir)
        if ident is not None and ident["state"] == "new" and rec.hard_state.term == 0:
            peers = [Peer(m.id, add_change(Member.from_json(m)).context)
                     for m in ident["members"]]
        elif ident is not None and ident["state"] == "existing":
            membership.reset([Member.from_json(m) for m in ident["members"]])
    return Boot(cluster_id, local_id, storage, mem, applied, peers, restarted=True)


def _force_new_cluster(storage: MemberStorage, snapshot: Snapshot | None,
                       entries: list[Entry], hard_state: HardState, local_id: int,
                       applied: int) -> tuple[list[Entry], HardState]:
    """etcd's --force-new-cluster: commit the removal of every other member, so this
    member goes on as the one voter of its cluster with all its data. etcd drops the
    entries past the stored commit index; petcd keeps its whole log, because a commit
    index that only moved is not written on its own (it rides on the next WAL frame), so
    entries past it may well be committed and acknowledged. The new entries are saved to
    the WAL before anything else happens; applying them removes the others from the
    member list too."""
    kept = entries
    ids: set[int] = set()
    if snapshot is not None:
        cs = snapshot.metadata.conf_state
        ids = set(cs.voters) | set(cs.learners)
    for e in kept:
        if e.type == EntryType.CONF_CHANGE:
            cc = decode_conf_change(e.data)
            if cc.type in (ConfChangeType.ADD_NODE, ConfChangeType.ADD_LEARNER_NODE):
                ids.add(cc.node_id)
            elif cc.type == ConfChangeType.REMOVE_NODE:
                ids.discard(cc.node_id)
    last = kept[-1].index if kept else (snapshot.metadata.index if snapshot else 0)
    term = max(hard_state.term, kept[-1].term if kept else 0)
    removals = [Entry(term, last + i + 1, EntryType.CONF_CHANGE,
                      encode_conf_change(remove_change(member_id)))
                for i, member_id in enumerate(sorted(ids - {local_id}))]
    new_state = HardState(term, hard_state.vote, last + len(removals))
    storage.save(new_state, removals)
    log.warning("forcing a new cluster from %d log entries (up to index %d, applied %d): "
                "removing members %s", len(kept), last, applied,
                ", ".join(f"{i:x}" for i in sorted(ids - {local_id})) or "none")
    return kept + removals, new_state


def _new_identity(opts: ServerOptions, client_ssl: ssl.SSLContext | None) -> dict[str, Any]:
    if opts.initial_cluster_state == "existing":
        cluster_id, members = _join(opts, client_ssl)
        local = _match_local(opts, members)
        return _identity(cluster_id, local.id, members, "existing")
    info = initial_cluster.from_flags(opts)
    members = [Member(m.id, m.name, list(m.peer_urls)) for m in info.members.values()]
    return _identity(info.cluster_id, info.local_id, members, "new")


def _identity(cluster_id: int, local_id: int, members: list[Member],
              state: str) -> dict[str, Any]:
    return {"cluster_id": f"{cluster_id:016x}", "local_id": f"{local_id:016x}", "state": state,
            "members": [m.to_json() for m in members]}


def _join(opts: ServerOptions, client_ssl: ssl.SSLContext | None
          ) -> tuple[int, list[Member]]:
    """Ask the peers named in --initial-cluster for the cluster's member list."""
    own = set(opts.initial_advertise_peer_urls)
    urls = sorted({u for name, us in opts.initial_cluster.items() for u in us
                   if name != opts.name and u not in own})
    if not urls:
        raise BootstrapError("cannot join an existing cluster: --initial-cluster names no "
                             "other member")
    deadline = time.monotonic() + JOIN_TIMEOUT
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            answer = _run_blocking(peer_request(urls, b'{"op":"members"}', timeout=2.0,
                                                client_ssl=client_ssl))
            return members_from_json(answer)
        except RequestFailed as e:
            last = e
            time.sleep(0.2)
    raise BootstrapError(f"could not retrieve cluster information from the given URLs "
                         f"({', '.join(urls)}): {last}")


def _run_blocking(coro: object) -> bytes:
    # Startup runs inside the server's event loop, before it serves anything: ask on a
    # private loop in a helper thread and wait.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()  # type: ignore[arg-type]


def _match_local(opts: ServerOptions, members: list[Member]) -> Member:
    """The added (not yet started) member whose peer URLs are ours, as etcd matches it."""
    ours = sorted(opts.initial_advertise_peer_urls)
    for m in members:
        if sorted(m.peer_urls) == ours:
            return m
    raise BootstrapError(f"member with peer URLs {','.join(ours)} is not in the cluster; add "
                         f"it first (etcdctl member add)")


def _read_identity(member_dir: str) -> dict[str, Any] | None:
    path = os.path.join(member_dir, IDENTITY_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except FileNotFoundError:
        return None
    if "state" not in doc:  # written by an older petcd: a cluster of one
        doc["state"] = "new"
    assert isinstance(doc, dict)
    return doc


def _write_identity(member_dir: str, doc: dict[str, Any]) -> None:
    os.makedirs(member_dir, mode=0o700, exist_ok=True)
    path = os.path.join(member_dir, IDENTITY_FILE)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(member_dir, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
