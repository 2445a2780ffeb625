"""Snapshot files (what Maintenance.Snapshot streams and `etcdctl snapshot save` writes:
an etcd backend database (bbolt) followed by its sha256) turned back into a data dir, and
their status. Used by `petcdctl snapshot restore|status`. Files from etcd and from petcd
are the same format; petcd backend files (LMDB, what petcd streamed before) restore too.

A restored data dir is a new cluster holding the snapshot's data, laid out as a member
that has already started once (as etcd's restore does): the backend's member list is
replaced by the one of the restore flags and its consistent index set to n (the number of
members); the WAL (metadata: the new cluster and member IDs) holds hard state {term 1,
commit n} and the marker of a Raft snapshot at index n, term 1 whose configuration has
the n members as voters. A member started on it elects a leader and goes on from n+1.
Every member of the new cluster is restored from the same file with its own --name.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import struct
import zlib
from dataclasses import dataclass

import lmdb

from petcd.mvcc.backend import Backend
from petcd.mvcc.kvstore import KVStore
from petcd.raft.types import ConfState, HardState, Snapshot, SnapshotMetadata
from petcd.server.bootstrap import encode_metadata
from petcd.server.initial_cluster import from_flags
from petcd.server.membership import MEMBERS_DB, REMOVED_DB, Member, Membership, add_change
from petcd.server.options import ServerOptions
from petcd.snapshot.bbolt import BoltError, BoltReader, is_bolt
from petcd.snapshot.etcd import MigrationError, bolt_status, import_bolt
from petcd.wal.storage import MemberStorage

SHA256_SIZE = 32
_COPY_CHUNK = 1 << 20


class RestoreError(Exception):
    """The snapshot cannot be restored (message worded as etcdctl's)."""


def has_checksum(size: int) -> bool:
    """etcdctl's rule: a backend file is whole pages (a multiple of 512 bytes), so a
    file 32 bytes longer than that carries a sha256 trailer."""
    return size % 512 == SHA256_SIZE


@dataclass(frozen=True, slots=True)
class SnapshotStatus:
    hash: int  # CRC-32 of every database's name, keys and values
    revision: int  # the newest revision in the key-value history
    total_key: int  # entries in all databases
    total_size: int  # bytes of the backend's used pages


def snapshot_status(path: str) -> SnapshotStatus:
    """What `etcdctl snapshot status` reports, for an etcd snapshot (bbolt) or a petcd
    backend file (LMDB), with or without its sha256 trailer; raises OSError, BoltError or
    lmdb.Error for a missing or broken file."""
    with open(path, "rb") as f:  # FileNotFoundError with the path, as etcdctl reports it
        head = f.read(4096)
    if is_bolt(head):
        st = bolt_status(path)
        return SnapshotStatus(st.hash, st.revision, st.total_key, st.total_size)
    try:
        env = lmdb.open(path, subdir=False, readonly=True, lock=False, max_dbs=64)
    except lmdb.InvalidError:
        raise BoltError("invalid database") from None  # neither format: bbolt's words
    try:
        crc = 0
        total = 0
        revision = 0
        with env.begin() as txn:
            names = [name for name, _ in txn.cursor()]
            for name in names:
                db = env.open_db(name, txn=txn, create=False)
                crc = zlib.crc32(name, crc)
                for key, value in txn.cursor(db):
                    crc = zlib.crc32(value, zlib.crc32(key, crc))
                    total += 1
                if name == b"kv":
                    with txn.cursor(db) as cur:
                        if cur.last():
                            revision = struct.unpack_from(">q", cur.key())[0]
        size = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
    finally:
        env.close()
    return SnapshotStatus(crc, revision, total, size)


@dataclass(frozen=True, slots=True)
class RestoreConfig:
    snapshot_path: str
    name: str = "default"
    data_dir: str = ""  # default: <name>.petcd
    wal_dir: str = ""
    initial_cluster: dict[str, tuple[str, ...]] | None = None  # default: name=peer URLs
    initial_cluster_token: str = "etcd-cluster"
    peer_urls: tuple[str, ...] = ("http://localhost:2380",)
    skip_hash_check: bool = False


def restore(cfg: RestoreConfig) -> str:
    """Build a new member's data dir from a snapshot file; returns the data dir. Fails
    if the data dir exists; leaves nothing behind on failure."""
    cluster = cfg.initial_cluster
    if cluster is None:
        cluster = {cfg.name: cfg.peer_urls}
    opts = ServerOptions(name=cfg.name, data_dir=cfg.data_dir or f"{cfg.name}.petcd",
                         initial_advertise_peer_urls=cfg.peer_urls, initial_cluster=cluster,
                         initial_cluster_token=cfg.initial_cluster_token,
                         advertise_client_urls=())
    info = from_flags(opts)  # the flags' checks, with etcd's messages (BootstrapError)
    data_dir = opts.data_dir
    if os.path.exists(data_dir):
        raise RestoreError(f'data-dir "{data_dir}" exists')
    wal_dir = cfg.wal_dir
    if wal_dir and os.path.exists(wal_dir):
        raise RestoreError(f'wal-dir "{wal_dir}" exists')
    # Build beside the target and rename at the end: a failed restore leaves nothing a
    # member could boot from.
    staging = f"{data_dir.rstrip(os.sep)}.restoring"
    wal_staging = f"{wal_dir.rstrip(os.sep)}.restoring" if wal_dir else ""
    shutil.rmtree(staging, ignore_errors=True)
    if wal_staging:
        shutil.rmtree(wal_staging, ignore_errors=True)
    try:
        member_dir = os.path.join(staging, "member")
        snap_dir = os.path.join(member_dir, "snap")
        os.makedirs(snap_dir, mode=0o700)
        os.chmod(staging, 0o700)
        db_path = os.path.join(snap_dir, "db")
        received = db_path + ".received"
        _copy_verified(cfg.snapshot_path, received, cfg.skip_hash_check)
        with open(received, "rb") as f:
            head = f.read(4096)
        if is_bolt(head):  # an etcd snapshot (or petcd's, which is in etcd's format)
            _import_etcd(received, db_path)
            os.unlink(received)
        else:  # a petcd backend file (LMDB), as petcd wrote snapshots before
            os.rename(received, db_path)
        members = [Member(m.id, m.name, list(m.peer_urls))
                   for m in sorted(info.members.values(), key=lambda m: m.id)]
        index = len(members)
        _reset_backend(db_path, info.cluster_id, info.local_id, members, index)
        storage = MemberStorage.create(staging, encode_metadata(info.cluster_id,
                                                                info.local_id),
                                       wal_path=wal_staging)
        try:
            voters = tuple(m.id for m in members)
            snapshot = Snapshot(SnapshotMetadata(index, 1, ConfState(voters=voters)))
            storage.save(HardState(term=1, vote=voters[0], commit=index), [], snapshot)
        finally:
            storage.close()
        _fsync_tree(staging)
        if wal_staging:
            _fsync_tree(wal_staging)
            os.rename(wal_staging, wal_dir)
            _fsync_dir(os.path.dirname(os.path.abspath(wal_dir)))
        os.rename(staging, data_dir)
        _fsync_dir(os.path.dirname(os.path.abspath(data_dir)))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if wal_staging:
            shutil.rmtree(wal_staging, ignore_errors=True)
        raise
    return data_dir


def _import_etcd(bolt_path: str, db_path: str) -> None:
    """A new petcd backend at db_path holding an etcd backend's data."""
    backend = Backend(db_path)
    try:
        with BoltReader(bolt_path) as bolt:
            import_bolt(bolt, backend, KVStore(backend))
    except (BoltError, MigrationError, ValueError) as e:
        raise RestoreError(f"snapshot {bolt_path}: {e}") from e
    finally:
        backend.close()


def _reset_backend(db_path: str, cluster_id: int, local_id: int, members: list[Member],
                   index: int) -> None:
    """The new cluster's member list in place of the old one, and the consistent index
    of the snapshot the new log starts from."""
    backend = Backend(db_path)
    try:
        membership = Membership(cluster_id, local_id)
        membership.load(backend)  # opens the member databases
        dbs = (backend.open_db(MEMBERS_DB), backend.open_db(REMOVED_DB))
        with backend.begin_write() as batch:
            for db in dbs:
                batch.txn.drop(db, delete=False)
            for m in members:
                membership.write(batch, add_change(m))
            batch.set_consistent_index(index, 1)
    finally:
        backend.close()


def _copy_verified(src: str, dst: str, skip_hash_check: bool) -> None:
    size = os.stat(src).st_size
    with_hash = has_checksum(size)
    if not with_hash and not skip_hash_check:
        raise RestoreError("snapshot missing hash but --skip-hash-check=false")
    body = size - SHA256_SIZE if with_hash else size
    digest = hashlib.sha256()
    with open(src, "rb") as f, open(dst, "wb") as out:
        left = body
        while left:
            chunk = f.read(min(_COPY_CHUNK, left))
            if not chunk:
                raise RestoreError(f"snapshot {src} ended early")
            digest.update(chunk)
            out.write(chunk)
            left -= len(chunk)
        expected = f.read(SHA256_SIZE) if with_hash else b""
        out.flush()
        os.fsync(out.fileno())
    if with_hash and not skip_hash_check and digest.digest() != expected:
        raise RestoreError(f"expected sha256 {_go_bytes(expected)}, got "
                           f"{_go_bytes(digest.digest())}")


def _go_bytes(b: bytes) -> str:
    """A byte slice as Go's %v prints it: [19 243 43 ...]."""
    return "[" + " ".join(str(x) for x in b) + "]"


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: str) -> None:
    for dirpath, _, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError), open(os.path.join(dirpath, name), "rb") as f:
                os.fsync(f.fileno())
        _fsync_dir(dirpath)
