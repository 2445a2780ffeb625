"""The apply path alone: CPU per entry of Applier.apply on a member built as the server
builds it (quota gate, auth gate, lease hook, a watch hub fed by the commit listener with
no watchers), for Put, for etcd benchmark's txn-put (a Txn of one put) and for LeaseGrant (--kinds
grant: a new lease of TTL 600 each, the ID chosen already, as proposed), with the
entries as the leader applies its own (the request already parsed) and as a follower
does (decoded from the log entry's bytes). No gRPC, no Raft, no WAL.

    python bench/apply_bench.py [--entries 20000] [--batch 1,64] [--profile KIND]

PETCD_SRC=DIR/src runs another checkout's petcd (before/after); under
`valgrind --tool=callgrind`, --entries 0 vs N gives instructions per entry.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import itertools
import logging
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# PETCD_SRC: another checkout's src, for a before/after comparison.
sys.path.insert(0, os.environ.get("PETCD_SRC") or str(Path(__file__).resolve().parents[1] / "src"))

from petcd.mvcc.backend import Backend
from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.pb.internalpb.internal_pb2 import InternalRequest
from petcd.server.node import Node
from petcd.server.options import ServerOptions
from petcd.server.proposal import ANON, Committed


def build(tmp: str) -> Node:
    # A 1 GiB map (valgrind cannot map the default 64 GiB).
    Backend.__init__.__kwdefaults__["map_size"] = 1 << 30
    peers = {"m0": ("http://127.0.0.1:9",)}
    opts = ServerOptions(name="m0", data_dir=tmp, initial_cluster=peers,
                         initial_advertise_peer_urls=peers["m0"], listen_peer_urls=peers["m0"],
                         listen_client_urls=("http://127.0.0.1:9",),
                         advertise_client_urls=("http://127.0.0.1:9",),
                         unsafe_no_fsync=True)
    node = Node(opts)
    node.feed_watch_hub(node.watch_hub(response_limit=1 << 20, progress_interval=600))
    return node


_lease_ids = itertools.count(1)  # (each grant a new lease, across runs)


def requests(kind: str, n: int, value: bytes) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    if kind == "grant":
        return [("lease_grant", rpc.LeaseGrantRequest(ID=next(_lease_ids), TTL=600))
                for _ in range(n)]
    for i in range(n):
        put = rpc.PutRequest(key=b"bench/0/%06d" % (i % 10000), value=value)
        if kind == "put":
            out.append(("put", put))
        else:
            out.append(("txn", rpc.TxnRequest(success=[rpc.RequestOp(request_put=put)])))
    return out


def entries(reqs: list[tuple[str, Any]], first: int, parsed: bool) -> list[Committed]:
    out = []
    for i, (kind, req) in enumerate(reqs):
        if parsed:
            out.append(Committed(first + i, 1, kind, req, b"", ANON))
        else:
            ir = InternalRequest(id=i + 1, origin=2)
            getattr(ir, kind).CopyFrom(req)
            ir.auth.SetInParent()
            out.append(Committed(first + i, 1, None, None, ir.SerializeToString()))
    return out


def run(node: Node, kind: str, n: int, batch: int, parsed: bool,
        prof: cProfile.Profile | None) -> float:
    applier = node._applier  # (the bench measures the member's own apply path)
    from petcd.server.raftnode.applying import ApplyQueue
    reqs = requests(kind, n, b"v" * 256)
    todo = entries(reqs, applier.applied_index + 1, parsed)
    decode = ApplyQueue._apply_batch  # the follower's decode step, then Applier.apply
    queue: Any = type("Q", (), {"_member_id": 1, "_applier": applier})()
    t0 = time.process_time()
    if prof is not None:
        prof.enable()
    for i in range(0, n, batch):  # (n=0: setup only, for instruction counts)
        chunk = todo[i:i + batch]
        decode(queue, chunk)
        if node.backend.uncommitted >= 500:
            node.backend.commit()  # (the server: every --backend-batch-interval)
    if prof is not None:
        prof.disable()
    return (time.process_time() - t0) / max(n, 1) * 1e6  # (n=0: callgrind baseline)


async def amain(args: argparse.Namespace) -> None:
    logging.getLogger("petcd.apply").setLevel(logging.ERROR)  # (slow-batch warnings)
    with tempfile.TemporaryDirectory(prefix="apply-bench-") as tmp:
        node = build(tmp)
        node.lessor.promote(0.0)  # (as on the leader: a grant's expiry goes on the heap)
        try:
            for kind in args.kinds.split(","):
                for parsed in [w == "leader" for w in args.who.split(",")]:
                    for b in (int(x) for x in args.batch.split(",")):
                        prof = cProfile.Profile() if args.profile == kind and parsed else None
                        best = min(run(node, kind, args.entries, b, parsed, None)
                                   for _ in range(args.repeat))
                        if prof is not None:
                            run(node, kind, args.entries, b, parsed, prof)
                            pstats.Stats(prof).sort_stats("tottime").print_stats(20)
                        who = "leader (parsed)" if parsed else "follower (decoded)"
                        print(f"{kind:5} {who:19} batch={b:<4} {best:6.2f} us CPU/entry "
                              "(best of %d)" % args.repeat, flush=True)
                        await asyncio.sleep(0)  # (the hub's call_soon notifications)
        finally:
            node.backend.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--entries", type=int, default=20000)
    ap.add_argument("--batch", default="1,64")
    ap.add_argument("--kinds", default="put,txn")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--who", default="leader,follower",
                    help="leader (requests parsed), follower (decoded from entry bytes)")
    ap.add_argument("--profile", default="", help="cProfile this kind (put, txn or grant)")
    asyncio.run(amain(ap.parse_args()))


if __name__ == "__main__":
    main()
