"""petcd's bbolt reader and writer on their own (no server): what the writer lays out, the
reader reads back and checks, and etcdctl (bbolt itself) accepts with the same status."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from petcd.snapshot.bbolt import BoltError, BoltReader, BoltWriter
from petcd.snapshot.etcd import bolt_status, decode_lease, encode_lease
from petcd.testing import Etcdctl, have_etcd

Buckets = dict[bytes, dict[bytes, bytes]]

buckets_strategy = st.dictionaries(
    st.binary(min_size=1, max_size=20),
    st.dictionaries(st.binary(min_size=1, max_size=300),
                    # small values, and large ones (overflow pages) made from a size
                    st.one_of(st.binary(max_size=64),
                              st.integers(1000, 9000).map(lambda n: bytes([n % 256]) * n)),
                    max_size=120),
    max_size=6)


def write(path: Path, buckets: Buckets, page_size: int = 4096) -> int:
    with open(path, "w+b") as f:
        w = BoltWriter(f, page_size)
        for name in sorted(buckets):
            w.bucket(name, sorted(buckets[name].items()))
        return w.finish()


def read(path: Path) -> Buckets:
    with BoltReader(str(path)) as r:
        r.check()
        return {name: dict(r.items(name)) for name in r.buckets()}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(buckets=buckets_strategy, page_size=st.sampled_from([1024, 4096]))
def test_write_then_read(buckets: Buckets, page_size: int, tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    size = write(path, buckets, page_size)
    assert size == path.stat().st_size and size % page_size == 0
    assert read(path) == buckets


def test_many_keys_make_branch_levels(tmp_path: Path) -> None:
    keys = {f"{i:08d}".encode() * 4: bytes([i % 251]) * (i % 50) for i in range(30000)}
    write(tmp_path / "b.db", {b"key": keys, b"meta": {b"x": b"1"}})
    with BoltReader(str(tmp_path / "b.db")) as r:
        r.check()
        root = struct.unpack_from("<Q", r.bucket_header(b"key") or b"")[0]
        assert dict(r.items(b"key")) == keys
    raw = (tmp_path / "b.db").read_bytes()
    flags = struct.unpack_from("<H", raw, root * 4096 + 8)[0]
    assert flags == 0x01  # the bucket's root is a branch page


@pytest.mark.skipif(not have_etcd(), reason="etcdctl 3.4 not installed")
def test_etcdctl_reads_what_we_write(tmp_path: Path) -> None:
    buckets = {b"key": {struct.pack(">Q", i) + b"_" + bytes(8): b"v" * (i % 700)
                        for i in range(1, 5000)},
               b"meta": {b"consistent_index": struct.pack(">Q", 7)},
               b"lease": {}}
    write(tmp_path / "ours.db", buckets)
    theirs = json.loads(Etcdctl("127.0.0.1:1", cwd=str(tmp_path)).ok(
        "snapshot", "status", "ours.db", "-w", "json"))
    st = bolt_status(str(tmp_path / "ours.db"))
    assert theirs == {"hash": st.hash, "revision": st.revision, "totalKey": st.total_key,
                      "totalSize": st.total_size}
    assert st.revision == 4999 and st.total_key == 5000


def test_damage_is_found(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    write(path, {b"a": {b"k%d" % i: b"v" * 100 for i in range(200)}})
    good = path.read_bytes()

    def broken(offset: int) -> str:
        data = bytearray(good)
        data[offset] ^= 0x40
        path.write_bytes(bytes(data))
        with pytest.raises(BoltError) as e, BoltReader(str(path)) as r:
            r.check()
            for name in r.buckets():
                list(r.items(name))
        return str(e.value)

    assert "page 3" in broken(3 * 4096)  # a leaf's header names another page
    # One meta page damaged: the other one is used; both: the file is refused.
    data = bytearray(good)
    data[20] ^= 1
    path.write_bytes(bytes(data))
    assert read(path)
    data[4096 + 20] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(BoltError, match=r"checksum|invalid|version"):
        BoltReader(str(path))
    path.write_bytes(good[:5000])  # cut short
    with pytest.raises(BoltError):
        BoltReader(str(path)).check()


@given(st.integers(-(2**63), 2**63 - 1), st.integers(0, 2**40), st.integers(0, 2**40))
def test_lease_records(lease_id: int, ttl: int, remaining: int) -> None:
    assert decode_lease(encode_lease(lease_id, ttl, remaining)) == (lease_id, ttl, remaining)
