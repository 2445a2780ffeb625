"""member, endpoint, alarm, defrag, move-leader and version, as etcdctl 3.4 prints
them. Per-endpoint commands (endpoint *, defrag) dial each endpoint on its own;
`--cluster` takes the endpoints from the member list."""

from __future__ import annotations

import sys
import time
from typing import Any

from petcd.cli.ctl import output as out
from petcd.cli.ctl.client import Client
from petcd.cli.ctl.cmd import API_VERSION, VERSION, Args, bad_args
from petcd.cli.ctl.common import EXIT_ERROR, CtlError, humanize_bytes
from petcd.cli.ctl.kv import emit
from petcd.pb.etcdserverpb import rpc_pb2 as rpc


def go_duration(seconds: float) -> str:
    """Go's time.Duration.String()."""
    ns = int(seconds * 1e9)
    if ns < 1000:
        return f"{ns}ns"
    for unit, scale in (("µs", 1e3), ("ms", 1e6)):
        if ns < scale * 1000:
            return _trim(f"{ns / scale:.{len(str(int(scale)))-1}f}") + unit
    return _trim(f"{ns / 1e9:.9f}") + "s"


def _trim(s: str) -> str:
    return s.rstrip("0").rstrip(".") if "." in s else s


def _member_id(arg: str) -> int:
    try:
        v = int(arg, 16)
        if v < 0 or v >= 2**64 or arg.startswith(("0x", "+", "-")):
            raise ValueError
        return v
    except ValueError:
        raise bad_args(f'bad member ID arg (strconv.ParseUint: parsing "{arg}": invalid '
                       "syntax), expecting ID in Hex") from None


def _rpc_out(a: Args, resp: Any, simple: str, fields: str) -> None:
    fmt = a.write_out
    if fmt == "simple":
        out.write(simple)
    elif fmt == "fields":
        out.write(out.header_fields(resp.header) + fields)
    elif fmt == "json":
        out.print_json(out.go_json_value(resp))
    elif fmt == "protobuf":
        emit(resp.SerializeToString().decode("latin-1"), fmt)
    else:
        raise out.unsupported(fmt)


# -- member
def _member_rows(members: Any) -> list[list[str]]:
    return [[f"{m.ID:x}", "started" if m.name else "unstarted", m.name,
             ",".join(m.peerURLs), ",".join(m.clientURLs), out.go_bool(m.isLearner)]
            for m in members]


_MEMBER_HEADER = ["ID", "Status", "Name", "Peer Addrs", "Client Addrs", "Is Learner"]


def _member_fields(members: Any) -> str:
    parts = []
    for m in members:
        parts.append(f'"ID" : {m.ID}\n"Name" : {out.go_quote(m.name)}\n')
        parts += [f'"PeerURL" : {out.go_quote(u)}\n' for u in m.peerURLs]
        parts += [f'"ClientURL" : {out.go_quote(u)}\n' for u in m.clientURLs]
        parts.append(f'"IsLearner" : {out.go_bool(m.isLearner)}\n\n')
    return "".join(parts)


def run_member_list(a: Args) -> None:
    resp = Client(a).call("Cluster", "MemberList", rpc.MemberListRequest(linearizable=True))
    if a.write_out == "table":
        out.write(out.table(_MEMBER_HEADER, _member_rows(resp.members)))
        return
    if a.write_out == "json" and a.hex:
        d = out.go_json_value(resp)
        out.write(out.dumps(d).replace('"ID":', '"ID":') + "\n")
        return
    _rpc_out(a, resp, "".join(", ".join(r) + "\n" for r in _member_rows(resp.members)),
             _member_fields(resp.members))


def run_member_add(a: Args) -> None:
    if not a.args:
        raise bad_args("member name not provided")
    if len(a.args) > 1:
        ev = "too many arguments"
        for s in a.args:
            if s.lower().startswith("http"):
                ev += f", did you mean --peer-urls={s}"
        raise bad_args(ev)
    name = a.args[0]
    if not a.peer_urls:
        raise bad_args("member peer urls not provided")
    urls = a.peer_urls.split(",")
    resp = Client(a).call("Cluster", "MemberAdd",
                          rpc.MemberAddRequest(peerURLs=urls, isLearner=a.learner))
    new_id = resp.member.ID
    simple = f"Member {new_id:16x} added to cluster {resp.header.cluster_id:16x}\n"
    _rpc_out(a, resp, simple, "")
    if a.write_out == "simple":
        conf = [f"{name if new_id == m.ID else m.name}={u}"
                for m in resp.members for u in m.peerURLs]
        out.write(f"\nETCD_NAME={out.go_quote(name)}\n"
                  f"ETCD_INITIAL_CLUSTER={out.go_quote(','.join(conf))}\n"
                  f"ETCD_INITIAL_ADVERTISE_PEER_URLS={out.go_quote(a.peer_urls)}\n"
                  'ETCD_INITIAL_CLUSTER_STATE="existing"\n')


def _one_id(a: Args) -> int:
    if len(a.args) != 1:
        raise bad_args("member ID is not provided")
    return _member_id(a.args[0])


