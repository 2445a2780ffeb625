"""watch: one watch, the interactive form (`-i`: `watch ...` and `progress` lines on
stdin, one gRPC stream for all) and the exec form (`watch key -- cmd args`: cmd runs
once per event with ETCD_WATCH_* set as etcdctl sets them)."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import grpc

from petcd.cli.ctl import output as out
from petcd.cli.ctl.client import Client, error_text
from petcd.cli.ctl.cmd import Args, Command, bad_args, parse
from petcd.cli.ctl.common import (
    EXIT_BAD_ARGS,
    EXIT_BAD_CONNECTION,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_INVALID_INPUT,
    CtlError,
)
from petcd.cli.ctl.kv import argify, prefix_end
from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.pb.mvccpb import kv_pb2

_TYPES = {kv_pb2.Event.PUT: "PUT", kv_pb2.Event.DELETE: "DELETE"}
BAD_NUM = "bad number of arguments"


def _create(a: Args, args: list[str]) -> rpc.WatchRequest:
    if not args:
        raise bad_args(BAD_NUM)
    key = args[0].encode("utf-8", "surrogateescape")
    end = b""
    if len(args) == 2:
        if a.prefix:
            raise bad_args("`range_end` and `--prefix` are mutually exclusive")
        end = args[1].encode("utf-8", "surrogateescape")
    if a.prefix:
        end = prefix_end(key) if key else b"\x00"
        key = key or b"\x00"
    return rpc.WatchRequest(create_request=rpc.WatchCreateRequest(
        key=key, range_end=end, start_revision=a.rev, prev_kv=a.prev_kv))


def _show(fmt: str, is_hex: bool, resp: Any) -> None:
    if fmt == "simple":
        parts = []
        for ev in resp.events:
            parts.append(_TYPES.get(ev.type, str(ev.type)) + "\n")
            if ev.HasField("prev_kv"):
                parts.append(out.kv_simple(ev.prev_kv, is_hex))
            parts.append(out.kv_simple(ev.kv, is_hex))
        out.write("".join(parts))
    elif fmt == "fields":
        parts = [out.header_fields(resp.header)]
        for ev in resp.events:
            parts.append(f'"Type" : {_TYPES.get(ev.type, ev.type)}\n')
            if ev.HasField("prev_kv"):
                parts.append(out.kv_fields(ev.prev_kv, "Prev"))
            parts.append(out.kv_fields(ev.kv))
        out.write("".join(parts))
    elif fmt == "json":
        events = [out.go_json_value(ev) for ev in resp.events] or None
        out.print_json({"Header": out.go_json_value(resp.header), "Events": events,
                        "CompactRevision": resp.compact_revision,
                        "Canceled": resp.canceled, "Created": resp.created})
    elif fmt == "protobuf":
        m = rpc.WatchResponse(header=resp.header, events=resp.events,
                              compact_revision=resp.compact_revision,
                              canceled=resp.canceled, created=resp.created)
        sys.stdout.buffer.write(m.SerializeToString())
    else:
        raise out.unsupported(fmt)
    sys.stdout.flush()


def _exec(exec_args: list[str], resp: Any) -> None:
    for ev in resp.events:
        env = dict(os.environ)
        env["ETCD_WATCH_REVISION"] = str(resp.header.revision)
        env["ETCD_WATCH_EVENT_TYPE"] = out.go_quote(_TYPES.get(ev.type, ""))
        env["ETCD_WATCH_KEY"] = out.go_quote(ev.kv.key)
        env["ETCD_WATCH_VALUE"] = out.go_quote(ev.kv.value)
        try:
            rc = subprocess.run(exec_args, env=env, check=False).returncode
            err = f"exit status {rc}" if rc else ""
        except OSError as e:
            err = f"exec: {out.go_quote(exec_args[0])}: {e.strerror}"
        if err:
            quoted = "[" + " ".join(out.go_quote(x) for x in exec_args) + "]"
            sys.stderr.write(f"command {quoted} error ({err})\n")
            sys.stdout.flush()
            os._exit(EXIT_ERROR)


class _Stream:
    """One Watch stream: requests go in through a queue, responses come out."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.requests: queue.Queue[rpc.WatchRequest | None] = queue.Queue()
        md = [*client.metadata, ("hasleader", "true")]
        self.responses = client.stub("Watch").Watch(self._iter(), metadata=md)

    def _iter(self) -> Iterator[rpc.WatchRequest]:
        while True:
            r = self.requests.get()
            if r is None:
                return
            yield r


