"""`petcdctl snapshot save|restore|status`, with etcdctl 3.4's arguments, flags,
messages and exit codes. Files are etcd backend databases (bbolt) plus a sha256 trailer,
from etcd or petcd alike; petcd backend files (LMDB) are still read."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from petcd.cli.config import Config, ConfigError, parse_url
from petcd.cli.ctl.common import (
    EXIT_BAD_ARGS,
    EXIT_ERROR,
    CtlError,
    humanize_bytes,
    render_table,
    to_json,
)
from petcd.server.errors import BootstrapError
from petcd.server.restore import (
    RestoreConfig,
    RestoreError,
    SnapshotStatus,
    restore,
    snapshot_status,
)
from petcd.snapshot.bbolt import BoltError

BOOL_FLAGS = ("skip-hash-check",)


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    snap = subparsers.add_parser("snapshot", parents=[common],
                                 help="Manages etcd node snapshots")
    sub = snap.add_subparsers(dest="snapshot_command", metavar="<subcommand>",
                              parser_class=type(snap))
    snap.set_defaults(run=lambda args: snap.print_help())

    status = sub.add_parser("status", parents=[common],
                            help="Gets backend snapshot status of a given file")
    status.add_argument("filename", nargs="*")
    status.set_defaults(run=run_status)

    rs = sub.add_parser("restore", parents=[common],
                        help="Restores an etcd member snapshot to an etcd directory")
    rs.add_argument("filename", nargs="*")
    rs.add_argument("--data-dir", default="", help="Path to the data directory")
    rs.add_argument("--wal-dir", default="",
                    help="Path to the WAL directory (use --data-dir if none given)")
    rs.add_argument("--initial-cluster", default=None,
                    help="Initial cluster configuration for restore bootstrap")
    rs.add_argument("--initial-cluster-token", default="etcd-cluster",
                    help="Initial cluster token for the etcd cluster during restore bootstrap")
    rs.add_argument("--initial-advertise-peer-urls", default="http://localhost:2380",
                    help="List of this member's peer URLs to advertise to the rest of the "
                         "cluster")
    rs.add_argument("--name", default="default", help="Human-readable name for this member")
    rs.add_argument("--skip-hash-check", action="store_true",
                    help="Ignore snapshot integrity hash value (required if copied from data "
                         "directory)")
    rs.set_defaults(run=run_restore)


def _one_file(args: argparse.Namespace, message: str) -> str:
    if len(args.filename) != 1:
        raise CtlError(message, EXIT_BAD_ARGS)
    path: str = args.filename[0]
    return path


# -- status

def format_status(st: SnapshotStatus, write_out: str) -> str:
    row = [f"{st.hash:x}", str(st.revision), str(st.total_key), humanize_bytes(st.total_size)]
    if write_out == "json":
        return to_json({"hash": st.hash, "revision": st.revision, "totalKey": st.total_key,
                        "totalSize": st.total_size}) + "\n"
    if write_out == "table":
        return render_table(["hash", "revision", "total keys", "total size"], [row])
    if write_out == "fields":
        return (f'"Hash" : {st.hash}\n"Revision" : {st.revision}\n"Keys" : {st.total_key}\n'
                f'"Size" : {st.total_size}\n')
    if write_out == "protobuf":
        raise CtlError("unsupported output format", EXIT_ERROR)
    return ", ".join(row) + "\n"


def run_status(args: argparse.Namespace) -> None:
    path = _one_file(args, "snapshot status requires exactly one argument")
    try:
        st = snapshot_status(path)
    except FileNotFoundError:
        raise CtlError(f"stat {path}: no such file or directory") from None
    except BoltError as e:  # an etcd-format file that is damaged
        raise CtlError(str(e)) from None
    except Exception as e:  # lmdb.Error for anything that is not a backend file
        raise CtlError(f"{path}: not a petcd snapshot ({e})") from None
    sys.stdout.write(format_status(st, args.write_out))


# -- restore

def _urls(text: str) -> tuple[str, ...]:
    try:
        return tuple(sorted({f"{u.scheme}://{u.netloc}"
                             for u in map(parse_url, text.split(",")) if u.netloc}))
    except ValueError as e:
        raise CtlError(str(e)) from None


def run_restore(args: argparse.Namespace) -> None:
    path = _one_file(args, "snapshot restore requires exactly one argument")
    name: str = args.name
    cluster_text = args.initial_cluster
    if cluster_text is None:
        cluster_text = "default=http://localhost:2380"  # etcdctl's, whatever --name says
    cfg = Config()
    cfg.values["initial-cluster"] = cluster_text
    try:
        cluster = {k: tuple(v) for k, v in cfg.initial_cluster_map().items()}
    except ConfigError as e:
        raise CtlError(str(e)) from None
    data_dir = args.data_dir or f"{name}.petcd"
    wal_dir = args.wal_dir
    if wal_dir and os.path.abspath(wal_dir) == os.path.abspath(
            os.path.join(data_dir, "member", "wal")):
        wal_dir = ""  # etcdctl's default spelled out
    try:
        restore(RestoreConfig(
            snapshot_path=path, name=name, data_dir=data_dir, wal_dir=wal_dir,
            initial_cluster=cluster, initial_cluster_token=args.initial_cluster_token,
            peer_urls=_urls(args.initial_advertise_peer_urls),
            skip_hash_check=args.skip_hash_check))
    except FileNotFoundError as e:
        raise CtlError(f"open {e.filename}: no such file or directory") from None
    except (RestoreError, BootstrapError, OSError) as e:
        raise CtlError(str(e)) from None
    print(f"restored snapshot {path} to data dir {data_dir}", file=sys.stderr)