def run_member_remove(a: Args) -> None:
    mid = _one_id(a)
    resp = Client(a).call("Cluster", "MemberRemove", rpc.MemberRemoveRequest(ID=mid))
    _rpc_out(a, resp, f"Member {mid:16x} removed from cluster "
             f"{resp.header.cluster_id:16x}\n", "")


def run_member_update(a: Args) -> None:
    mid = _one_id(a)
    if not a.peer_urls:
        raise bad_args("member peer urls not provided")
    resp = Client(a).call("Cluster", "MemberUpdate", rpc.MemberUpdateRequest(
        ID=mid, peerURLs=a.peer_urls.split(",")))
    _rpc_out(a, resp, f"Member {mid:16x} updated in cluster "
             f"{resp.header.cluster_id:16x}\n", "")


def run_member_promote(a: Args) -> None:
    mid = _one_id(a)
    resp = Client(a).call("Cluster", "MemberPromote", rpc.MemberPromoteRequest(ID=mid))
    _rpc_out(a, resp, f"Member {mid:16x} promoted in cluster "
             f"{resp.header.cluster_id:16x}\n", "")


# -- endpoint
def endpoints(a: Args) -> list[str]:
    if not a.cluster:
        return list(a.endpoints)
    c = Client(a)
    try:
        resp = c.call("Cluster", "MemberList", rpc.MemberListRequest())
    except CtlError as e:
        raise CtlError("failed to fetch endpoints from etcd cluster member list: "
                       f"{e}", EXIT_ERROR) from None
    finally:
        c.close()
    return [u for m in resp.members for u in m.clientURLs]


def run_health(a: Args) -> None:
    rows = []
    for ep in endpoints(a):
        c = Client(a, [ep])
        start = time.monotonic()
        err = ""
        try:
            c.call("KV", "Range", rpc.RangeRequest(key=b"health"))
        except CtlError as e:
            if str(e) != "etcdserver: permission denied":
                err = str(e)
        finally:
            c.close()
        rows.append((ep, not err, go_duration(time.monotonic() - start), err))
    fmt = a.write_out
    if fmt == "simple":
        for ep, _, took, err in rows:
            if not err:
                sys.stderr.write(f"{ep} is healthy: successfully committed proposal: "
                                 f"took = {took}\n")
            else:
                sys.stderr.write(f"{ep} is unhealthy: failed to commit proposal: {err}\n")
    elif fmt == "json":
        out.print_json([{"endpoint": ep, "health": ok, "took": took,
                         **({"error": err} if err else {})} for ep, ok, took, err in rows])
    elif fmt == "table":
        out.write(out.table(["endpoint", "health", "took", "error"],
                            [[ep, out.go_bool(ok), took, err] for ep, ok, took, err in rows]))
    elif fmt == "fields":
        out.write("".join(f'"Endpoint" : {out.go_quote(ep)}\n"Health" : {out.go_bool(ok)}\n'
                          f'"Took" : {took}\n"Error" : {err}\n\n'
                          for ep, ok, took, err in rows))
    else:
        raise out.unsupported(fmt)
    if any(r[3] for r in rows):
        raise CtlError("unhealthy cluster", EXIT_ERROR)


def _per_endpoint(a: Args, service: str, method: str, req: Any, what: str
                  ) -> tuple[list[tuple[str, Any]], CtlError | None]:
    got, failure = [], None
    for ep in endpoints(a):
        c = Client(a, [ep])
        try:
            got.append((ep, c.call(service, method, req)))
        except CtlError as e:
            failure = e
            sys.stderr.write(f"Failed to get the {what} of endpoint {ep} ({e})\n")
        finally:
            c.close()
    return got, failure


def run_status(a: Args) -> None:
    got, failure = _per_endpoint(a, "Maintenance", "Status", rpc.StatusRequest(), "status")
    header = ["endpoint", "ID", "version", "db size", "is leader", "is learner", "raft term",
              "raft index", "raft applied index", "errors"]
    rows = [[ep, f"{r.header.member_id:x}", r.version, humanize_bytes(r.dbSize),
             out.go_bool(r.leader == r.header.member_id), out.go_bool(r.isLearner),
             str(r.raftTerm), str(r.raftIndex), str(r.raftAppliedIndex), ", ".join(r.errors)]
            for ep, r in got]
    fmt = a.write_out
    if fmt == "simple":
        out.write("".join(", ".join(r) + "\n" for r in rows))
    elif fmt == "table":
        out.write(out.table(header, rows))
    elif fmt == "json":
        out.print_json([{"Endpoint": ep, "Status": out.go_json_value(r)} for ep, r in got])
    elif fmt == "fields":
        out.write("".join(
            out.header_fields(r.header) + f'"Version" : {out.go_quote(r.version)}\n'
            f'"DBSize" : {r.dbSize}\n"Leader" : {r.leader}\n'
            f'"IsLearner" : {out.go_bool(r.isLearner)}\n"RaftIndex" : {r.raftIndex}\n'
            f'"RaftTerm" : {r.raftTerm}\n"RaftAppliedIndex" : {r.raftAppliedIndex}\n'
            f'"Errors" : [{" ".join(r.errors)}]\n"Endpoint" : {out.go_quote(ep)}\n\n'
            for ep, r in got))
    else:
        raise out.unsupported(fmt)
    if failure is not None:
        raise SystemExit(EXIT_ERROR)


