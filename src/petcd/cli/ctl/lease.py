"""lease grant, revoke, timetolive, list and keep-alive, as etcdctl 3.4 prints them.
clientv3 wraps several lease responses in structs that embed the header: their JSON
has the header's fields inline and their protobuf form is the header alone."""

from __future__ import annotations

import base64
from typing import Any

import grpc

from petcd.cli.ctl import output as out
from petcd.cli.ctl.client import Client
from petcd.cli.ctl.cmd import Args, bad_args
from petcd.cli.ctl.common import EXIT_BAD_CONNECTION, EXIT_ERROR, CtlError
from petcd.cli.ctl.kv import emit
from petcd.pb.etcdserverpb import rpc_pb2 as rpc


def lease_id(arg: str) -> int:
    try:
        v = int(arg, 16)
        if not -(2**63) <= v < 2**63 or arg.strip() != arg or arg.startswith("0x"):
            raise ValueError
        return v
    except ValueError:
        raise bad_args(f'bad lease ID arg (strconv.ParseInt: parsing "{arg}": invalid '
                       "syntax), expecting ID in Hex") from None


def _inline(h: Any, **fields: Any) -> dict[str, Any]:
    d = out.go_json_value(h)
    d.update(fields)
    return d


def _show(a: Args, simple: str, fields: str, json_value: Any, header: Any,
          *, table: bool = False) -> None:
    fmt = a.write_out
    if fmt == "simple":
        out.write(simple)
    elif fmt == "fields":
        out.write(out.header_fields(header) + fields)
    elif fmt == "json":
        out.print_json(json_value)
    elif fmt == "protobuf":
        emit(header.SerializeToString().decode("latin-1"), fmt)
    else:
        raise out.unsupported(fmt)


def run_grant(a: Args) -> None:
    if len(a.args) != 1:
        raise bad_args("lease grant command needs TTL argument")
    try:
        ttl = int(a.args[0])
    except ValueError:
        raise bad_args(f'bad TTL (strconv.ParseInt: parsing "{a.args[0]}": invalid '
                       "syntax)") from None
    c = Client(a)
    try:
        r = c.call("Lease", "LeaseGrant", rpc.LeaseGrantRequest(TTL=ttl))
    except CtlError as e:
        raise CtlError(f"failed to grant lease ({e})", EXIT_ERROR) from None
    _show(a, f"lease {r.ID & (2**64 - 1):016x} granted with TTL({r.TTL}s)\n",
          f'"ID" : {r.ID}\n"TTL" : {r.TTL}\n',
          _inline(r.header, ID=r.ID, TTL=r.TTL, Error=r.error), r.header)


def run_revoke(a: Args) -> None:
    if len(a.args) != 1:
        raise bad_args("lease revoke command needs 1 argument")
    lid = lease_id(a.args[0])
    c = Client(a)
    try:
        r = c.call("Lease", "LeaseRevoke", rpc.LeaseRevokeRequest(ID=lid))
    except CtlError as e:
        raise CtlError(f"failed to revoke lease ({e})", EXIT_ERROR) from None
    fmt = a.write_out
    if fmt == "simple":
        out.write(f"lease {lid & (2**64 - 1):016x} revoked\n")
    elif fmt == "fields":
        out.write(out.header_fields(r.header))
    elif fmt == "json":
        out.print_json(out.go_json_value(r))
    elif fmt == "protobuf":
        emit(r.SerializeToString().decode("latin-1"), fmt)
    else:
        raise out.unsupported(fmt)


