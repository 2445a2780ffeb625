"""The server applies batches on its own thread while the event loop thread
reads: every read snapshot must be self-consistent (its revision and
compaction state come from the snapshot, never from memory that the apply
thread updates)."""

from __future__ import annotations

import threading
from pathlib import Path

from petcd.pb.etcdserverpb import rpc_pb2 as pb
from petcd.pb.mvccpb.kv_pb2 import KeyValue

from .harness import Member


def test_reads_consistent_while_applying(tmp_path: Path) -> None:
    m = Member(str(tmp_path))
    stop = threading.Event()
    failure: list[BaseException] = []

    def writer() -> None:
        try:
            index = 0
            for i in range(1, 3000):
                index += 1
                entries = [(index, pb.PutRequest(key=b"a", value=b"%d" % i))]
                index += 1
                entries.append((index, pb.PutRequest(key=b"b", value=b"%d" % i)))
                if i % 3 == 0:
                    index += 1
                    # compact up to the revision this very batch creates
                    rev = m.store.current_revision + 2
                    entries.append((index, pb.CompactionRequest(revision=rev)))
                m.apply(entries)
        except BaseException as err:
            failure.append(err)
        finally:
            stop.set()

    thread = threading.Thread(target=writer)
    thread.start()
    reads = 0
    try:
        while not stop.is_set():
            with m.store.read() as r:
                a, b = r.get(b"a"), r.get(b"b")
                assert (a is None) == (b is None)
                if a is not None and b is not None:
                    assert KeyValue.FromString(a).value == KeyValue.FromString(b).value
                    at_compact = r.compact_rev
                    if at_compact >= 3:
                        # the newest record <= the compaction revision survives
                        assert r.get(b"a", at_compact) is not None
                        assert r.get(b"b", at_compact) is not None
            reads += 1
    finally:
        thread.join()
        m.close()
    assert not failure, failure
    assert reads > 10
