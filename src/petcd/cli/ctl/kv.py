"""get, put, del, txn and compaction, with etcdctl 3.4's checks, messages and output
in every format."""

from __future__ import annotations

import re
import sys
from typing import Any

from petcd.cli.ctl import output as out
from petcd.cli.ctl.client import Client
from petcd.cli.ctl.cmd import Args, Command, bad_args, parse
from petcd.cli.ctl.commands import DEL_FLAGS, GET_FLAGS, PUT_FLAGS
from petcd.cli.ctl.common import EXIT_BAD_FEATURE, EXIT_ERROR, EXIT_INVALID_INPUT, CtlError
from petcd.pb.etcdserverpb import rpc_pb2 as rpc

_ORDERS = {"ASCEND": rpc.RangeRequest.ASCEND, "DESCEND": rpc.RangeRequest.DESCEND, "": None}
_TARGETS = {"CREATE": rpc.RangeRequest.CREATE, "KEY": rpc.RangeRequest.KEY,
            "MODIFY": rpc.RangeRequest.MOD, "VALUE": rpc.RangeRequest.VALUE,
            "VERSION": rpc.RangeRequest.VERSION, "": rpc.RangeRequest.KEY}


def _b(s: str) -> bytes:
    return s.encode("utf-8", "surrogateescape")


def prefix_end(key: bytes) -> bytes:
    k = bytearray(key)
    while k:
        if k[-1] < 0xFF:
            k[-1] += 1
            return bytes(k)
        k.pop()
    return b"\x00"


def _key_range(a: Args, what: str, max_args: int | None) -> tuple[bytes, bytes]:
    if not a.args or (max_args is not None and len(a.args) > max_args):
        raise bad_args(f"{what} command needs one argument as key and an optional argument "
                       "as range_end")
    if a.prefix and a.from_key:
        raise bad_args("`--prefix` and `--from-key` cannot be set at the same time, choose one")
    key, end = _b(a.args[0]), b""
    if len(a.args) > 1:
        if a.prefix or a.from_key:
            raise bad_args("too many arguments, only accept one argument when `--prefix` or "
                           "`--from-key` is set")
        end = _b(a.args[1])
    if a.prefix:
        if not key:
            key, end = b"\x00", b"\x00"
        else:
            end = prefix_end(key)
    if a.from_key:
        key, end = key or b"\x00", b"\x00"
    return key, end


def range_request(a: Args) -> rpc.RangeRequest:
    if not a.args:
        raise bad_args("get command needs one argument as key and an optional argument as "
                       "range_end")
    if a.prefix and a.from_key:
        raise bad_args("`--prefix` and `--from-key` cannot be set at the same time, choose one")
    if a.consistency not in ("l", "s"):
        raise CtlError(f"unknown consistency flag {out.go_quote(a.consistency)}",
                       EXIT_BAD_FEATURE)
    key, end = _key_range(a, "get", None)
    order = a.order.upper()
    if order not in _ORDERS:
        raise CtlError(f"bad sort order {a.order}", EXIT_BAD_FEATURE)
    target = a.sort_by.upper()
    if target not in _TARGETS:
        raise CtlError(f"bad sort target {a.sort_by}", EXIT_BAD_FEATURE)
    req = rpc.RangeRequest(key=key, range_end=end, limit=a.limit,
                           serializable=a.consistency == "s", keys_only=a.keys_only)
    if a.rev > 0:
        req.revision = a.rev
    sort_target, sort_order = _TARGETS[target], _ORDERS[order]
    if sort_order is None:
        sort_order = rpc.RangeRequest.NONE
    # clientv3: ascending by key is the server's default order: not sent
    if sort_target == rpc.RangeRequest.KEY and sort_order == rpc.RangeRequest.ASCEND:
        sort_order = rpc.RangeRequest.NONE
    if sort_target != rpc.RangeRequest.KEY and sort_order == rpc.RangeRequest.NONE:
        sort_order = rpc.RangeRequest.ASCEND
    req.sort_order, req.sort_target = sort_order, sort_target
    return req


def put_request(a: Args, stdin: bool = True) -> rpc.PutRequest:
    usage = "put command needs 1 argument and input from stdin or 2 arguments"
    if not a.args:
        raise bad_args(usage)
    if a.ignore_value and len(a.args) > 1:
        raise bad_args("put command needs only 1 argument when 'ignore-value' is set")
    value = b""
    if not a.ignore_value:
        if len(a.args) > 1:
            value = _b(a.args[1])
        elif stdin:
            data = sys.stdin.buffer.read()
            if not data:
                raise bad_args(usage)
            value = data
        else:
            raise bad_args(usage)
    try:
        lease = int(a.lease, 16)
        if not -(2**63) <= lease < 2**63:
            raise ValueError
    except ValueError:
        raise bad_args(f'bad lease ID (strconv.ParseInt: parsing "{a.lease}": invalid '
                       "syntax), expecting ID in Hex") from None
    return rpc.PutRequest(key=_b(a.args[0]), value=value, lease=lease, prev_kv=a.prev_kv,
                          ignore_value=a.ignore_value, ignore_lease=a.ignore_lease)


