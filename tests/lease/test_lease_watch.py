"""Revoking or expiring a lease reaches watchers as DELETE events, all keys of the lease
at one revision (needs the Watch service; skipped where it is not served)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

import grpc
import pytest

from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.pb.etcdserverpb import rpc_pb2_grpc as rpc_grpc
from petcd.pb.mvccpb import kv_pb2
from petcd.testing import MemberProcess

from .clients import Client


class Watcher:
    """One Watch stream on a prefix; events arrive in a queue."""

    def __init__(self, member: MemberProcess, prefix: bytes) -> None:
        self.channel = grpc.insecure_channel(member.address)
        self._requests: queue.Queue[rpc.WatchRequest | None] = queue.Queue()
        end = prefix[:-1] + bytes([prefix[-1] + 1])
        self._requests.put(rpc.WatchRequest(create_request=rpc.WatchCreateRequest(
            key=prefix, range_end=end, prev_kv=True)))
        self.responses: queue.Queue[rpc.WatchResponse | Exception] = queue.Queue()
        self._stream = rpc_grpc.WatchStub(self.channel).Watch(iter(self._requests.get, None))
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for resp in self._stream:
                self.responses.put(resp)
        except Exception as e:  # the stream ended: pass it on
            self.responses.put(e)

    def next(self, timeout: float = 10.0) -> rpc.WatchResponse:
        item = self.responses.get(timeout=timeout)
        if isinstance(item, Exception):
            raise item
        return item

    def events(self, n: int) -> list[kv_pb2.Event]:
        out: list[kv_pb2.Event] = []
        while len(out) < n:
            out.extend(self.next().events)
        return out

    def close(self) -> None:
        self._requests.put(None)
        self._stream.cancel()
        self.channel.close()


@pytest.fixture
def watcher(petcd: MemberProcess) -> Iterator[Watcher]:
    w = Watcher(petcd, b"/w/")
    try:
        created = w.next()
    except grpc.RpcError as e:
        w.close()
        if e.code() == grpc.StatusCode.UNIMPLEMENTED:
            pytest.skip("this build serves no Watch")
        raise
    assert created.created
    yield w
    w.close()


@pytest.mark.parametrize("how", ["revoke", "expire"])
def test_lease_end_deletes_reach_watchers(petcd: MemberProcess, watcher: Watcher,
                                          how: str) -> None:
    c = Client(petcd)
    try:
        lease_id = c.grant(2).ID
        keys = [b"/w/%s/%d" % (how.encode(), i) for i in (3, 1, 2)]
        for k in keys:
            c.put(k, lease_id)
        puts = watcher.events(3)
        assert [e.type for e in puts] == [kv_pb2.Event.PUT] * 3
        if how == "revoke":
            c.lease.LeaseRevoke(rpc.LeaseRevokeRequest(ID=lease_id), timeout=10)
        deletes = watcher.events(3)
        assert [(e.type, e.kv.key) for e in deletes] == [
            (kv_pb2.Event.DELETE, k) for k in sorted(keys)]
        revs = {e.kv.mod_revision for e in deletes}
        assert revs == {puts[-1].kv.mod_revision + 1}  # one revision for all of them
        assert all(e.prev_kv.lease == lease_id for e in deletes)
    finally:
        c.close()
