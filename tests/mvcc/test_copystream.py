"""CopyStream: the backend copied into a stream as it is read (a snapshot for a follower)."""

from __future__ import annotations

import time
from pathlib import Path

from petcd.mvcc.copystream import CopyStream
from petcd.pb.etcdserverpb import rpc_pb2 as pb

from .harness import Member


def _load(m: Member, n: int, size: int) -> None:
    m.apply([(i + 1, pb.PutRequest(key=b"k%05d" % i, value=b"%05d" % i * (size // 5)))
             for i in range(n)])
    m.backend.commit()


def test_stream_is_a_whole_backend_file(tmp_path: Path) -> None:
    m = Member(str(tmp_path / "a"))
    try:
        _load(m, 300, 1000)
        target = tmp_path / "copy" / "member" / "snap" / "db"
        target.parent.mkdir(parents=True)
        stream = CopyStream(m.backend)
        with open(target, "wb") as f:
            while chunk := stream.read(100_000):
                f.write(chunk)
        stream.close()
        assert stream.copied == target.stat().st_size > 300_000
        copy = Member(str(tmp_path / "copy"))
        try:
            assert copy.backend.hash() == m.backend.hash()
            assert copy.backend.consistent_index() == m.backend.consistent_index()
            assert m.backend.consistent_index()[0] == 300
        finally:
            copy.close()
    finally:
        m.close()


def test_closing_early_ends_the_copy_and_its_read(tmp_path: Path) -> None:
    m = Member(str(tmp_path / "a"))
    try:
        _load(m, 300, 10_000)  # (more than the socket buffers hold)
        stream = CopyStream(m.backend)
        assert stream.read(1000)
        deadline = time.monotonic() + 30
        while m.backend.readers.active == 0:  # (the copy holds a read of the file)
            assert time.monotonic() < deadline
            time.sleep(0.01)
        stream.close()
        while m.backend.readers.active:  # its writes fail: it lets go
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert stream.error is not None
    finally:
        m.close()