def run_hashkv(a: Args) -> None:
    got, failure = _per_endpoint(a, "Maintenance", "HashKV",
                                 rpc.HashKVRequest(revision=a.rev), "hash")
    fmt = a.write_out
    rows = [[ep, str(r.hash)] for ep, r in got]
    if fmt == "simple":
        out.write("".join(", ".join(r) + "\n" for r in rows))
    elif fmt == "table":
        out.write(out.table(["endpoint", "hash"], rows))
    elif fmt == "json":
        out.print_json([{"Endpoint": ep, "HashKV": out.go_json_value(r)} for ep, r in got])
    elif fmt == "fields":
        out.write("".join(out.header_fields(r.header) + f'"Endpoint" : {out.go_quote(ep)}\n'
                          f'"Hash" : {r.hash}\n\n' for ep, r in got))
    else:
        raise out.unsupported(fmt)
    if failure is not None:
        raise failure


# -- alarm, defrag, move-leader, version
def _alarm(a: Args, action: Any, what: str) -> None:
    if a.args:
        raise bad_args(f"alarm {what} command accepts no arguments")
    resp = Client(a).call("Maintenance", "Alarm", rpc.AlarmRequest(action=action))
    names = {rpc.NONE: "NONE", rpc.NOSPACE: "NOSPACE", rpc.CORRUPT: "CORRUPT"}
    simple = "".join(f"memberID:{m.memberID} alarm:{names.get(m.alarm, m.alarm)} \n"
                     for m in resp.alarms)
    fields = "".join(f'"MemberID" : {m.memberID}\n"AlarmType" : '
                     f'{names.get(m.alarm, m.alarm)}\n\n' for m in resp.alarms)
    _rpc_out(a, resp, simple, fields)


def run_alarm_list(a: Args) -> None:
    _alarm(a, rpc.AlarmRequest.GET, "list")


def run_alarm_disarm(a: Args) -> None:
    _alarm(a, rpc.AlarmRequest.DEACTIVATE, "disarm")


def run_defrag(a: Args) -> None:
    if a.data_dir:
        sys.stderr.write(f"Failed to defragment etcd data[{a.data_dir}] (petcdctl cannot "
                         "defragment a data directory offline; defragment the running "
                         "member instead)\n")
        raise SystemExit(EXIT_ERROR)
    failures = 0
    for ep in endpoints(a):
        c = Client(a, [ep])
        try:
            c.call("Maintenance", "Defragment", rpc.DefragmentRequest())
            print(f"Finished defragmenting etcd member[{ep}]", flush=True)
        except CtlError as e:
            sys.stderr.write(f"Failed to defragment etcd member[{ep}] ({e})\n")
            failures += 1
        finally:
            c.close()
    if failures:
        raise SystemExit(EXIT_ERROR)


def run_move_leader(a: Args) -> None:
    if len(a.args) != 1:
        raise bad_args("move-leader command needs 1 argument")
    try:
        target = int(a.args[0], 16)
    except ValueError:
        raise bad_args(f'strconv.ParseUint: parsing "{a.args[0]}": invalid syntax') from None
    leader_client, leader_id = None, 0
    for ep in a.endpoints:
        c = Client(a, [ep])
        st = c.call("Maintenance", "Status", rpc.StatusRequest())
        if st.header.member_id == st.leader:
            leader_client, leader_id = c, st.leader
            break
        c.close()
    if leader_client is None:
        raise bad_args(f"no leader endpoint given at [{' '.join(a.endpoints)}]")
    resp = leader_client.call("Maintenance", "MoveLeader",
                              rpc.MoveLeaderRequest(targetID=target))
    fmt = a.write_out
    if fmt == "simple":
        print(f"Leadership transferred from {leader_id:x} to {target:x}")
    elif fmt in ("json", "protobuf"):
        _rpc_out(a, resp, "", "")
    else:
        raise out.unsupported(fmt)


def run_version(a: Args) -> None:
    print(f"etcdctl version: {VERSION}\nAPI version: {API_VERSION}")


def run_unsupported(a: Args) -> None:
    raise CtlError(f"`{a.path.split(' ', 1)[1]}` is not supported by petcdctl (v2 store "
                   "migration and shell completion scripts are etcd-only)", EXIT_ERROR)


def run_help(a: Args) -> None:
    from petcd.cli.ctl.cmd import help_text
    from petcd.cli.ctl.commands import ROOT
    cmd, path = ROOT, "etcdctl"
    for word in a.args:
        sub = cmd.sub(word)
        if sub is None:
            break
        cmd, path = sub, f"{path} {word}"
    out.write(help_text(cmd, path))