def _serve(a: Args, stream: _Stream, exec_args: dict[int, list[str]],
           pending: list[list[str]]) -> None:
    """Print responses until the server ends the stream."""
    try:
        for resp in stream.responses:
            if resp.created and not resp.canceled:
                exec_args[resp.watch_id] = pending.pop(0) if pending else []
                continue
            if resp.canceled:
                reason = resp.cancel_reason
                if resp.compact_revision:
                    reason = "etcdserver: mvcc: required revision has been compacted"
                sys.stderr.write(f"watch was canceled ({reason})\n")
                if resp.created and pending:
                    pending.pop(0)
            elif not resp.events and not resp.created:
                print(f"progress notify: {resp.header.revision}", flush=True)
            _show(a.write_out, a.hex, resp)
            cmd = exec_args.get(resp.watch_id)
            if cmd:
                _exec(cmd, resp)
    except grpc.RpcError as e:
        sys.stdout.flush()
        raise CtlError(error_text(e), EXIT_BAD_CONNECTION) from None


def run_watch(a: Args) -> None:
    env_key = os.environ.get("ETCDCTL_WATCH_KEY", "")
    env_range = os.environ.get("ETCDCTL_WATCH_RANGE_END", "")
    if not env_key and env_range:
        raise bad_args(f"ETCDCTL_WATCH_KEY is empty but got ETCDCTL_WATCH_RANGE_END="
                       f"{out.go_quote(env_range)}")
    if a.interactive:
        _interactive(a, env_key, env_range)
        return
    args = list(a.args)
    exec_cmd: list[str] = []
    if a.dash is not None:
        if a.dash == len(args):
            raise bad_args("bad number of arguments (found separator --, but no commands)")
        args, exec_cmd = args[:a.dash], args[a.dash:]
    if env_key:
        if args:
            raise bad_args("bad number of arguments (found conflicting environment key)")
        args = [env_key] + ([env_range] if env_range else [])
    if not args and not exec_cmd:
        raise bad_args(BAD_NUM)
    req = _create(a, args)
    client = Client(a)
    stream = _Stream(client)
    stream.requests.put(req)
    _serve(a, stream, {}, [exec_cmd])
    raise CtlError("watch is canceled by the server", EXIT_INTERRUPTED)


def _interactive(a: Args, env_key: str, env_range: str) -> None:
    client = Client(a)
    stream = _Stream(client)
    pending: list[list[str]] = []
    execs: dict[int, list[str]] = {}
    watch_cmd = Command("watch", "", flags=a.command.flags)

    def read() -> None:
        for line in sys.stdin:
            args = argify(line.rstrip("\n"))
            if not args:
                sys.stderr.write(f"Invalid command: {line.rstrip(chr(10))} (watch and "
                                 "progress supported)\n")
                continue
            if args[0] == "progress":
                stream.requests.put(rpc.WatchRequest(
                    progress_request=rpc.WatchProgressRequest()))
                continue
            if args[0] != "watch":
                sys.stderr.write(f"Invalid command {line.rstrip(chr(10))} (only support "
                                 "watch)\n")
                continue
            if len(args) < 2 and not env_key:
                sys.stderr.write(f"Invalid command {line.rstrip(chr(10))} (command type or "
                                 "key is not provided)\n")
                continue
            try:
                _, wa = parse(watch_cmd, args[1:])
                wargs, cmd = list(wa.args), []
                if wa.dash is not None:
                    if wa.dash == len(wargs):
                        raise bad_args("bad number of arguments (found separator --, but "
                                       "no commands)")
                    wargs, cmd = wargs[:wa.dash], wargs[wa.dash:]
                if env_key:
                    wargs = [env_key] + ([env_range] if env_range else []) + wargs
                req = _create(wa, wargs)
            except CtlError as e:
                if e.code == EXIT_BAD_ARGS and str(e) == BAD_NUM:
                    sys.stderr.write(f"Invalid command {line.rstrip(chr(10))} ({e})\n")
                    continue
                sys.stderr.write(f"Error: {e}\n")
                sys.stdout.flush()
                os._exit(e.code)
            pending.append(cmd)
            stream.requests.put(req)
        sys.stderr.write("Error: Error reading watch request line: EOF\n")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_INVALID_INPUT)

    threading.Thread(target=read, daemon=True).start()
    _serve(a, stream, execs, pending)
    raise CtlError("watch is canceled by the server", EXIT_INTERRUPTED)