def delete_request(a: Args) -> rpc.DeleteRangeRequest:
    key, end = _key_range(a, "del", 2)
    return rpc.DeleteRangeRequest(key=key, range_end=end, prev_kv=a.prev_kv)


# -- printing
def show_get(fmt: str, resp: Any, is_hex: bool, value_only: bool = False) -> str:
    if fmt == "simple":
        return "".join(out.kv_simple(kv, is_hex, value_only) for kv in resp.kvs)
    if fmt == "fields":
        return (out.header_fields(resp.header) + "".join(out.kv_fields(kv) for kv in resp.kvs)
                + f'"More" : {out.go_bool(resp.more)}\n"Count" : {resp.count}\n')
    return _rpc_format(fmt, resp)


def show_put(fmt: str, resp: Any, is_hex: bool) -> str:
    if fmt == "simple":
        return "OK\n" + (out.kv_simple(resp.prev_kv, is_hex) if resp.HasField("prev_kv")
                         else "")
    if fmt == "fields":
        return out.header_fields(resp.header) + (
            out.kv_fields(resp.prev_kv, "Prev") if resp.HasField("prev_kv") else "")
    return _rpc_format(fmt, resp)


def show_del(fmt: str, resp: Any, is_hex: bool) -> str:
    if fmt == "simple":
        return f"{resp.deleted}\n" + "".join(out.kv_simple(kv, is_hex) for kv in resp.prev_kvs)
    if fmt == "fields":
        return (out.header_fields(resp.header) + f'"Deleted" : {resp.deleted}\n'
                + "".join(out.kv_fields(kv, "Prev") for kv in resp.prev_kvs))
    return _rpc_format(fmt, resp)


def show_txn(fmt: str, resp: Any, is_hex: bool) -> str:
    if fmt not in ("simple", "fields"):
        return _rpc_format(fmt, resp)
    if fmt == "simple":
        parts = ["SUCCESS\n" if resp.succeeded else "FAILURE\n"]
    else:
        parts = [out.header_fields(resp.header),
                 f'"Succeeded" : {out.go_bool(resp.succeeded)}\n']
    for r in resp.responses:
        if fmt == "simple":
            parts.append("\n")
        kind = r.WhichOneof("response")
        if kind == "response_range":
            parts.append(show_get(fmt, r.response_range, is_hex))
        elif kind == "response_put":
            parts.append(show_put(fmt, r.response_put, is_hex))
        elif kind == "response_delete_range":
            parts.append(show_del(fmt, r.response_delete_range, is_hex))
    return "".join(parts)


def _rpc_format(fmt: str, resp: Any) -> str:
    if fmt == "json":
        return out.dumps(out.go_json_value(resp)) + "\n"
    if fmt == "protobuf":
        data: bytes = resp.SerializeToString()
        return data.decode("latin-1")
    raise out.unsupported(fmt)


def emit(s: str, fmt: str) -> None:
    if fmt == "protobuf":
        sys.stdout.buffer.write(s.encode("latin-1"))
    else:
        out.write(s)


# -- commands
def run_get(a: Args) -> None:
    req = range_request(a)
    c = Client(a)
    resp = c.call("KV", "Range", req)
    if a.print_value_only and a.write_out != "simple":
        raise bad_args("print-value-only is only for `--write-out=simple`")
    emit(show_get(a.write_out, resp, a.hex, a.print_value_only), a.write_out)


def run_put(a: Args) -> None:
    req = put_request(a)
    emit(show_put(a.write_out, Client(a).call("KV", "Put", req), a.hex), a.write_out)


def run_del(a: Args) -> None:
    req = delete_request(a)
    emit(show_del(a.write_out, Client(a).call("KV", "DeleteRange", req), a.hex),
         a.write_out)


def run_compaction(a: Args) -> None:
    if len(a.args) != 1:
        raise bad_args("compaction command needs 1 argument")
    try:
        rev = int(a.args[0])
    except ValueError:
        raise CtlError(f'strconv.ParseInt: parsing "{a.args[0]}": invalid syntax',
                       EXIT_ERROR) from None
    Client(a).call("KV", "Compact", rpc.CompactionRequest(revision=rev, physical=a.physical))
    print("compacted revision", rev)


