"""The batched backend (issue 16): applied batches stay in one open LMDB write
transaction until a commit (--backend-batch-limit / -interval), so the applied state
is the committed file plus that transaction. Random interleavings of writes, reads,
compactions, commits and crashes must match the model at every step: reads on the
applying thread see every applied write, other threads read only a snapshot taken
after a commit, and a crash (the uncommitted transaction lost) followed by replaying
the log from the backend's consistent index gives back exactly the applied state. With
`background_commit` the commits of the batch interval run on the backend's thread
(`commit_soon`), left in flight while the script goes on: every step after one must
still see exactly the applied state."""

from __future__ import annotations

import shutil
import tempfile
import threading
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from petcd.errors import EtcdError
from petcd.mvcc import Backend, KVStore
from petcd.mvcc.kvstore import ReadTxn
from petcd.pb.etcdserverpb import rpc_pb2 as pb
from petcd.server.kv_requests import KVRequests

from .harness import Member
from .model import Model
from .test_property import check_same, deletes, puts, ranges, remap, run_model, txns

writes = st.one_of(puts(), puts(), puts(), deletes(), txns())
compactions = st.builds(pb.CompactionRequest, revision=st.integers(min_value=0, max_value=4),
                        physical=st.booleans())
actions = st.one_of(
    st.tuples(st.just("apply"), st.lists(writes, min_size=1, max_size=4)),
    st.tuples(st.just("apply"), st.lists(writes, min_size=1, max_size=4)),
    st.tuples(st.just("compact"), compactions),
    st.tuples(st.just("read"), ranges()),
    st.tuples(st.just("read"), ranges()),
    st.sampled_from(["commit", "crash", "crash", "thread_read", "restart"]),
    st.sampled_from(["commit_soon", "commit_soon", "settle"]),
)


class Batched(Member):
    """The harness member with a batching backend (commits every `limit` operations)."""

    def __init__(self, data_dir: str, limit: int, background: bool = False) -> None:
        self.limit = limit
        self.background = background
        super().__init__(data_dir)

    def open(self) -> None:
        self.backend = Backend(self.path, map_size=1 << 30, sync=False, batch_limit=self.limit,
                               background_commit=self.background)
        self.store = KVStore(self.backend)
        self.kv = KVRequests(self.store, compact_budget=2)  # physical compaction lags too


def check_reads(m: Batched, model: Model) -> None:
    """What every read path sees is the model's state (the applied state)."""
    assert m.store.current_revision == model.rev
    assert m.store.compact_revision == model.compact
    for rev in range(max(model.compact, 1), model.rev + 1):
        req = pb.RangeRequest(key=b"\x00", range_end=b"\x00", revision=rev)
        assert m.kv.range(req) == model.range(req)
    start = max(model.compact + 1, 0)
    with m.store.read() as r:
        got = [(e.revision, e.type, e.key, e.kv) for e in r.events(start, b"\x00", b"")]
    assert got == model.events(start)


def run(script: list[Any], limit: int, background: bool = False) -> None:
    tmp = tempfile.mkdtemp(prefix="petcd-batched-")
    m = Batched(tmp, limit, background)
    done = threading.Semaphore(0)  # released by each background commit's callback
    try:
        model = Model()
        log: list[tuple[int, Any]] = []  # the WAL: every applied entry, in order
        results: list[Any] = []  # what each entry answered when first applied
        for action in script:
            if action == "commit":
                m.backend.commit()
                assert m.backend.uncommitted == 0
                assert m.backend.committed_index() == m.backend.consistent_index()
            elif action == "commit_soon":
                had = m.backend.uncommitted
                in_flight = m.backend.committing
                m.backend.commit_soon(done.release)
                assert m.backend.uncommitted == 0
                if background and had and not in_flight:
                    assert m.backend.committing  # (settled by whatever comes next)
                else:
                    assert not m.backend.committing
            elif action == "settle":
                was = m.backend.committing
                m.backend.settle()
                if was:  # (its callback ran on the backend's thread, once)
                    assert done.acquire(timeout=30)
                assert not m.backend.committing
                assert m.backend.committed_index()[0] <= m.backend.consistent_index()[0]
            elif action in ("crash", "restart"):
                # crash: the open transaction is lost, as with kill -9 or a power loss;
                # restart: a clean stop commits it. Either way replay repairs the rest.
                hash_before = m.store.hash_kv()  # (the applied state; commits nothing)
                m.backend.close(commit=action == "restart")
                m.open()
                ci = m.backend.consistent_index()[0]
                assert ci <= len(log)
                if action == "restart":
                    assert ci == len(log)
                # Replay answers exactly what the first apply answered.
                assert m.apply(log[ci:]) == results[ci:]
                assert m.backend.consistent_index()[0] == len(log)
                check_reads(m, model)
                assert m.store.hash_kv() == hash_before
                assert _hash_kv(m) == hash_before
            elif action == "thread_read":
                # Another thread cannot read around the open transaction: it gets a
                # snapshot taken (after a commit) on the applying thread.
                if m.backend.uncommitted or m.backend.committing:
                    with pytest.raises(RuntimeError):
                        _in_thread(lambda: m.store.read().close())
                view = m.store.read_snapshot()
                assert m.backend.uncommitted == 0
                req = pb.RangeRequest(key=b"\x00", range_end=b"\x00")

                assert _in_thread(lambda v=view, r=req: _read_all(v, r)) == model.range(req)
            elif action[0] == "read":
                req = action[1]
                remap(req, model.rev)
                try:
                    got = m.kv.range(req)
                except EtcdError as err:
                    got = err
                check_same(got, run_model(model, req), req)
            else:
                reqs = action[1] if action[0] == "apply" else [action[1]]
                entries = []
                for req in reqs:
                    remap(req, model.rev)
                    log.append((len(log) + 1, req))
                    entries.append(log[-1])
                got_all = m.apply(entries)
                results.extend(got_all)
                for (_, req), got in zip(entries, got_all, strict=True):
                    check_same(got, run_model(model, req), req)
        check_reads(m, model)
    finally:
        m.close()
        shutil.rmtree(tmp, ignore_errors=True)


def _read_all(view: ReadTxn, req: pb.RangeRequest) -> pb.RangeResponse:
    resp = pb.RangeResponse()
    with view:
        KVRequests._range_into(view, req, resp)
    return resp


def _hash_kv(m: Batched) -> tuple[int, int, int]:
    return m.store.hash_kv(0, m.store.read_snapshot())


def _in_thread(fn: Any) -> Any:
    out: list[Any] = []
    err: list[BaseException] = []

    def body() -> None:
        try:
            out.append(fn())
        except BaseException as e:
            err.append(e)
    t = threading.Thread(target=body)
    t.start()
    t.join()
    if err:
        raise err[0]
    return out[0]


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(actions, min_size=10, max_size=50), st.sampled_from([2, 5, 1000]),
       st.booleans())
def test_batched_backend_matches_model(script: list[Any], limit: int, background: bool) -> None:
    run(script, limit, background)


# 1000 scripts of 40-150 steps: ~160 s of CPU, several times that in wall time on 2
# shared cores; pytest-timeout's default 300 s is for tests that wait, not for this.
@pytest.mark.slow
@pytest.mark.timeout(1800)
@settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(actions, min_size=40, max_size=150), st.sampled_from([2, 5, 1000]),
       st.booleans())
def test_batched_backend_matches_model_long(script: list[Any], limit: int,
                                            background: bool) -> None:
    run(script, limit, background)
