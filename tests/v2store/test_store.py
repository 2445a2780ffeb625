"""The v2 store alone (no processes): semantics the differential tests cannot pin down
cheaply (expiry order and determinism, persistence records, watcher bounds)."""

from __future__ import annotations

import pytest

from petcd.v2store import Store, V2Error, codec
from petcd.v2store import errors as E
from petcd.v2store.node import SECOND, clean, rfc3339, ttl_of
from petcd.v2store.watch import WATCHER_QUEUE

NOW = 1_800_000_000 * SECOND


def store() -> Store:
    return Store(clock=lambda: NOW)


def test_go_formats() -> None:
    assert clean("/1//a/./b/../c/") == "/1/a/c"
    assert clean("") == "/"
    assert rfc3339(NOW + 295_856_600) == "2027-01-15T08:00:00.2958566Z"
    assert rfc3339(NOW) == "2027-01-15T08:00:00Z"
    assert [ttl_of(NOW + d, NOW) for d in (SECOND, SECOND + 1, 1, 0, -1, -SECOND - 1)] == \
        [1, 2, 1, 0, 0, -1]


def test_index_moves_once_per_change_and_not_on_failure() -> None:
    s = store()
    s.set("/1/a", False, "x", 0)
    with pytest.raises(V2Error) as e:
        s.create("/1/a", False, "y", False, 0)
    assert (e.value.code, e.value.index, e.value.status) == (E.NODE_EXIST, 1, 412)
    s.create("/1/d/e/f", False, "v", False, 0)  # makes /1/d and /1/d/e at the same index
    assert s.index == 2
    assert s.get("/1/d").node["nodes"][0]["createdIndex"] == 2
    with pytest.raises(V2Error):
        s.set("/1/a/b", False, "x", 0)
    with pytest.raises(V2Error):
        s.create("/1/a/b/c", False, "x", False, 0)  # no directory is left behind
    assert s.index == 2
    # (etcd counts a create through a key as a failed set too)
    assert (s.stats["setsFail"], s.stats["createFail"]) == (2, 2)


def test_expiry_is_ordered_and_identical_after_reload() -> None:
    s = store()
    for name, secs in (("b", 2), ("a", 2), ("c", 1)):
        s.set(f"/1/{name}", False, name, NOW + secs * SECOND)
    s.set("/1/dir", True, "", NOW + SECOND)
    s.set("/1/dir/in", False, "x", 0)
    s.update("/1/b", "b2", 0)  # no ttl given: permanent again
    copy = Store(clock=lambda: NOW)
    codec.load(copy, codec.dump(s))
    for st in (s, copy):
        done = st.delete_expired(NOW + 5 * SECOND)
        assert [(e.action, e.key) for e in done] == [
            ("expire", "/1/c"), ("expire", "/1/dir"), ("expire", "/1/a")]
        assert [e.index for e in done] == [7, 8, 9]
        assert not st.has_ttl_keys()
    assert codec.dump(s) == codec.dump(copy)


def test_history_window_and_watchers() -> None:
    s = store()
    for i in range(1005):
        s.set("/1/k", False, str(i), 0)
    with pytest.raises(V2Error) as e:
        s.watch("/1/k", False, False, 5)
    assert (e.value.code, e.value.cause, e.value.index) == (
        E.EVENT_INDEX_CLEARED, "the requested history has been cleared [6/5]", 1005)
    w = s.watch("/1/k", False, False, 6)
    assert w.events[0].index == 6 and w.events[0].etcd_index == 1005
    live = s.watch("/1", True, True, 0)
    for i in range(WATCHER_QUEUE + 1):  # a stream nobody reads is dropped at the bound
        s.set("/1/k", False, str(i), 0)
    assert live.removed and len(live.events) == WATCHER_QUEUE and s.hub.count == 0
    # A removed (disconnected) watcher is gone from the hub at once.
    idle = s.watch("/1/other", False, False, 0)
    assert s.hub.count == 1
    idle.remove()
    assert s.hub.count == 0


def test_records_round_trip_with_history() -> None:
    s = store()
    s.set("/1/a", False, "caf\u00e9", NOW + 10 * SECOND)
    s.create("/1/q", False, "x", True, 0)
    s.delete("/1/a", False, False)
    copy = Store(clock=lambda: NOW)
    codec.load(copy, codec.dump(s))
    assert copy.index == 3
    assert [e.action for e in copy.hub.history.events] == ["set", "create", "delete"]
    assert copy.watch("/1/a", False, False, 1).events[0].node["ttl"] == 10
