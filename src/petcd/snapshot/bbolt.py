"""bbolt database files (etcd's backend format), read and written without Go.

A bbolt file is an array of fixed-size pages. Pages 0 and 1 are meta pages (the one with
the higher transaction ID that validates is current); the meta names the freelist page
and the root bucket's root page. A bucket is a B+tree: branch pages hold (first key,
child page) pairs, leaf pages hold (key, value) pairs, and a leaf element flagged as a
bucket holds a nested bucket's header (root page, sequence), followed, for an inline
bucket (root 0), by a whole page image of its single leaf. A page that does not fit in
one page size spans `overflow` more pages.

Interface facts (from the format, in our own code): page header `<QHHI` (id, flags,
count, overflow), branch element `<IIQ` (pos, ksize, pgid), leaf element `<IIII`
(flags, pos, ksize, vsize) with `pos` counted from the element itself, meta `<IIII QQ Q
Q Q Q` (magic, version, page size, flags, root bucket, freelist, high-water page, txid,
FNV-1a 64 checksum of the fields before it).

`BoltReader` checks what bbolt's own consistency check checks (every page below the
high-water mark reachable once or free, page types, bounds) plus key order, and raises
`BoltError` naming the problem. `BoltWriter` lays out a new file bottom-up in one pass
into a seekable file: leaves, then the branch levels above them, bucket by bucket, then
the root bucket, and the meta and freelist pages last (they come first in the file).
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Iterable, Iterator
from typing import BinaryIO

MAGIC = 0xED0CDAED
VERSION = 2

_PAGE_HDR = struct.Struct("<QHHI")
_BRANCH_ELEM = struct.Struct("<IIQ")
_LEAF_ELEM = struct.Struct("<IIII")
_META = struct.Struct("<IIIIQQQQQ")  # ... up to txid; the checksum follows
_U64 = struct.Struct("<Q")
_BUCKET_HDR = struct.Struct("<QQ")
HDR = _PAGE_HDR.size  # 16
ELEM = 16

BRANCH_PAGE = 0x01
LEAF_PAGE = 0x02
META_PAGE = 0x04
FREELIST_PAGE = 0x10
BUCKET_LEAF = 0x01

_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3
_MASK64 = (1 << 64) - 1


class BoltError(Exception):
    """The file is not a (sound) bbolt database."""


def fnv64a(data: bytes) -> int:
    h = _FNV_OFFSET
    for b in data:
        h = ((h ^ b) * _FNV_PRIME) & _MASK64
    return h


def is_bolt(head: bytes) -> bool:
    """Whether these first bytes of a file are a bbolt meta page."""
    if len(head) < HDR + _META.size:
        return False
    _, flags, _, _ = _PAGE_HDR.unpack_from(head, 0)
    magic = struct.unpack_from("<I", head, HDR)[0]
    return bool(flags & META_PAGE) and magic == MAGIC


class _Meta:
    __slots__ = ("freelist", "hwm", "page_size", "root", "txid")

    def __init__(self, buf: bytes | mmap.mmap, off: int) -> None:
        (magic, version, page_size, _flags, root, _seq, freelist, hwm,
         txid) = _META.unpack_from(buf, off + HDR)
        checksum = _U64.unpack_from(buf, off + HDR + _META.size)[0]
        if magic != MAGIC:
            raise BoltError("invalid database")
        if version != VERSION:
            raise BoltError("version mismatch")
        if checksum and checksum != fnv64a(bytes(buf[off + HDR:off + HDR + _META.size])):
            raise BoltError("checksum error")
        self.page_size = page_size
        self.root = root
        self.freelist = freelist
        self.hwm = hwm
        self.txid = txid


class BoltReader:
    """Read access to a bbolt file (mapped, never loaded whole). Trailing bytes past the
    last page (etcdctl's sha256) are ignored."""

    def __init__(self, path: str) -> None:
        self._f = open(path, "rb")  # noqa: SIM115 (closed by close())
        try:
            size = os.fstat(self._f.fileno()).st_size
            if size < 2 * HDR + 2 * _META.size:
                raise BoltError("invalid database")
            self._mm = mmap.mmap(self._f.fileno(), 0, access=mmap.ACCESS_READ)
        except BaseException:
            self._f.close()
            raise
        try:
            self._meta = self._pick_meta(size)
        except BaseException:
            self.close()
            raise
        self.page_size = self._meta.page_size
        self.size = self._meta.hwm * self.page_size

    def _pick_meta(self, size: int) -> _Meta:
        metas: list[_Meta] = []
        first_error: BoltError | None = None
        try:
            m0 = _Meta(self._mm, 0)
            metas.append(m0)
            page_size = m0.page_size
        except BoltError as e:
            first_error = e
            page_size = os.sysconf("SC_PAGE_SIZE")
        if page_size < 512 or page_size & (page_size - 1):
            raise BoltError("invalid database")
        if size >= 2 * page_size:
            try:
                metas.append(_Meta(self._mm, page_size))
            except BoltError as e:
                first_error = first_error or e
        good = [m for m in metas if m.page_size == page_size and m.hwm * page_size <= size
                and 2 <= m.root < m.hwm]
        if not good:
            raise first_error or BoltError("invalid database: file is smaller than its pages")
        return max(good, key=lambda m: m.txid)

    def close(self) -> None:
        self._mm.close()
        self._f.close()

    def __enter__(self) -> BoltReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- pages ----------------------------------------------------------------------

    def _page(self, pgid: int) -> tuple[int, int, int, int]:
        """(offset, flags, count, overflow) of a page, bounds-checked."""
        if not 2 <= pgid < self._meta.hwm:
            raise BoltError(f"page {pgid}: out of bounds: {self._meta.hwm}")
        off = pgid * self.page_size
        pid, flags, count, overflow = _PAGE_HDR.unpack_from(self._mm, off)
        if pid != pgid:
            raise BoltError(f"page {pgid}: header names page {pid}")
        if pgid + overflow >= self._meta.hwm:
            raise BoltError(f"page {pgid}: overflow past the end")
        return off, flags, count, overflow

    def _leaves(self, root: int, seen: dict[int, int] | None
                ) -> Iterator[tuple[bytes | mmap.mmap, int, int, int]]:
        """The leaf pages under page `root`, in key order: (buffer, offset, count, end)."""
        stack = [root]
        while stack:
            pgid = stack.pop()
            off, flags, count, overflow = self._page(pgid)
            if seen is not None:
                for i in range(pgid, pgid + overflow + 1):
                    if i in seen:
                        raise BoltError(f"page {i}: multiple references")
                    seen[i] = pgid
            end = off + (overflow + 1) * self.page_size
            if off + HDR + ELEM * count > end:
                raise BoltError(f"page {pgid}: {count} elements do not fit")
            if flags & LEAF_PAGE:
                yield self._mm, off, count, end
            elif flags & BRANCH_PAGE:
                base = off + HDR
                children = [child for _, _, child in
                            _BRANCH_ELEM.iter_unpack(self._mm[base:base + ELEM * count])]
                stack.extend(reversed(children))
            else:
                raise BoltError(f"page {pgid}: invalid type {flags:#x}")

    @staticmethod
    def _leaf_items(buf: bytes | mmap.mmap, off: int, count: int, end: int
                    ) -> Iterator[tuple[int, bytes, bytes]]:
        base = off + HDR
        for i, (eflags, pos, ksize, vsize) in enumerate(
                _LEAF_ELEM.iter_unpack(buf[base:base + ELEM * count])):
            start = base + ELEM * i + pos
            stop = start + ksize + vsize
            if stop > end:
                raise BoltError(f"page at {off}: element {i} past the page")
            yield eflags, buf[start:start + ksize], buf[start + ksize:stop]

    def _bucket_items(self, header: bytes, seen: dict[int, int] | None = None,
                      ordered: bool = True) -> Iterator[tuple[int, bytes, bytes]]:
        """A bucket's (flags, key, value) leaf elements in key order."""
        if len(header) < _BUCKET_HDR.size:
            raise BoltError("bucket header too short")
        root, _ = _BUCKET_HDR.unpack_from(header)
        if root:
            pages: Iterable[tuple[bytes | mmap.mmap, int, int, int]] = self._leaves(root, seen)
        else:  # inline bucket: a page image after the header
            page = header[_BUCKET_HDR.size:]
            if len(page) < HDR:
                raise BoltError("inline bucket too short")
            _, flags, count, _ = _PAGE_HDR.unpack_from(page)
            if not flags & LEAF_PAGE or HDR + ELEM * count > len(page):
                raise BoltError("inline bucket is not a leaf")
            pages = [(page, 0, count, len(page))]
        last = b""
        for page_buf, off, count, end in pages:
            for item in self._leaf_items(page_buf, off, count, end):
                if ordered:
                    if item[1] <= last and last:
                        raise BoltError(f"page at {off}: keys out of order")
                    last = item[1]
                yield item

    def _root_items(self) -> Iterator[tuple[int, bytes, bytes]]:
        return self._bucket_items(_BUCKET_HDR.pack(self._meta.root, 0))

    # -- public -----------------------------------------------------------------------

    def buckets(self) -> list[bytes]:
        """The names of the top-level buckets, in order."""
        return [k for f, k, _ in self._root_items() if f & BUCKET_LEAF]

    def bucket_header(self, name: bytes) -> bytes | None:
        for f, k, v in self._root_items():
            if k == name and f & BUCKET_LEAF:
                return v
        return None

    def items(self, name: bytes) -> Iterator[tuple[bytes, bytes]]:
        """The (key, value) pairs of a top-level bucket in key order (nothing if it does
        not exist); a nested bucket's value is its raw header."""
        header = self.bucket_header(name)
        if header is None:
            return
        for _, k, v in self._bucket_items(header):
            yield k, v

    def check(self) -> None:
        """What bbolt's Tx.Check verifies; raises BoltError at the first problem."""
        meta = self._meta
        freed: set[int] = set()
        if meta.freelist not in (0, _MASK64):
            off, flags, count, overflow = self._page(meta.freelist)
            if not flags & FREELIST_PAGE:
                raise BoltError(f"page {meta.freelist}: not a freelist page")
            start = off + HDR
            if count == 0xFFFF:
                count = _U64.unpack_from(self._mm, start)[0]
                start += 8
            if start + 8 * count > off + (overflow + 1) * self.page_size:
                raise BoltError(f"page {meta.freelist}: freelist past its pages")
            for i in range(count):
                pid = _U64.unpack_from(self._mm, start + 8 * i)[0]
                if pid in freed:
                    raise BoltError(f"page {pid}: already freed")
                freed.add(pid)
        seen: dict[int, int] = {0: 0, 1: 1}
        if meta.freelist not in (0, _MASK64):
            _, _, _, overflow = self._page(meta.freelist)
            for i in range(meta.freelist, meta.freelist + overflow + 1):
                seen[i] = meta.freelist
        pending = [_BUCKET_HDR.pack(meta.root, 0)]
        while pending:
            for f, _, v in self._bucket_items(pending.pop(), seen, ordered=False):
                if f & BUCKET_LEAF:
                    pending.append(v)
        for pid in seen:
            if pid in freed and pid > 1 and pid != meta.freelist:
                raise BoltError(f"page {pid}: reachable freed")
        if meta.freelist == _MASK64:
            return  # no synced freelist: bbolt counts every unreachable page as free
        for pid in range(meta.hwm):
            if pid not in seen and pid not in freed:
                raise BoltError(f"page {pid}: unreachable unfreed")


class BoltWriter:
    """Writes a new bbolt file. Add top-level buckets in name order with `bucket(name,
    items)` (items: (key, value) in key order), then `finish()`. Memory held: one page
    plus the first key of every page of the bucket being written."""

    def __init__(self, out: BinaryIO, page_size: int = 4096) -> None:
        self._out = out
        self.ps = page_size
        self._next = 3  # 0, 1: meta; 2: freelist
        self._roots: list[tuple[bytes, int]] = []

    def _emit(self, flags: int, elems: list[tuple[int, bytes, bytes | int]]) -> int:
        """Writes one page (plus overflow) at the next page ID; returns its ID."""
        body_len = sum(len(k) + (len(v) if isinstance(v, bytes) else 0)
                       for _, k, v in elems)
        total = HDR + ELEM * len(elems) + body_len
        npages = max(1, -(-total // self.ps))
        pgid = self._next
        self._next += npages
        buf = bytearray(npages * self.ps)
        _PAGE_HDR.pack_into(buf, 0, pgid, flags, len(elems), npages - 1)
        data = HDR + ELEM * len(elems)
        for i, (eflags, key, value) in enumerate(elems):
            eoff = HDR + ELEM * i
            if isinstance(value, int):
                _BRANCH_ELEM.pack_into(buf, eoff, data - eoff, len(key), value)
                buf[data:data + len(key)] = key
                data += len(key)
            else:
                _LEAF_ELEM.pack_into(buf, eoff, eflags, data - eoff, len(key), len(value))
                buf[data:data + len(key)] = key
                data += len(key)
                buf[data:data + len(value)] = value
                data += len(value)
        self._out.seek(pgid * self.ps)
        self._out.write(buf)
        return pgid

    def _tree(self, flags: int, elems: Iterable[tuple[int, bytes, bytes | int]]) -> int:
        """Packs elements into pages of one level, then builds the levels above; returns
        the root page ID."""
        children: list[tuple[int, bytes, bytes | int]] = []
        page: list[tuple[int, bytes, bytes | int]] = []
        used = HDR
        for elem in elems:
            _, key, value = elem
            size = ELEM + len(key) + (len(value) if isinstance(value, bytes) else 0)
            if page and used + size > self.ps:
                children.append((-1, page[0][1], self._emit(flags, page)))
                page, used = [], HDR
            page.append(elem)
            used += size
        if page or not children:
            children.append((-1, page[0][1] if page else b"", self._emit(flags, page)))
        if len(children) == 1:
            root = children[0][2]
            assert isinstance(root, int)
            return root
        return self._tree(BRANCH_PAGE, children)

    def bucket(self, name: bytes, items: Iterable[tuple[bytes, bytes]]) -> None:
        if self._roots and name <= self._roots[-1][0]:
            raise ValueError("buckets must be added in name order")
        root = self._tree(LEAF_PAGE, ((0, k, v) for k, v in items))
        self._roots.append((name, root))

    def finish(self) -> int:
        """Writes the root bucket, freelist and meta pages; returns the file size."""
        root = self._tree(LEAF_PAGE, ((BUCKET_LEAF, name, _BUCKET_HDR.pack(r, 0))
                                      for name, r in self._roots))
        hwm = self._next
        free = bytearray(self.ps)
        _PAGE_HDR.pack_into(free, 0, 2, FREELIST_PAGE, 0, 0)
        self._out.seek(2 * self.ps)
        self._out.write(free)
        for pid in (0, 1):
            page = bytearray(self.ps)
            _PAGE_HDR.pack_into(page, 0, pid, META_PAGE, 0, 0)
            _META.pack_into(page, HDR, MAGIC, VERSION, self.ps, 0, root, 0, 2, hwm, pid + 1)
            _U64.pack_into(page, HDR + _META.size,
                           fnv64a(bytes(page[HDR:HDR + _META.size])))
            self._out.seek(pid * self.ps)
            self._out.write(page)
        self._out.seek(hwm * self.ps)
        self._out.truncate()
        return hwm * self.ps