# -- txn
_CMP = re.compile(r'^([^(]*)\(("(?:[^"\\]|\\.)*"|`[^`]*`)\) (\S+) ("(?:[^"\\]|\\.)*"|`[^`]*`)$')
_ARG = re.compile(r'"(?:[^"\\]|\\.)*"|\'[^\']*\'|[^\'"\s]\S*[^\'"\s]?')
_RESULTS = {"=": rpc.Compare.EQUAL, "!=": rpc.Compare.NOT_EQUAL, "<": rpc.Compare.LESS,
            ">": rpc.Compare.GREATER}


def go_unquote(s: str) -> str:
    if s.startswith("`"):
        return s[1:-1]
    body = s[1:-1].encode("utf-8", "surrogateescape")
    return body.decode("unicode_escape").encode("latin-1").decode("utf-8", "surrogateescape")


def parse_compare(line: str) -> rpc.Compare:
    m = _CMP.match(line)
    if "(" not in line:
        raise CtlError(f"malformed comparison: {line}", EXIT_INVALID_INPUT)
    if m is None:
        raise CtlError(f"malformed comparison: {line}", EXIT_INVALID_INPUT)
    target, key, op, val = m.group(1), go_unquote(m.group(2)), m.group(3), \
        go_unquote(m.group(4))
    if op not in _RESULTS:
        raise CtlError(f"Unknown result op: {op}", EXIT_INVALID_INPUT)
    cmp = rpc.Compare(key=_b(key), result=_RESULTS[op])
    try:
        if target in ("ver", "version"):
            cmp.target, cmp.version = rpc.Compare.VERSION, int(val)
        elif target in ("c", "create"):
            cmp.target, cmp.create_revision = rpc.Compare.CREATE, int(val)
        elif target in ("m", "mod"):
            cmp.target, cmp.mod_revision = rpc.Compare.MOD, int(val)
        elif target in ("val", "value"):
            cmp.target, cmp.value = rpc.Compare.VALUE, _b(val)
        else:
            raise CtlError(f"malformed comparison: {line} (unknown target {target})",
                           EXIT_INVALID_INPUT)
    except ValueError:
        raise CtlError(f"invalid txn compare request: {line}", EXIT_INVALID_INPUT) from None
    return cmp


def argify(line: str) -> list[str]:
    args = []
    for a in _ARG.findall(line):
        if a.startswith("'"):
            a = a[1:-1]
        elif a.startswith('"'):
            a = go_unquote(a)
        args.append(a)
    return args


def parse_op(line: str) -> rpc.RequestOp:
    args = argify(line)
    if len(args) < 2:
        raise CtlError(f"invalid txn compare request: {line}", EXIT_INVALID_INPUT)
    try:
        _, parsed = parse(OP_COMMANDS[args[0]], args[1:])
        if args[0] == "put":
            return rpc.RequestOp(request_put=put_request(parsed, stdin=False))
        if args[0] == "get":
            return rpc.RequestOp(request_range=range_request(parsed))
        if args[0] == "del":
            return rpc.RequestOp(request_delete_range=delete_request(parsed))
    except Exception:
        pass
    raise CtlError(f"invalid txn request: {line}", EXIT_INVALID_INPUT)


def _read_block(stdin: Any, parse_line: Any) -> list[Any]:
    items: list[Any] = []
    while True:
        line = stdin.readline()
        if not line.endswith("\n"):
            raise CtlError("EOF", EXIT_INVALID_INPUT)
        line = line.strip()
        if not line:
            return items
        items.append(parse_line(line))


def run_txn(a: Args) -> None:
    if a.args:
        raise bad_args("txn command does not accept argument")
    client = Client(a)
    client.channel()  # etcdctl connects before reading the txn
    stdin = sys.stdin

    def prompt(s: str) -> None:
        if a.interactive:
            print(s, flush=True)

    prompt("compares:")
    compares = _read_block(stdin, parse_compare)
    prompt("success requests (get, put, del):")
    success = _read_block(stdin, parse_op)
    prompt("failure requests (get, put, del):")
    failure = _read_block(stdin, parse_op)
    resp = client.call("KV", "Txn", rpc.TxnRequest(compare=compares, success=success,
                                                   failure=failure))
    emit(show_txn(a.write_out, resp, a.hex), a.write_out)


OP_COMMANDS = {
    "get": Command("get", "", flags=GET_FLAGS),
    "put": Command("put", "", flags=PUT_FLAGS),
    "del": Command("del", "", flags=DEL_FLAGS),
}
