"""Run etcdctl and petcdctl side by side and compare what they print, once IDs,
ports, times and raft terms are normalised. Protobuf output is compared as parsed
messages with the per-member header fields cleared."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from petcd.testing import SRC_DIR

PETCDCTL = [sys.executable, "-m", "petcd.cli.ctl"]

_NORMALIZE: list[tuple[re.Pattern[str], Any]] = [
    (re.compile(r'"(cluster_id|member_id|raft_term|leader|ID|id)":-?\d+'), r'"\1":N'),
    (re.compile(r'"(ClusterID|MemberID|RaftTerm|ID|Leader)" : -?\d+'), r'"\1" : N'),
    (re.compile(r'"ts":"[^"]*"'), '"ts":T'),
    # capnslog lines (etcd's pkg/flags): local time to the microsecond
    (re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6} ([A-Z]) \|", re.M), r"TS \1 |"),
    (re.compile(r'"target":"[^"]*"'), '"target":T'),
    (re.compile(r"127\.0\.0\.1:\d+"), "127.0.0.1:PORT"),
    (re.compile(r"took = [0-9.]+[µmn]?s|\"took\":\"[^\"]*\"|\"Took\" : \S+"), "took"),
    (re.compile(r"(Member|cluster)\s+[0-9a-f]{1,16}\b"), r"\1 HEX"),  # (%16x: padded)
    (re.compile(r"\b[0-9a-f]{12,16}\b"), "HEX"),
    # member add lists the members in ID order, and IDs are random
    (re.compile(r'ETCD_INITIAL_CLUSTER="([^"]*)"'),
     lambda m: 'ETCD_INITIAL_CLUSTER="' + ",".join(sorted(m.group(1).split(","))) + '"'),
]


_TABLE_LINE = re.compile(r"^[+|].*[+|]$", re.M)


def normalize(text: str) -> str:
    for pattern, repl in _NORMALIZE:
        text = pattern.sub(repl, text)
    # a table's column widths follow its (normalised) values
    return _TABLE_LINE.sub(lambda m: re.sub(r"-+", "-", re.sub(r" +", " ", m.group(0))),
                           text)


@dataclass
class Result:
    rc: int
    out: bytes
    err: str


def run(tool: list[str], endpoint: str, args: list[str], stdin: str | None,
        env: dict[str, str] | None = None, timeout: float = 60) -> Result:
    e = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL")}
    e["PYTHONPATH"] = str(SRC_DIR)
    e.update(env or {})
    p = subprocess.run([*tool, "--endpoints", endpoint, *args], input=(stdin or "").encode(),
                       capture_output=True, env=e, timeout=timeout, check=False)
    return Result(p.returncode, p.stdout, p.stderr.decode("utf-8", "replace"))


def both(etcd_ep: str, petcd_ep: str, args: list[str], stdin: str | None = None,
         env: dict[str, str] | None = None, *, petcdctl_on: str = "petcd"
         ) -> tuple[Result, Result]:
    """etcdctl against etcd and petcdctl against petcd (or against etcd too),
    concurrently."""
    target = petcd_ep if petcdctl_on == "petcd" else etcd_ep
    with ThreadPoolExecutor(2) as pool:
        want = pool.submit(run, ["etcdctl"], etcd_ep, args, stdin, env)
        got = pool.submit(run, PETCDCTL, target, args, stdin, env)
        return want.result(), got.result()


def pb_normal(data: bytes, cls: Any) -> str:
    msg = cls.FromString(data)
    if msg.DESCRIPTOR.name == "ResponseHeader":  # clientv3's lease structs print only it
        msg.cluster_id = msg.member_id = msg.raft_term = 0
    _clear_headers(msg)
    return str(msg)


def _clear_headers(msg: Any) -> None:
    for fd, value in msg.ListFields():
        if fd.name == "header":
            value.cluster_id = value.member_id = value.raft_term = 0
        elif fd.name in ("ID", "leader") and isinstance(value, int):
            setattr(msg, fd.name, 0)
        elif fd.type == fd.TYPE_MESSAGE:
            for v in (value if fd.is_repeated else [value]):
                _clear_headers(v)


def assert_same(args: list[str], want: Result, got: Result, pb: Any = None) -> None:
    shown = " ".join(args)
    if pb is not None and want.rc == 0:
        assert got.rc == 0, (shown, got.err)
        assert normalize(pb_normal(got.out, pb)) == normalize(pb_normal(want.out, pb)), shown
        return
    w = (want.rc, normalize(want.out.decode("utf-8", "replace")), normalize(want.err))
    g = (got.rc, normalize(got.out.decode("utf-8", "replace")), normalize(got.err))
    assert g == w, shown
