"""petcd.compat.etcd3: code written for python-etcd3 runs against petcd and etcd 3.4
after changing its import."""

from __future__ import annotations

import io
import threading
import time
from typing import Any

import pytest

import petcd.compat.etcd3 as etcd3
from petcd.compat.etcd3 import events, exceptions
from petcd.testing import MemberProcess, free_port


@pytest.fixture
def etcd(backend: MemberProcess) -> Any:
    host, port = backend.address.split(":")
    c = etcd3.client(host=host, port=int(port), timeout=20)
    yield c
    c.close()


def test_kv(etcd: Any, pfx: str) -> None:
    assert etcd.get(pfx + "missing") == (None, None)
    etcd.put(pfx + "a", "1")
    value, meta = etcd.get(pfx + "a")
    assert value == b"1" and meta.key == (pfx + "a").encode() and meta.version == 1
    assert meta.response_header.revision >= meta.mod_revision
    etcd.put(pfx + "b", b"2")
    etcd.put(pfx + "c", "3")
    assert [v for v, _ in etcd.get_prefix(pfx)] == [b"1", b"2", b"3"]
    assert [v for v, _ in etcd.get_prefix(pfx, sort_order="descend")] == [b"3", b"2", b"1"]
    assert [m.key for _, m in etcd.get_range(pfx + "a", pfx + "c")] == \
        [(pfx + "a").encode(), (pfx + "b").encode()]
    assert any(v == b"3" for v, _ in etcd.get_all())
    assert etcd.put(pfx + "a", "x", prev_kv=True).prev_kv.value == b"1"
    assert etcd.put_if_not_exists(pfx + "new", "n") is True
    assert etcd.put_if_not_exists(pfx + "new", "n") is False
    assert etcd.replace(pfx + "new", "n", "m") is True
    assert etcd.replace(pfx + "new", "n", "o") is False
    assert etcd.delete(pfx + "new") is True and etcd.delete(pfx + "new") is False
    assert etcd.delete(pfx + "a", prev_kv=True, return_response=True).prev_kvs[0].value == b"x"
    assert etcd.delete_prefix(pfx).deleted == 2
    with pytest.raises(ValueError):
        etcd.get_prefix(pfx, sort_order="sideways")


def test_transaction(etcd: Any, pfx: str) -> None:
    k = pfx + "t"
    etcd.put(k, "doot")
    etcd.put(k + "2", "other")
    t = etcd.transactions
    ok, responses = etcd.transaction(
        compare=[t.value(k) == "doot", t.version(k) > 0, t.create(k) > "0", t.mod(k) != 0],
        success=[t.put(k, "success"), t.get(k), t.txn([t.value(k + "2") == "other"],
                                                       [t.delete(k + "2")], [])],
        failure=[t.put(k, "failure")])
    assert ok is True
    assert responses[1][0][0] == b"success"
    assert responses[2].response_txn.succeeded
    assert etcd.get(k + "2") == (None, None) and etcd.get(k)[0] == b"success"


def test_leases_and_locks(etcd: Any, pfx: str) -> None:
    lease = etcd.lease(30)
    etcd.put(pfx + "l", "v", lease=lease)
    assert lease.granted_ttl == 30 and 0 < lease.remaining_ttl <= 30
    assert lease.keys == [(pfx + "l").encode()]
    assert lease.refresh()[0].TTL == 30
    lease.revoke()
    assert etcd.get(pfx + "l") == (None, None)

    lock = etcd.lock(pfx + "lk", ttl=10)
    assert lock.acquire(timeout=5) and lock.is_acquired()
    other = etcd.lock(pfx + "lk", ttl=10)
    assert other.acquire(timeout=0.3) is False
    threading.Timer(0.3, lock.release).start()
    assert other.acquire(timeout=20) is True
    with pytest.raises(ValueError):
        etcd.lock(pfx + "unused").refresh()
    other.refresh()
    assert other.release() is True


def test_watch(etcd: Any, pfx: str) -> None:
    events_iter, cancel = etcd.watch_prefix(pfx)
    etcd.put(pfx + "1", "a")
    etcd.delete(pfx + "1")
    got = []
    for ev in events_iter:
        got.append(ev)
        if len(got) == 2:
            cancel()
    assert isinstance(got[0], events.PutEvent) and got[0].value == b"a"
    assert isinstance(got[1], events.DeleteEvent) and got[1].key == (pfx + "1").encode()

    seen: list[Any] = []
    wid = etcd.add_watch_callback(pfx + "cb", seen.append)
    etcd.put(pfx + "cb", "x")
    deadline = time.monotonic() + 20
    while not seen and time.monotonic() < deadline:
        time.sleep(0.02)
    etcd.cancel_watch(wid)
    assert seen[0].events[0].value == b"x"

    threading.Timer(0.3, lambda: etcd.put(pfx + "once", "o")).start()
    assert etcd.watch_once(pfx + "once", timeout=20).value == b"o"
    with pytest.raises(exceptions.WatchTimedOut):
        etcd.watch_prefix_once(pfx + "never", timeout=0.2)

    rev = etcd.put(pfx + "c", "1").header.revision
    etcd.put(pfx + "c", "2")
    etcd.compact(rev + 1)
    it, cancel = etcd.watch(pfx + "c", start_revision=rev)
    with pytest.raises(exceptions.RevisionCompactedError) as e:
        next(it)
    assert e.value.compacted_revision == rev + 1


def test_cluster_and_maintenance(etcd: Any, backend: MemberProcess) -> None:
    (member,) = list(etcd.members)
    assert member.client_urls == [backend.endpoint]
    st = etcd.status()
    assert st.leader.id == member.id and st.db_size > 0
    assert isinstance(etcd.hash(), int)
    assert list(etcd.list_alarms()) == []
    assert etcd.disarm_alarm() == []
    # (a learner: a second voter that never starts would cost a 1-member cluster its
    # quorum; python-etcd3's add_member cannot add learners)
    learner = etcd.petcd.member_add([f"http://127.0.0.1:{free_port()}"], learner=True).member
    (new,) = [m for m in etcd.members if m.id == learner.id]
    new.remove()
    assert len(list(etcd.members)) == 1
    buf = io.BytesIO()
    etcd.snapshot(buf)
    assert buf.getvalue()


def test_errors() -> None:
    c = etcd3.client(port=free_port(), timeout=1)
    with pytest.raises((exceptions.ConnectionFailedError, exceptions.ConnectionTimeoutError)):
        c.get("k")
    c.close()
