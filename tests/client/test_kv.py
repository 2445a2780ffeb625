"""KV, Txn and compaction through Client and AsyncClient, against petcd and etcd 3.4."""

from __future__ import annotations

from typing import Any

import pytest

from petcd.client import (
    CreateRevision,
    Delete,
    Get,
    LeaseId,
    ModRevision,
    Put,
    Txn,
    Value,
    Version,
    prefix_end,
)
from petcd.client.errors import (
    CompactedError,
    DuplicateKeyError,
    EmptyKeyError,
    EtcdError,
    FutureRevisionError,
    KeyNotFoundError,
    LeaseNotFoundError,
)
from petcd.testing import MemberProcess

from .conftest import Connect


def keys(result: Any) -> list[bytes]:
    return [kv.key for kv in result.kvs]


def test_get_put_delete(backend: MemberProcess, connect: Connect, pfx: str) -> None:
    c = connect(backend.address)
    r1 = c.put(pfx + "a", "1")
    assert r1.header.revision > 0 and r1.prev_kv is None
    got = c.get(pfx + "a")
    assert got.value == b"1" and got.count == 1
    kv = got.kvs[0]
    assert (kv.key, kv.version, kv.create_revision, kv.mod_revision) == \
        ((pfx + "a").encode(), 1, r1.header.revision, r1.header.revision)
    r2 = c.put(pfx + "a", b"2", prev_kv=True)
    assert r2.prev_kv is not None and r2.prev_kv.value == b"1"
    assert c.get(pfx + "missing").kvs == [] and c.get(pfx + "missing").value is None
    d = c.delete(pfx + "a", prev_kv=True)
    assert d.deleted == 1 and d.prev_kvs[0].value == b"2"
    assert c.delete(pfx + "a").deleted == 0
    # history stays readable at a revision
    assert c.get(pfx + "a", revision=r1.header.revision).value == b"1"


def test_ranges(backend: MemberProcess, connect: Connect, pfx: str) -> None:
    c = connect(backend.address)
    for i, v in enumerate("cbad"):
        c.put(f"{pfx}k{i}", v)
    c.put(pfx + "l", "x")
    every = [f"{pfx}k{i}".encode() for i in range(4)]
    assert keys(c.get(pfx + "k", prefix=True)) == every
    assert keys(c.get(pfx + "k1", pfx + "k3")) == every[1:3]
    assert keys(c.get(pfx + "k2", from_key=True, limit=3)) == [*every[2:], (pfx + "l").encode()]
    lim = c.get(pfx + "k", prefix=True, limit=2)
    assert keys(lim) == every[:2] and lim.more and lim.count == 4
    by_value = c.get(pfx + "k", prefix=True, sort_target="value", sort_order="descend")
    assert [kv.value for kv in by_value.kvs] == [b"d", b"c", b"b", b"a"]
    assert keys(c.get(pfx + "k", prefix=True, sort_order="descend", limit=1)) == every[3:]
    ko = c.get(pfx + "k", prefix=True, keys_only=True)
    assert keys(ko) == every and all(kv.value == b"" for kv in ko.kvs)
    co = c.get(pfx + "k", prefix=True, count_only=True)
    assert co.kvs == [] and co.count == 4
    assert keys(c.get(pfx + "k", prefix=True, serializable=True)) == every
    revs = [kv.mod_revision for kv in c.get(pfx + "k", prefix=True).kvs]
    assert keys(c.get(pfx + "k", prefix=True, min_mod_revision=revs[2])) == every[2:]
    assert keys(c.get(pfx + "k", prefix=True, max_create_revision=revs[1])) == every[:2]
    assert keys(c.get(pfx + "k", prefix=True, revision=revs[1])) == every[:2]
    assert c.delete(pfx + "k1", pfx + "k3", prev_kv=True).deleted == 2
    assert c.delete(pfx + "k", prefix=True).deleted == 2
    assert prefix_end(b"a\xff") == b"b" and prefix_end(b"") == b"\x00"


def test_put_options(backend: MemberProcess, connect: Connect, pfx: str) -> None:
    c = connect(backend.address)
    lease = c.lease_grant(60).id
    c.put(pfx + "p", "v1", lease=lease)
    assert c.get(pfx + "p").kvs[0].lease == lease
    c.put(pfx + "p", ignore_value=True, lease=0)  # keep the value, drop the lease
    kv = c.get(pfx + "p").kvs[0]
    assert (kv.value, kv.lease) == (b"v1", 0)
    c.put(pfx + "p", "v2", lease=lease)
    c.put(pfx + "p", "v3", ignore_lease=True)
    kv = c.get(pfx + "p").kvs[0]
    assert (kv.value, kv.lease) == (b"v3", lease)
    with pytest.raises(KeyNotFoundError) as e:
        c.put(pfx + "nope", ignore_value=True)
    assert e.value.message == "etcdserver: key not found"
    with pytest.raises(EmptyKeyError):
        c.put("", "x")
    with pytest.raises(LeaseNotFoundError):
        c.put(pfx + "q", "x", lease=123456789)
    c.lease_revoke(lease)


def test_txn(backend: MemberProcess, connect: Connect, pfx: str) -> None:
    c = connect(backend.address)
    k = pfx + "t"
    r = c.txn(Txn().when(Version(k) == 0).then(Put(k, "1"), Get(k)).otherwise(Get(k)))
    assert r.succeeded and r.responses[1].kvs[0].value == b"1"  # type: ignore[union-attr]
    rev = r.header.revision
    r = c.txn(Txn().when(Version(k) == 0).then(Put(k, "x")).otherwise(Get(k)))
    assert not r.succeeded and r.responses[0].kvs[0].value == b"1"  # type: ignore[union-attr]
    conds = [Value(k) == "1", Value(k) != "2", Value(k) < "2", Value(k) > "0",
             CreateRevision(k) == rev, ModRevision(k) > rev - 1, Version(k) < 2,
             LeaseId(k) == 0, Version(pfx, prefix=True) > 0]
    r = c.txn(conds, [Put(k, "2", prev_kv=True), Delete(pfx + "none")], [])
    assert r.succeeded and r.responses[0].prev_kv.value == b"1"  # type: ignore[union-attr]
    assert r.responses[1].deleted == 0  # type: ignore[union-attr]
    nested = Txn().when(Value(k) == "2").then(Put(pfx + "n", "y"))
    r = c.txn(Txn().then(nested, Get(pfx + "n")))
    inner = r.responses[0]
    # a later op of a txn sees the earlier ones' writes
    assert inner.succeeded and r.responses[1].value == b"y"  # type: ignore[union-attr]
    assert c.get(pfx + "n").value == b"y"
    with pytest.raises(DuplicateKeyError):
        c.txn([], [Put(k, "a"), Put(k, "b")])
    with pytest.raises(TypeError):
        Version(k) == "1"  # noqa: B015


def test_compact_and_errors(backend: MemberProcess, connect: Connect, pfx: str) -> None:
    c = connect(backend.address)
    first = c.put(pfx + "c", "1").header.revision
    rev = c.put(pfx + "c", "2").header.revision
    c.compact(rev, physical=True)
    with pytest.raises(CompactedError) as e:
        c.get(pfx + "c", revision=first)
    assert e.value.message == "etcdserver: mvcc: required revision has been compacted"
    with pytest.raises(CompactedError):  # compacting to the same revision again
        c.compact(rev)
    with pytest.raises(FutureRevisionError) as f:
        c.get(pfx + "c", revision=rev + 10_000)
    assert isinstance(f.value, EtcdError) and f.value.code is not None
    assert c.get(pfx + "c", revision=rev).value == b"2"
