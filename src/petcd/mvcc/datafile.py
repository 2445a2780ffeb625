"""`DataFile`: the backend's LMDB environment (one data file plus `path-lock`) with its
named database handles, and the operations on the whole file: its size, a hash of its
contents, a copy of it, the compact copy of a defragment and swapping another file in.

It knows nothing of what is applied or committed: the backend (mvcc/backend.py) decides
when these may run (nothing uncommitted, no batch open) and tells the layers above.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import zlib
from typing import BinaryIO

import lmdb

META_DB = b"meta"
_COPY_CHUNK = 1 << 20


class DataFile:
    """Commits are synced (`sync=True`); `metasync=False` saves one fsync per commit but
    a power loss may then undo the last commit, which is only safe once a WAL can replay
    it."""

    def __init__(self, path: str, *, map_size: int, max_readers: int, sync: bool,
                 metasync: bool) -> None:
        self.path = path
        self._options = {
            "map_size": map_size,
            "max_readers": max_readers,
            "sync": sync,
            "metasync": metasync,
        }
        self._db_flags: dict[bytes, tuple[bool, bool]] = {}
        self._defrag_txnid = -1  # LMDB's last txn id when the defragment copy began
        self._dbs: dict[bytes, lmdb._Database] = {}
        dirname = os.path.dirname(path) or "."
        os.makedirs(dirname, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path + ".defrag")  # leftover of a defragment cut short
        self.env = self._open_env()
        self.env.reader_check()  # free reader slots of processes that died
        self.meta_db = self.open_db(META_DB)

    def _open_env(self) -> lmdb.Environment:
        opts = self._options
        return lmdb.open(
            self.path,
            subdir=False,
            map_size=opts["map_size"],
            max_readers=opts["max_readers"],
            max_dbs=64,
            sync=bool(opts["sync"]),
            metasync=bool(opts["metasync"]),
            readahead=False,
        )

    def is_open(self, name: bytes) -> bool:
        return name in self._dbs

    def open_db(
        self, name: bytes, *, dupsort: bool = False, dupfixed: bool = False
    ) -> lmdb._Database:
        """Open (creating if needed) the named database; the same name again returns the
        same handle. Not while a write transaction is open (the backend checks)."""
        db = self._dbs.get(name)
        if db is not None:
            if self._db_flags[name] != (dupsort, dupfixed):
                raise ValueError(f"database {name!r} already opened with other flags")
            return db
        db = self.env.open_db(name, dupsort=dupsort, dupfixed=dupfixed)
        self._dbs[name] = db
        self._db_flags[name] = (dupsort, dupfixed)
        return db

    def existing_db(self, name: bytes, txn: lmdb.Transaction[bytes]) -> lmdb._Database | None:
        """A handle on a named database for a reader, or None if the file has none (safe
        while a batch is open: nothing is created)."""
        db = self._dbs.get(name)
        if db is not None:
            return db
        if txn.get(name) is None:  # named databases are listed in the main database
            return None
        return self.env.open_db(name, txn=txn, create=False)

    def all_dbs(self, txn: lmdb.Transaction[bytes]) -> dict[bytes, lmdb._Database]:
        """Every named database in the file, opened ones and the others."""
        names = [key for key, _ in txn.cursor()]
        dbs: dict[bytes, lmdb._Database] = {}
        for name in names:
            db = self._dbs.get(name)
            if db is None:
                db = self.env.open_db(name, txn=txn, create=False)
            dbs[name] = db
        return dbs

    def size(self) -> int:
        """Bytes the data file takes (StatusResponse.dbSize)."""
        return os.stat(self.path).st_size

    def size_in_use(self) -> int:
        """Bytes of pages holding data (StatusResponse.dbSizeInUse): the
        pages of every database plus LMDB's two meta pages. Free pages that
        LMDB will reuse are not counted."""
        pages = 2
        with self.env.begin() as txn:
            stat = txn.stat()
            pages += stat["branch_pages"] + stat["leaf_pages"] + stat["overflow_pages"]
            for db in self.all_dbs(txn).values():
                st = txn.stat(db)
                pages += st["branch_pages"] + st["leaf_pages"] + st["overflow_pages"]
        return pages * stat["psize"]

    def hash(self, txn: lmdb.Transaction[bytes], *, skip_meta: bytes) -> int:
        """CRC-32 of every database's name, keys and values as `txn` sees them, in order,
        leaving out the key `skip_meta` of the meta database."""
        crc = 0
        for name, db in sorted(self.all_dbs(txn).items()):
            crc = zlib.crc32(name, crc)
            for key, value in txn.cursor(db):
                if db is self.meta_db and key == skip_meta:
                    continue
                crc = zlib.crc32(value, zlib.crc32(key, crc))
        return crc

    def copy_to(self, fileobj: BinaryIO) -> int:
        """Write a consistent copy of the committed file (a valid LMDB data file) to
        `fileobj`; returns bytes written."""
        with tempfile.TemporaryFile(dir=os.path.dirname(self.path) or ".") as tmp:
            self.env.copyfd(tmp.fileno())
            tmp.seek(0)
            written = 0
            while chunk := tmp.read(_COPY_CHUNK):
                fileobj.write(chunk)
                written += len(chunk)
        return written

    def defragment_copy(self) -> None:
        """The compact copy of the committed file, beside it (synced)."""
        fd = os.open(self.path + ".defrag", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            self._defrag_txnid = self.env.info()["last_txnid"]
            self.env.copyfd(fd, compact=True)
            os.fsync(fd)
        finally:
            os.close(fd)

    def defragment_swap(self) -> None:
        """Put the copy of defragment_copy() in place of the file and reopen; the copy is
        discarded if anything was committed since it began."""
        tmp_path = self.path + ".defrag"
        if not os.path.exists(tmp_path):
            raise RuntimeError("defragment_swap() without defragment_copy()")
        if self.env.info()["last_txnid"] != self._defrag_txnid:
            os.unlink(tmp_path)  # the copy lacks a commit made after it began
            raise RuntimeError("a write batch committed during defragment; copy discarded")
        self.replace(tmp_path)

    def replace(self, path: str) -> None:
        """Close the environment, move the LMDB file at `path` into place (durably), and
        reopen it with the same named databases. Cached DB handles are stale after this."""
        self.env.close()
        os.replace(path, self.path)
        dir_fd = os.open(os.path.dirname(self.path) or ".", os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        self.env = self._open_env()
        flags = self._db_flags
        self._dbs = {}
        self._db_flags = {}
        self.meta_db = self.open_db(META_DB)
        for name, (dupsort, dupfixed) in flags.items():
            self.open_db(name, dupsort=dupsort, dupfixed=dupfixed)
