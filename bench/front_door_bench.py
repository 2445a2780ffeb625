"""Python CPU per unary KV call (and LeaseGrant) in the front door alone, one process, no sockets:

    python bench/front_door_bench.py [--calls 20000] [--conns 1x1,16x4] [--src DIR]

The member's real gRPC stack (api/h2 server, grpc_metrics wrappers, QuotaKVService, KV
handlers, validation, ProposalTracker.add) is driven by a fake client: HPACK-encoded
HEADERS and DATA frames fed to each connection's data_received, a fake transport taking
what is written. The node under the handlers is a stub: a proposal is answered from the
tracker's queue once per round (as the apply loop would), a range from a constant. So
the figure is the front door's CPU per call (request bytes in -> response bytes out,
with the event loop's task switches), free of the Raft, WAL and store. With --inline a
proposal is answered inside propose(), as a lone voter whose disk syncs fast answers it
(bench/member_callgrind.py's path). Process CPU time
still moves with a busy machine; the instruction count under callgrind does not:

    FRONT_DOOR_CALLGRIND=1 valgrind --tool=callgrind --instr-atstart=no \
        python bench/front_door_bench.py --kinds put --conns 16x4 --calls 1024 --repeat 1

(instructions per call: callgrind's "Collected" divided by --calls; --src DIR measures
another checkout, e.g. `git archive <commit> src | tar -x -C DIR`).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

# --src DIR: another checkout's petcd (e.g. `git archive <commit> src | tar -x -C DIR`).
sys.path.insert(0, sys.argv[sys.argv.index("--src") + 1] if "--src" in sys.argv
                else str(Path(__file__).resolve().parents[1] / "src"))

import hpack
import uvloop
from prometheus_client import CollectorRegistry

from petcd.api.grpc_metrics import GrpcMetrics
from petcd.api.h2 import GrpcServer, ServerConfig
from petcd.api.h2 import frames as F
from petcd.api.lease import LeaseService
from petcd.api.quota import QuotaKVService
from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.pb.mvccpb import kv_pb2
from petcd.server.raftnode.proposals import ProposalTracker
from petcd.testing.memtransport import MemoryTransport

_PATHS = {"put": "/etcdserverpb.KV/Put", "txn-put": "/etcdserverpb.KV/Txn",
          "range": "/etcdserverpb.KV/Range", "grant": "/etcdserverpb.Lease/LeaseGrant"}


class _Stub:
    """The parts of Node the KV handlers and the quota check touch."""

    def __init__(self, kind: str, inline: bool = False) -> None:
        self.kind = kind
        self.inline = self.answers(1)[0] if inline else None
        self.term = 2
        self.cluster_id = 0x1234
        self.member_id = 0x5678
        self.auth = _Auth()
        self.tokens = None
        self.opts = _Opts()
        self.maintenance = self
        self.kv = self
        self.leases = self
        self._lease_id = 0
        self.tracker = ProposalTracker(self.member_id)
        self.revision = 1
        self._range = rpc.RangeResponse(
            kvs=[kv_pb2.KeyValue(key=b"k", value=b"v" * 256, create_revision=2,
                              mod_revision=2, version=1)], count=1)

    def quota_fits_surely(self, cost: int) -> bool:
        return True

    def quota_available(self, cost: int) -> bool:
        return True

    def new_id(self) -> int:
        self._lease_id += 1
        return self._lease_id

    def propose(self, kind: str, raw: bytes, req: Any, stamp: Any) -> asyncio.Future[Any]:
        fut = self.tracker.add(kind, raw, req, stamp, 0.0)
        if self.inline is not None:  # (answered before propose() returns)
            self.apply_all([self.inline])
        return fut

    def answers(self, n: int) -> list[Any]:
        header = rpc.ResponseHeader(revision=2)
        if self.kind == "grant":  # (what the lease applier answers)
            return [rpc.LeaseGrantResponse(header=header, ID=i + 1, TTL=600)
                    for i in range(n)]
        resp = rpc.PutResponse(header=header) if self.kind == "put" else \
            rpc.TxnResponse(header=header, succeeded=True)
        return [resp] * n  # (serializing does not change it: one will do)

    def apply_all(self, answers: list[Any]) -> None:
        """Answer every queued proposal (what the apply loop does, minus the work)."""
        t = self.tracker
        queue, t.queue = t.queue, []
        for p, a in zip(queue, answers, strict=False):
            t.deadlines.pop(p.id, None)
            p.future.set_result(a)

    def read_barrier(self) -> None:
        return None  # a lone voter: linearizable reads need no wait

    def range_bytes(self, req: Any, header: bytes) -> bytes:
        return self._range.SerializeToString() + header


class _Auth:
    enabled = False
    revision = 1


class _Opts:
    client_cert_auth = False


def _request(kind: str, i: int) -> bytes:
    key = b"bench/%08d" % i
    if kind == "put":
        return rpc.PutRequest(key=key, value=b"v" * 256).SerializeToString()
    if kind == "grant":  # (the server chooses the ID)
        return rpc.LeaseGrantRequest(TTL=600).SerializeToString()
    if kind == "txn-put":
        return rpc.TxnRequest(success=[rpc.RequestOp(request_put=rpc.PutRequest(
            key=key, value=b"v" * 256))]).SerializeToString()
    return rpc.RangeRequest(key=key).SerializeToString()


class _Client:
    """One client connection's bytes, as grpc-python's sends them."""

    def __init__(self, kind: str) -> None:
        self.enc = hpack.Encoder()
        self.sid = 1
        self.path = _PATHS[kind]

    def call(self, message: bytes) -> bytes:
        block = self.enc.encode([
            (":method", "POST"), (":scheme", "http"), (":path", self.path),
            (":authority", "127.0.0.1:2379"), ("te", "trailers"),
            ("content-type", "application/grpc"),
            ("user-agent", "grpc-python/1.60.0 grpc-c/37.0.0 (linux; chttp2)"),
            ("grpc-accept-encoding", "identity,deflate,gzip"),
            # (bench/loadgen.py's 30 s deadline: grpc's encoder rounds what is left and
            # reuses a value it sent, so the block repeats as the server sees it)
            ("grpc-timeout", "29999m")])
        body = b"\x00" + len(message).to_bytes(4, "big") + message
        sid = self.sid
        self.sid += 2
        # grpc-python's frames of a unary call: a connection WINDOW_UPDATE (the bytes
        # of the last response it read), HEADERS, a WINDOW_UPDATE of the new stream,
        # DATA (with END_STREAM). The window updates are half the frames we parse.
        return (F.window_update(0, 35) + F.frame(F.HEADERS, F.END_HEADERS, sid, block)
                + F.window_update(sid, 5) + F.frame(F.DATA, F.END_STREAM, sid, body))


def _callgrind(state: str) -> None:
    """Under callgrind (FRONT_DOOR_CALLGRIND=1, --instr-atstart=no): count the
    instructions of the calls only, not the setup."""
    if os.environ.get("FRONT_DOOR_CALLGRIND"):
        subprocess.run(["callgrind_control", "-i", state, str(os.getpid())], check=True,
                        stdout=subprocess.DEVNULL)


async def run(kind: str, conns: int, streams: int, calls: int, inline: bool = False) -> float:
    stub = _Stub(kind, inline)
    server = GrpcServer(ServerConfig())
    metrics = GrpcMetrics(CollectorRegistry())
    kv = QuotaKVService(stub, max_request_bytes=1536 * 1024, max_txn_ops=128)  # type: ignore[arg-type]
    lease = LeaseService(stub, max_request_bytes=1536 * 1024)  # type: ignore[arg-type]
    server.add_generic_rpc_handlers(metrics.instrument((kv.handler(), lease.handler())))
    protos = []
    for _ in range(conns):
        p: Any = server.protocol_factory()
        t = MemoryTransport()
        p.connection_made(t)
        # (a window as large as it goes, less room for the client's updates: the
        # responses never wait for the client)
        p.data_received(F.PREFACE + F.settings_frame({})
                        + F.window_update(0, F.MAX_WINDOW - F.DEFAULT_WINDOW - (1 << 26)))
        protos.append((p, t, _Client(kind)))
    msgs = [_request(kind, i) for i in range(256)]
    rounds = max(1, calls // (conns * streams))
    # The client's frames and the stub's answers are made before the clock starts.
    payloads = [[b"".join(c.call(msgs[(r * 7 + i * streams + j) & 255]) for j in range(streams))
                 for i, (_, _, c) in enumerate(protos)] for r in range(rounds)]
    answers = [stub.answers(conns * streams) for _ in range(rounds)]
    # The member's collector settings (cli/server.py _settle_heap).
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000)
    _callgrind("on")
    t0 = time.process_time()
    for r in range(rounds):
        for (p, _, _), data in zip(protos, payloads[r], strict=True):
            p.data_received(data)
        await asyncio.sleep(0)  # the handlers run up to their proposal
        stub.apply_all(answers[r])
        while any(p.h2.streams for p, _, _ in protos):
            await asyncio.sleep(0)
    took = time.process_time() - t0
    _callgrind("off")
    for _, t, _ in protos:
        assert t.out
    return took / (rounds * conns * streams)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=20000)
    ap.add_argument("--conns", default="1x1,16x4",
                    help="connections x concurrent calls on each (bench/loadgen.py's 64 "
                         "clients: 16 connections of 4)")
    ap.add_argument("--kinds", default="put,txn-put,range",
                    help="put, txn-put, range, grant (LeaseGrant)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--src", default="", help="another checkout's src directory")
    ap.add_argument("--inline", action="store_true",
                    help="answer each proposal inside propose() (a lone voter)")
    args = ap.parse_args()
    uvloop.install()
    for kind in args.kinds.split(","):
        for shape in args.conns.split(","):
            conns, _, streams = shape.partition("x")
            runs = [asyncio.run(run(kind, int(conns), int(streams or 1), args.calls,
                                    args.inline))
                    for _ in range(args.repeat)]
            print(f"{kind:8} {shape:>6} {statistics.median(runs) * 1e6:6.1f} us cpu/call "
                  f"(min {min(runs) * 1e6:.1f})", flush=True)


if __name__ == "__main__":
    main()
