"""lock and elect over the Lock and Election gRPC services (etcd serves them too), with
a session lease kept alive by a thread as clientv3's concurrency.Session does. SIGINT
or SIGTERM unlocks / resigns and exits 0, as etcdctl does."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from typing import Any

import grpc

from petcd.cli.ctl import kv
from petcd.cli.ctl.client import Client
from petcd.cli.ctl.cmd import Args, bad_args
from petcd.cli.ctl.common import EXIT_ERROR, CtlError
from petcd.cli.ctl.output import go_quote
from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.pb.v3electionpb import v3election_pb2 as epb
from petcd.pb.v3lockpb import v3lock_pb2 as lpb


class Session:
    """A lease renewed every TTL/3 from a thread; `done` is set once it is lost."""

    def __init__(self, client: Client, ttl: int) -> None:
        self.client = client
        self.lease = client.call("Lease", "LeaseGrant", rpc.LeaseGrantRequest(TTL=ttl)).ID
        self.done = threading.Event()
        self._stop = threading.Event()
        self._period = max(ttl / 3, 0.5)
        threading.Thread(target=self._keep, daemon=True).start()

    def _requests(self) -> Iterator[rpc.LeaseKeepAliveRequest]:
        while not self._stop.is_set():
            yield rpc.LeaseKeepAliveRequest(ID=self.lease)
            self._stop.wait(self._period)

    def _keep(self) -> None:
        stub = self.client.stub("Lease")
        while not self._stop.is_set():
            try:
                for r in stub.LeaseKeepAlive(self._requests(),
                                             metadata=self.client.metadata or None):
                    if r.TTL <= 0:
                        self.done.set()
                        return
            except grpc.RpcError:
                if self._stop.wait(0.5):
                    return

    def close(self) -> None:
        self._stop.set()


def _signals() -> threading.Event:
    stop = threading.Event()
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, lambda *_: stop.set())
    return stop


def _wait(client: Client, future: Any, stop: threading.Event) -> Any:
    """The result of a call; cancelled (and an error raised) on a signal."""
    while not future.done():
        if stop.wait(0.05):
            future.cancel()
            raise CtlError("context canceled", EXIT_ERROR)
    try:
        return future.result()
    except grpc.RpcError as e:
        raise client.failure(e, warn=False) from None


def _until(stop: threading.Event, session: Session) -> bool:
    """True on a signal, False when the session ended."""
    while not stop.wait(0.1):
        if session.done.is_set():
            return False
    return True


def run_lock(a: Args) -> None:
    if not a.args:
        raise bad_args("lock takes a lock name argument and an optional command to execute")
    name, cmd = a.args[0], a.args[1:]
    stop = _signals()
    c = Client(a)
    s = Session(c, a.ttl)
    resp = _wait(c, c.stub("Lock").Lock.future(
        lpb.LockRequest(name=name.encode(), lease=s.lease), metadata=c.metadata or None),
        stop)
    if cmd:
        env = {"ETCD_LOCK_KEY": resp.key.decode("utf-8", "surrogateescape"),
               "ETCD_LOCK_REV": str(resp.header.revision), **os.environ}
        try:
            rc = subprocess.run(cmd, env=env, check=False).returncode
            err = f"exit status {rc}" if rc else ""
        except OSError as e:
            err = f"exec: {go_quote(cmd[0])}: {e.strerror}"
        c.call("Lock", "Unlock", lpb.UnlockRequest(key=resp.key))
        if err:
            raise CtlError(err, EXIT_ERROR)
        return
    got = c.call("KV", "Range", rpc.RangeRequest(key=resp.key))
    if not got.kvs:
        raise CtlError("lock lost on init", EXIT_ERROR)
    kv.emit(kv.show_get(a.write_out, got, a.hex), a.write_out)
    _flush()
    if _until(stop, s):
        c.call("Lock", "Unlock", lpb.UnlockRequest(key=resp.key), timeout=None)
        return
    raise CtlError("session expired", EXIT_ERROR)


def _flush() -> None:
    import sys
    sys.stdout.flush()


def run_elect(a: Args) -> None:
    if len(a.args) not in (1, 2):
        raise bad_args("elect takes one election name argument and an optional proposal "
                       "argument")
    if len(a.args) == 1 and not a.listen:
        raise bad_args("no proposal argument but -l not set")
    if len(a.args) == 2 and a.listen:
        raise bad_args("proposal given but -l is set")
    stop = _signals()
    c = Client(a)
    name = a.args[0].encode()
    if a.listen:
        _observe(a, c, name, stop)
        return
    s = Session(c, 60)
    resp = _wait(c, c.stub("Election").Campaign.future(epb.CampaignRequest(
        name=name, lease=s.lease, value=a.args[1].encode()), metadata=c.metadata or None),
        stop)
    got = c.call("KV", "Range", rpc.RangeRequest(key=resp.leader.key))
    kv.emit(kv.show_get(a.write_out, got, a.hex), a.write_out)
    _flush()
    if not _until(stop, s):
        raise CtlError("elect: session expired", EXIT_ERROR)
    c.call("Election", "Resign", epb.ResignRequest(leader=resp.leader), timeout=None)


def _observe(a: Args, c: Client, name: bytes, stop: threading.Event) -> None:
    stream = c.stub("Election").Observe(epb.LeaderRequest(name=name),
                                        metadata=c.metadata or None)
    lost: list[BaseException] = []

    def read() -> None:
        try:
            for r in stream:
                got = rpc.RangeResponse(header=r.header, kvs=[r.kv], count=1)
                kv.emit(kv.show_get(a.write_out, got, a.hex), a.write_out)
                _flush()
        except grpc.RpcError as e:
            lost.append(e)
        stop.set()

    threading.Thread(target=read, daemon=True).start()
    stop.wait()
    while not stop.wait(0.1):
        pass
    if lost and lost[0].code() != grpc.StatusCode.CANCELLED:  # type: ignore[attr-defined]
        raise CtlError("elect: observer lost", EXIT_ERROR)
    stream.cancel()
