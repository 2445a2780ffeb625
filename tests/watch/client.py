"""A raw Watch stream for tests (petcd's generated messages over a sync gRPC channel):
requests go through a queue, a thread collects every response in arrival order."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.pb.etcdserverpb import rpc_pb2_grpc as rpc_grpc

CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 256 << 20)]


class WatchClient:
    def __init__(self, address: str, channel: grpc.Channel | None = None) -> None:
        self._own_channel = channel is None
        self.channel = channel or grpc.insecure_channel(address, options=CHANNEL_OPTIONS)
        self.kv = rpc_grpc.KVStub(self.channel)
        self._requests: queue.Queue[rpc.WatchRequest | None] = queue.Queue()
        self.responses: list[rpc.WatchResponse] = []
        self.error: grpc.RpcError | None = None
        self._cv = threading.Condition()
        self._call = rpc_grpc.WatchStub(self.channel).Watch(self._feed())
        self._thread = threading.Thread(target=self._collect, daemon=True)
        self._thread.start()

    def _feed(self) -> Iterator[rpc.WatchRequest]:
        while True:
            req = self._requests.get()
            if req is None:
                return  # half-close
            yield req

    def _collect(self) -> None:
        try:
            for resp in self._call:
                with self._cv:
                    self.responses.append(resp)
                    self._cv.notify_all()
        except grpc.RpcError as e:
            with self._cv:
                self.error = e
                self._cv.notify_all()

    # -- requests
    def create(self, key: bytes, range_end: bytes = b"", **kw: Any) -> None:
        self._requests.put(rpc.WatchRequest(create_request=rpc.WatchCreateRequest(
            key=key, range_end=range_end, **kw)))

    def cancel(self, watch_id: int) -> None:
        self._requests.put(rpc.WatchRequest(cancel_request=rpc.WatchCancelRequest(
            watch_id=watch_id)))

    def progress(self) -> None:
        self._requests.put(rpc.WatchRequest(progress_request=rpc.WatchProgressRequest()))

    def send_raw(self, req: rpc.WatchRequest) -> None:
        self._requests.put(req)

    def half_close(self) -> None:
        self._requests.put(None)

    # -- responses
    def wait(self, pred: Callable[[list[rpc.WatchResponse]], bool],
             timeout: float = 20.0) -> list[rpc.WatchResponse]:
        deadline = time.monotonic() + timeout
        with self._cv:
            while not pred(self.responses):
                left = deadline - time.monotonic()
                if left <= 0 or self.error is not None:
                    raise AssertionError(
                        f"watch: condition not met (error {self.error}); got "
                        f"{len(self.responses)} responses, last {self.responses[-3:]}")
                self._cv.wait(min(left, 0.5))
            return list(self.responses)

    def wait_created(self, n: int, timeout: float = 20.0) -> list[rpc.WatchResponse]:
        """Until n created responses in all have arrived; returns them."""
        done = self.wait(lambda rs: sum(r.created for r in rs) >= n, timeout)
        return [r for r in done if r.created]

    def events(self, watch_id: int) -> list[Any]:
        with self._cv:
            return [e for r in self.responses if r.watch_id == watch_id for e in r.events]

    def wait_events(self, watch_id: int, n: int, timeout: float = 20.0) -> list[Any]:
        self.wait(lambda rs: sum(len(r.events) for r in rs if r.watch_id == watch_id) >= n,
                  timeout)
        return self.events(watch_id)

    def settle(self, quiet: float = 0.3, timeout: float = 20.0) -> list[rpc.WatchResponse]:
        """Until no response arrived for `quiet` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            n = len(self.responses)
            time.sleep(quiet)
            if len(self.responses) == n or time.monotonic() > deadline:
                return list(self.responses)

    def close(self) -> None:
        self._call.cancel()
        self._thread.join(5)
        if self._own_channel:
            self.channel.close()

    def __enter__(self) -> WatchClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def normalized(resp: rpc.WatchResponse) -> rpc.WatchResponse:
    """The response without what differs between members by design (IDs, term)."""
    out = rpc.WatchResponse()
    out.CopyFrom(resp)
    h = out.header
    h.cluster_id = h.member_id = h.raft_term = 0
    return out


def by_watch_id(resps: list[rpc.WatchResponse]) -> dict[int, list[rpc.WatchResponse]]:
    """Responses grouped by watch ID, in arrival order (etcd interleaves the watchers of
    one stream in no particular order; each watcher's own order is what counts)."""
    out: dict[int, list[rpc.WatchResponse]] = {}
    for r in resps:
        out.setdefault(r.watch_id, []).append(normalized(r))
    return out
