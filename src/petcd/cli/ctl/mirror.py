"""make-mirror: copy a prefix (at one revision, in pages) to another cluster, then
replay the source's watch events there, one txn per source revision; the count of
mirrored changes is printed every 30 s, as etcdctl does."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

import grpc

from petcd.cli.ctl.client import Client, error_text
from petcd.cli.ctl.cmd import Args, Command, bad_args, parse
from petcd.cli.ctl.common import EXIT_ERROR, CtlError
from petcd.cli.ctl.kv import prefix_end
from petcd.pb.etcdserverpb import rpc_pb2 as rpc

PAGE = 1000


def run_make_mirror(a: Args) -> None:
    if len(a.args) != 1:
        raise bad_args("make-mirror takes one destination argument")
    dest_argv = ["--endpoints", a.args[0], "--dial-timeout", a.dial_timeout,
                 "--keepalive-time", a.keepalive_time, "--keepalive-timeout",
                 a.keepalive_timeout, "--cert", a.dest_cert, "--key", a.dest_key,
                 "--cacert", a.dest_cacert,
                 f"--insecure-transport={'true' if a.dest_insecure_transport else 'false'}"]
    _, dest_args = parse(Command("dest", ""), dest_argv)
    dest = Client(dest_args)
    src = Client(a)
    if a.no_dest_prefix and a.dest_prefix:
        raise bad_args("`--dest-prefix` and `--no-dest-prefix` cannot be set at the same "
                       "time, choose one")
    prefix = a.prefix.encode()
    dest_prefix = a.dest_prefix.encode() if (a.dest_prefix or a.no_dest_prefix) else prefix
    total = [0]
    stop = threading.Event()

    def report() -> None:
        while not stop.wait(30):
            print(total[0], flush=True)

    threading.Thread(target=report, daemon=True).start()

    def moved(key: bytes) -> bytes:
        return key.replace(prefix, dest_prefix, 1)

    key = prefix or b"\x00"
    end = prefix_end(prefix) if prefix else b"\x00"
    rev = 0
    while True:
        page = src.call("KV", "Range", rpc.RangeRequest(key=key, range_end=end, limit=PAGE,
                                                        revision=rev))
        rev = rev or page.header.revision
        for kv in page.kvs:
            dest.call("KV", "Put", rpc.PutRequest(key=moved(kv.key), value=kv.value))
            total[0] += 1
        if not page.more:
            break
        key = page.kvs[-1].key + b"\x00"
    requests: queue.Queue[rpc.WatchRequest | None] = queue.Queue()
    requests.put(rpc.WatchRequest(create_request=rpc.WatchCreateRequest(
        key=prefix or b"\x00", range_end=end, start_revision=rev + 1)))

    def reqs() -> Iterator[rpc.WatchRequest]:
        while (r := requests.get()) is not None:
            yield r

    try:
        for wr in src.stub("Watch").Watch(reqs(), metadata=src.metadata or None):
            if wr.compact_revision:
                raise CtlError("etcdserver: mvcc: required revision has been compacted",
                               EXIT_ERROR)
            ops: list[rpc.RequestOp] = []
            last = 0
            for ev in wr.events:
                if last and ev.kv.mod_revision > last:
                    dest.call("KV", "Txn", rpc.TxnRequest(success=ops))
                    ops = []
                last = ev.kv.mod_revision
                if ev.type == ev.PUT:
                    ops.append(rpc.RequestOp(request_put=rpc.PutRequest(
                        key=moved(ev.kv.key), value=ev.kv.value)))
                else:
                    ops.append(rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(
                        key=moved(ev.kv.key))))
                total[0] += 1
            if ops:
                dest.call("KV", "Txn", rpc.TxnRequest(success=ops))
    except grpc.RpcError as e:
        raise CtlError(error_text(e), EXIT_ERROR) from None
    finally:
        requests.put(None)
        stop.set()
    raise CtlError("<nil>", EXIT_ERROR)
