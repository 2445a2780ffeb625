"""`petcdctl snapshot save`: etcdctl 3.4's, through petcdctl's own connection (so TLS,
--insecure-skip-tls-verify and --user work as for every other command), with the log
lines etcdctl's snapshot manager and clientv3 write on stderr around the download."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from typing import Any

from petcd.cli.ctl.cmd import Args
from petcd.cli.ctl.common import EXIT_BAD_ARGS, EXIT_INTERRUPTED, CtlError, humanize_bytes


def _log(caller: str, msg: str, *, iso: bool = False, **fields: Any) -> None:
    """A zap production line: the snapshot manager's logger stamps epoch seconds,
    clientv3's an ISO time."""
    now = time.time()
    if iso:
        ts: Any = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + \
            f".{int(now * 1000) % 1000:03d}Z"
    else:
        ts = now
    line = {"level": "info", "ts": ts, "caller": caller, "msg": msg, **fields}
    sys.stderr.write(json.dumps(line, separators=(",", ":")) + "\n")
    sys.stderr.flush()


def _os_error(e: OSError) -> str:
    why = os.strerror(e.errno) if e.errno else str(e)
    return why[:1].lower() + why[1:]


def run_save(a: Args) -> None:
    import grpc

    from petcd.cli.ctl.client import Client, go_code
    from petcd.pb.etcdserverpb import rpc_pb2 as rpc
    from petcd.server.restore import has_checksum

    if len(a.args) != 1:
        raise CtlError("snapshot save expects one argument", EXIT_BAD_ARGS)
    path = a.args[0]
    c = Client(a)
    if len(a.endpoints) != 1:
        raise CtlError("snapshot must be requested to one selected node, not multiple "
                       f"[{' '.join(a.endpoints)}]", EXIT_INTERRUPTED)
    # no deadline unless --command-timeout (or its variable) was given, as etcdctl
    timed = "command-timeout" in a.given or bool(os.environ.get("ETCDCTL_COMMAND_TIMEOUT"))
    try:
        ch = c.channel()
    except CtlError as e:
        raise CtlError(str(e), EXIT_INTERRUPTED) from None
    part = path + ".part"
    try:
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as e:
        raise CtlError(f"could not open {part} (open {part}: {_os_error(e)})",
                       EXIT_INTERRUPTED) from None
    try:
        _log("snapshot/v3_snapshot.go:119", "created temporary db file", path=part)
        started = time.monotonic()
        call = ch.unary_stream("/etcdserverpb.Maintenance/Snapshot",
                               request_serializer=rpc.SnapshotRequest.SerializeToString,
                               response_deserializer=rpc.SnapshotResponse.FromString)
        stream = call(rpc.SnapshotRequest(), timeout=c.command_timeout if timed else None,
                      metadata=tuple(c.metadata) or None)
        _log("clientv3/maintenance.go:200", "opened snapshot stream; downloading", iso=True)
        _log("snapshot/v3_snapshot.go:127", "fetching snapshot", endpoint=a.endpoints[0])
        size = 0
        with os.fdopen(fd, "wb") as f:
            try:
                for resp in stream:
                    f.write(resp.blob)
                    size += len(resp.blob)
            except grpc.RpcError as e:
                code = e.code()  # type: ignore[attr-defined]
                details = e.details()  # type: ignore[attr-defined]
                if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                    details = "context deadline exceeded"
                raise CtlError(f"rpc error: code = {go_code(code)} desc = {details}",
                               EXIT_INTERRUPTED) from None
            _log("clientv3/maintenance.go:208", "completed snapshot read; closing", iso=True)
            if not has_checksum(size):
                raise CtlError(f"sha256 checksum not found [bytes: {size}]",
                               EXIT_INTERRUPTED)
            f.flush()
            os.fsync(f.fileno())
        _log("snapshot/v3_snapshot.go:142", "fetched snapshot", endpoint=a.endpoints[0],
             size=humanize_bytes(size), took=round(time.monotonic() - started, 9))
        try:
            os.rename(part, path)
        except OSError as e:
            raise CtlError(f"could not rename {part} to {path} (rename {part} {path}: "
                           f"{_os_error(e)})", EXIT_INTERRUPTED) from None
        _log("snapshot/v3_snapshot.go:152", "saved", path=path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(part)
    print(f"Snapshot saved at {path}")
