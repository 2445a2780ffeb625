"""Property tests: random request sequences against the LMDB store and the
naive model (tests/mvcc/model.py) must give identical responses, identical
errors, identical history at every revision and identical `kv` contents,
across batch commits and aborts, compactions, environment reopens and
replays of already-applied batches."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from petcd.errors import EtcdError
from petcd.pb.etcdserverpb import rpc_pb2 as pb
from petcd.pb.wire import LazyMessage
from petcd.server import range_encode

from .harness import Member
from .model import Model

LONG = b"x" * 500
KEYS = [
    b"a", b"ab", b"b", b"b\x00", b"c", b"\x00", b"\xff", b"a", b"b", b"c",
    LONG, LONG + b"a", LONG + b"b" * 40, LONG + b"a\x00",  # one 500-byte prefix group
    b"x" * 499 + b"y" + b"q" * 30,  # another long key
]
ENDS = [b"", b"", b"\x00", b"b", b"c", b"\xff", LONG + b"b", b"x" * 501, LONG + b"a\x00",
        b"\xff\xff", b"a"]
VALUES = [b"", b"v1", b"v2", b"zz"]

keys = st.sampled_from(KEYS)
ends = st.sampled_from(ENDS)
revs = st.integers(min_value=-1, max_value=14)
small = st.integers(min_value=0, max_value=12)
rarely = st.sampled_from([False] * 12 + [True])


@st.composite
def puts(draw: Any) -> pb.PutRequest:
    ignore_value = draw(rarely)
    return pb.PutRequest(
        key=draw(keys),
        value=b"" if ignore_value else draw(st.sampled_from(VALUES)),
        prev_kv=draw(st.booleans()),
        ignore_value=ignore_value,
        ignore_lease=draw(rarely),
        lease=7 if draw(rarely) else 0,
    )


def deletes() -> st.SearchStrategy[pb.DeleteRangeRequest]:
    return st.builds(pb.DeleteRangeRequest, key=keys, range_end=ends, prev_kv=st.booleans())


def ranges() -> st.SearchStrategy[pb.RangeRequest]:
    return st.builds(
        pb.RangeRequest,
        key=keys,
        range_end=ends,
        limit=st.sampled_from([0, 0, 1, 2, 3, -1]),
        revision=st.sampled_from([0, 0, 0]) | revs,
        sort_order=st.sampled_from([0, 0, 1, 2]),
        sort_target=st.sampled_from([0, 0, 1, 2, 3, 4]),
        keys_only=st.booleans(),
        count_only=st.booleans(),
        min_mod_revision=st.sampled_from([0, 0, 0]) | small,
        max_mod_revision=st.sampled_from([0, 0, 0]) | small,
        min_create_revision=st.sampled_from([0, 0, 0]) | small,
        max_create_revision=st.sampled_from([0, 0, 0]) | small,
    )


@st.composite
def compares(draw: Any) -> pb.Compare:
    target = draw(st.sampled_from([0, 1, 2, 3, 4]))
    c = pb.Compare(
        key=draw(keys),
        range_end=draw(st.sampled_from([b"", b"", b""]) | ends),
        target=target,  # type: ignore[arg-type]
        result=draw(st.sampled_from([0, 1, 2, 3])),  # type: ignore[arg-type]
    )
    if target == pb.Compare.VALUE:
        c.value = draw(st.sampled_from(VALUES))
    elif target == pb.Compare.VERSION:
        c.version = draw(small)
    elif target == pb.Compare.CREATE:
        c.create_revision = draw(small)
    elif target == pb.Compare.MOD:
        c.mod_revision = draw(small)
    else:
        c.lease = draw(st.sampled_from([0, 7]))
    return c


def txns(depth: int = 2) -> st.SearchStrategy[pb.TxnRequest]:
    leaf = (
        st.builds(pb.RequestOp, request_put=puts())
        | st.builds(pb.RequestOp, request_range=ranges())
        | st.builds(pb.RequestOp, request_delete_range=deletes())
    )
    if depth > 0:
        leaf = leaf | st.builds(pb.RequestOp, request_txn=st.deferred(lambda: txns(depth - 1)))
    ops = st.lists(leaf, max_size=3)
    return st.builds(
        pb.TxnRequest,
        compare=st.lists(compares(), max_size=2),
        success=ops,
        failure=ops,
    )


requests = st.one_of(
    puts(), puts(), puts(), deletes(), ranges(), txns(),
    st.builds(
        pb.CompactionRequest,
        revision=st.integers(min_value=0, max_value=3) | revs,
        physical=st.booleans(),
    ),
)
# A compaction whose physical part runs a key at a time, in later batches.
slow_compactions = st.tuples(st.just("compact_slowly"), st.integers(min_value=0, max_value=4))
actions = st.one_of(
    requests, requests, requests, requests, slow_compactions,
    st.sampled_from(["commit", "commit", "reopen", "abort", "replay", "step"]),
)


def _rel(value: int, cur: int) -> int:
    """Drawn revisions are offsets back from the revision after the current
    one, so that they hit the interesting region however long the script."""
    return value if value <= 0 else cur + 1 - value


def remap(req: Any, cur: int) -> None:
    if isinstance(req, pb.CompactionRequest):
        req.revision = _rel(req.revision + 1, cur) if req.revision >= 0 else req.revision
    elif isinstance(req, pb.RangeRequest):
        for name in ("revision", "min_mod_revision", "max_mod_revision",
                     "min_create_revision", "max_create_revision"):
            setattr(req, name, max(_rel(getattr(req, name), cur), 0))
    elif isinstance(req, pb.TxnRequest):
        for c in req.compare:
            if c.target in (pb.Compare.CREATE, pb.Compare.MOD):
                field = "create_revision" if c.target == pb.Compare.CREATE else "mod_revision"
                setattr(c, field, max(_rel(getattr(c, field), cur), 0))
        for op in list(req.success) + list(req.failure):
            kind = op.WhichOneof("request")
            if kind == "request_range":
                remap(op.request_range, cur)
            elif kind == "request_txn":
                remap(op.request_txn, cur)


def run_model(model: Model, req: Any) -> Any:
    try:
        if isinstance(req, pb.PutRequest):
            return model.put(req)
        if isinstance(req, pb.DeleteRangeRequest):
            return model.delete_range(req)
        if isinstance(req, pb.TxnRequest):
            return model.txn(req)
        if isinstance(req, pb.CompactionRequest):
            return model.compact_to(req)
        return model.range(req)
    except EtcdError as err:
        return err


def check_history(m: Member, model: Model) -> None:
    assert m.store.current_revision == model.rev
    assert m.store.compact_revision == model.compact
    for rev in range(max(model.compact, 1), model.rev + 1):
        for key, end in [(b"\x00", b"\x00"), (b"b", b"x" * 501), (LONG + b"a", b"")]:
            for keys_only in (False, True):
                req = pb.RangeRequest(key=key, range_end=end, revision=rev,
                                      keys_only=keys_only)
                want = model.range(req)
                assert m.kv.range(req) == want
                check_range_bytes(m, req, want)
    # Pages and counts: at the head revision (where the count past a page is fast).
    for key, end in [(b"\x00", b"\x00"), (b"b", b"x" * 501), (LONG + b"a", b""), (b"a", b"c")]:
        for limit, count_only in ((1, False), (2, False), (0, True)):
            req = pb.RangeRequest(key=key, range_end=end, limit=limit, count_only=count_only,
                                  keys_only=limit == 2)
            check_range_bytes(m, req, model.range(req))
    one = pb.RangeRequest(key=b"b")
    check_range_bytes(m, one, model.range(one))
    # One key (its own fast path) at every revision, compacted and future ones too.
    for rev in range(model.compact - 1, model.rev + 2):
        for key in (b"b", LONG + b"a", b"nope"):
            for count_only, keys_only in ((False, False), (True, False), (False, True)):
                req = pb.RangeRequest(key=key, revision=rev, count_only=count_only, limit=1,
                                      keys_only=keys_only)
                want = run_model(model, req)
                if isinstance(want, EtcdError):
                    with pytest.raises(EtcdError) as e:
                        m.kv.range_bytes(req, b"")
                    assert e.value.kind is want.kind, req
                else:
                    check_range_bytes(m, req, want)
    start = max(model.compact + 1, 0)
    with m.store.read() as r:
        got = [(e.revision, e.type, e.key, e.kv) for e in r.events(start, b"\x00", b"")]
    assert got == model.events(start)
    hashes = m.store.hash_kv()
    if not m.store.physically_compacted:
        # Finish the compaction under way: HashKV must not notice.
        with m.backend.begin_write() as batch:
            assert m.store.compact_step(batch, None)
        assert m.store.physically_compacted
        assert m.store.hash_kv() == hashes
    assert m.kv_records() == model.records()


def check_range_bytes(m: Member, req: pb.RangeRequest, want: pb.RangeResponse) -> None:
    """The server's encoded-from-the-store range answers what the message path does,
    in one buffer and streamed (pieces of a record or two, the stream past one)."""
    out = m.kv.range_bytes(req, b"")
    assert isinstance(out, bytearray)
    assert pb.RangeResponse.FromString(bytes(out)) == want, req
    with streamed(1, 1):
        out = m.kv.range_bytes(req, b"")
    assert out is not None
    whole = out.read_all() if isinstance(out, LazyMessage) else out
    assert pb.RangeResponse.FromString(bytes(whole)) == want, req


@contextlib.contextmanager
def streamed(at: int, chunk: int) -> Iterator[None]:
    """Ranges stream past `at` bytes of records, in pieces of `chunk` bytes."""
    saved = range_encode.STREAM_AT, range_encode.CHUNK
    range_encode.STREAM_AT, range_encode.CHUNK = at, chunk
    try:
        yield
    finally:
        range_encode.STREAM_AT, range_encode.CHUNK = saved


def check_same(got: Any, want: Any, req: Any) -> None:
    if isinstance(want, EtcdError):
        assert got.kind is want.kind, (req, got)
    else:
        assert got == want, (req, got, want)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(actions, min_size=25, max_size=60))
def test_store_matches_model(script: list[Any]) -> None:
    run_script(script)


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(actions, min_size=25, max_size=60))
def test_store_matches_model_with_entries_moved_to_the_history(script: list[Any]) -> None:
    """As above with a key's index entries moved to the history database from its third
    on (INLINE_MAX 2, INLINE_KEEP 1): reads at every revision, compaction, deletions and
    reopening go through both."""
    from unittest import mock

    from petcd.mvcc import kvstore, write

    with mock.patch.object(write, "INLINE_MAX", 2), mock.patch.object(write, "INLINE_KEEP", 1), \
            mock.patch.object(kvstore, "INLINE_MAX", 2):
        run_script(script)


# 1500 scripts of 60-150 steps: ~6 min of CPU (the short run's 150 of 25-60: ~15 s),
# more in wall time on 2 shared cores; pytest-timeout's default 300 s is too short.
@pytest.mark.slow
@pytest.mark.timeout(3600)
@settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(actions, min_size=60, max_size=150))
def test_store_matches_model_long(script: list[Any]) -> None:
    run_script(script)


def run_script(script: list[Any]) -> None:
    tmp = tempfile.mkdtemp(prefix="petcd-mvcc-prop-")
    m = Member(tmp)
    try:
        model = Model()
        committed = model.clone()
        index = 0
        batches: list[list[tuple[int, Any]]] = []
        batch = m.backend.begin_write()
        entries: list[tuple[int, Any]] = []

        def commit() -> None:
            nonlocal batch, entries, committed
            if entries:
                batch.set_consistent_index(entries[-1][0], 1)
                batches.append(entries)
            batch.commit()
            committed = model.clone()
            check_history(m, model)
            entries = []

        for action in script:
            if action == "commit":
                commit()
            elif action == "reopen":
                commit()
                m.reopen()
                assert m.backend.consistent_index() == (index, 1 if index else 0)
                check_history(m, model)
            elif action == "abort":
                batch.abort()
                index -= len(entries)
                entries = []
                model = committed.clone()
                check_history(m, model)
            elif action == "replay":
                if batches:
                    commit()
                    before = m.kv_records()
                    assert m.apply(batches[-1]) == []
                    assert m.kv_records() == before
                    check_history(m, model)
            elif action == "step":
                m.store.compact_step(batch, 2)
            elif isinstance(action, tuple):
                rev = model.rev - action[1]
                try:
                    m.store.compact(batch, rev, budget=1)
                    got: Any = None
                except EtcdError as err:
                    got = err
                want = run_model(model, pb.CompactionRequest(revision=rev))
                assert got.kind is want.kind if isinstance(want, EtcdError) else got is None
            else:
                if m.backend.batch is None:
                    batch = m.backend.begin_write()
                remap(action, model.rev)
                if isinstance(action, pb.RangeRequest):
                    # Reads inside the batch see its writes.
                    try:
                        got = m.kv.range(action, batch)
                    except EtcdError as err:
                        got = err
                    check_same(got, run_model(model, action), action)
                    continue
                index += 1
                entries.append((index, action))
                try:
                    got = m.dispatch(batch, action)
                except EtcdError as err:
                    got = err
                check_same(got, run_model(model, action), action)
            if m.backend.batch is None:
                batch = m.backend.begin_write()
        commit()
    finally:
        m.close()
        shutil.rmtree(tmp, ignore_errors=True)