def run_timetolive(a: Args) -> None:
    if len(a.args) != 1:
        raise bad_args("lease timetolive command needs lease ID as argument")
    lid = lease_id(a.args[0])
    c = Client(a)
    try:
        r = c.call("Lease", "LeaseTimeToLive",
                   rpc.LeaseTimeToLiveRequest(ID=lid, keys=a.keys), timeout=None)
    except CtlError as e:
        raise CtlError(str(e), EXIT_BAD_CONNECTION) from None
    if r.grantedTTL == 0 and r.TTL == -1:
        simple = f"lease {r.ID & (2**64 - 1):016x} already expired\n"
    else:
        simple = (f"lease {r.ID & (2**64 - 1):016x} granted with TTL({r.grantedTTL}s), "
                  f"remaining({r.TTL}s)")
        if a.keys:
            simple += ", attached keys([" + " ".join(out.text(k) for k in r.keys) + "])"
        simple += "\n"
    keys = [base64.b64encode(k).decode() for k in r.keys] if r.keys else None
    _show(a, simple, f'"ID" : {r.ID}\n"TTL" : {r.TTL}\n"GrantedTTL" : {r.grantedTTL}\n'
          + "".join(f'"Key" : {out.go_quote(k)}\n' for k in r.keys),
          _inline(r.header, id=r.ID, ttl=r.TTL, **{"granted-ttl": r.grantedTTL},
                  keys=keys), r.header)


def run_list(a: Args) -> None:
    c = Client(a)
    try:
        r = c.call("Lease", "LeaseLeases", rpc.LeaseLeasesRequest(), timeout=None)
    except CtlError as e:
        raise CtlError(str(e), EXIT_BAD_CONNECTION) from None
    simple = f"found {len(r.leases)} leases\n" + "".join(
        f"{x.ID & (2**64 - 1):016x}\n" for x in r.leases)
    _show(a, simple, "".join(f'"ID" : {x.ID}\n' for x in r.leases),
          _inline(r.header, leases=[{"id": x.ID} for x in r.leases]), r.header)


def _keep_alive_out(a: Args, r: Any) -> None:
    _show(a, f"lease {r.ID & (2**64 - 1):016x} keepalived with TTL({r.TTL})\n",
          f'"ID" : {r.ID}\n"TTL" : {r.TTL}\n', _inline(r.header, ID=r.ID, TTL=r.TTL),
          r.header)
    import sys
    sys.stdout.flush()


def run_keep_alive(a: Args) -> None:
    if len(a.args) != 1:
        raise bad_args("lease keep-alive command needs lease ID as argument")
    lid = lease_id(a.args[0])
    c = Client(a)
    stub = c.stub("Lease")
    if a.once:
        try:
            for r in stub.LeaseKeepAlive(iter([rpc.LeaseKeepAliveRequest(ID=lid)]),
                                         metadata=c.metadata or None):
                if r.TTL <= 0:
                    raise CtlError("etcdserver: requested lease not found",
                                   EXIT_BAD_CONNECTION)
                _keep_alive_out(a, r)
                return
        except grpc.RpcError as e:
            raise c.failure(e, warn=False) from None
        return
    # etcdctl renews every TTL/3 until the lease is gone
    import queue
    import threading
    q: queue.Queue[rpc.LeaseKeepAliveRequest | None] = queue.Queue()
    q.put(rpc.LeaseKeepAliveRequest(ID=lid))

    def requests() -> Any:
        while True:
            item = q.get()
            if item is None:
                return
            yield item

    call = stub.LeaseKeepAlive(requests(), metadata=c.metadata or None)
    timer: threading.Timer | None = None
    try:
        for r in call:
            if r.TTL <= 0:
                break
            _keep_alive_out(a, r)
            timer = threading.Timer(max(r.TTL / 3, 0.5), q.put,
                                    args=(rpc.LeaseKeepAliveRequest(ID=lid),))
            timer.daemon = True
            timer.start()
    except grpc.RpcError as e:
        raise c.failure(e, warn=False) from None
    finally:
        # End the request stream and the call here, not at interpreter exit (where
        # gRPC's thread could still be inside the request generator).
        if timer is not None:
            timer.cancel()
        q.put(None)
        call.cancel()
    if a.write_out == "simple":
        out.write(f"lease {lid & (2**64 - 1):016x} expired or revoked.\n")
