"""The same commands through etcdctl 3.4 against etcd 3.4 and through petcdctl against
petcd: stdout, stderr and exit codes must match once IDs, ports, times and terms are
normalised. One etcd and one petcd for the whole module; the steps run in order on
both, so revisions line up. Auth commands run petcdctl against etcd as well (and
against petcd where it serves the Auth service)."""

from __future__ import annotations

from typing import Any

import pytest

from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.testing import MemberProcess, have_etcd

from .harness import assert_same, both

pytestmark = pytest.mark.skipif(not have_etcd(), reason="etcd/etcdctl 3.4 not installed")

FORMATS = ("simple", "json", "fields", "protobuf", "table")

# (args, stdin, protobuf message type)
Step = tuple[list[str], str | None, Any]


def _fmt(args: str, pb: Any = None, stdin: str | None = None) -> list[Step]:
    """The command in every output format."""
    return [([*args.split(), "-w", f], stdin, pb if f == "protobuf" else None)
            for f in FORMATS]


TXN = ('value("k1") = "v1"\n\nput k2 "two words"\nget k1\n\ndel k1\nput k3 x\n\n')
TXN_BAD = 'bogus("k1") = "v1"\n\n\n'
STEPS: list[Step] = [
    (["put", "k1", "v1"], None, None),
    (["put", "k2", "v2", "--prev-kv"], None, None),
    (["put", "k3"], "from stdin", None),
    (["put", "k4"], None, None),
    (["put", "k5", "v", "--lease=zz"], None, None),
    (["put", "k5", "v", "--lease=1234"], None, None),
    (["put", "k1", "--ignore-value"], None, None),
    (["put", "k1", "x", "--ignore-value"], None, None),
    (["put", "\x01bin\xff", "\t\"q\""], None, None),
    *_fmt("put k1 v1b --prev-kv", rpc.PutResponse),
    *_fmt("get k1", rpc.RangeResponse),
    *_fmt("get k --prefix --limit 2 --order DESCEND --sort-by MODIFY", rpc.RangeResponse),
    *_fmt("get k2 --rev 2", rpc.RangeResponse),
    (["get", "", "--prefix", "--keys-only"], None, None),
    (["get", "k1", "--print-value-only"], None, None),
    (["get", "k1", "--print-value-only", "-w", "json"], None, None),
    (["get", "k", "--from-key", "--hex"], None, None),
    (["get", "\x01bin\xff", "-w", "fields"], None, None),
    (["get", "k1", "--consistency", "s"], None, None),
    (["get", "k1", "--consistency", "x"], None, None),
    (["get", "k1", "--order", "sideways"], None, None),
    (["get", "k1", "--sort-by", "colour"], None, None),
    (["get"], None, None),
    (["get", "a", "b", "--prefix"], None, None),
    (["get", "a", "--prefix", "--from-key"], None, None),
    (["get", "k1", "--rev", "1000"], None, None),
    (["get", "k1", "--nope"], None, None),
    *_fmt("txn", rpc.TxnResponse, TXN),
    (["txn", "-i"], TXN, None),
    (["txn"], TXN_BAD, None),
    (["txn"], 'value("k1") = "v1"\n', None),
    (["txn", "extra"], "", None),
    *_fmt("del k3 --prev-kv", rpc.DeleteRangeResponse),
    (["del", "k", "--prefix"], None, None),
    (["del"], None, None),
    (["del", "a", "b", "c"], None, None),
    (["compaction", "3"], None, None),
    (["compaction", "1"], None, None),
    (["compaction", "x"], None, None),
    (["compaction"], None, None),
    (["get", "k2", "--rev", "2"], None, None),
    *_fmt("lease timetolive 1234", rpc.ResponseHeader),
    (["lease", "revoke", "1234"], None, None),
    (["lease", "revoke", "xyz"], None, None),
    (["lease", "grant"], None, None),
    (["lease", "grant", "abc"], None, None),
    (["lease", "keep-alive", "--once", "1234"], None, None),
    *_fmt("member list", rpc.MemberListResponse),
    (["member", "add"], None, None),
    (["member", "add", "x", "http://127.0.0.1:1"], None, None),
    (["member", "add", "x"], None, None),
    (["member", "remove", "zz"], None, None),
    (["member", "remove", "1234"], None, None),
    (["member", "update", "1234", "--peer-urls", "http://127.0.0.1:1"], None, None),
    (["member", "promote", "1234"], None, None),
    # (not -w fields: with no alarm etcd answers without a header and etcdctl 3.4 panics)
    *[s for s in _fmt("alarm list", rpc.AlarmResponse) if "fields" not in s[0]],
    (["alarm", "disarm"], None, None),
    (["alarm", "list", "extra"], None, None),
    (["defrag"], None, None),
    (["move-leader", "1"], None, None),
    (["move-leader", "zz"], None, None),
    (["version"], None, None),
    (["lock"], None, None),
    (["lock", "L", "--", "sh", "-c", "echo $ETCD_LOCK_KEY $ETCD_LOCK_REV"], None, None),
    (["lock", "L", "sh", "-c", "exit 3"], None, None),
    (["elect", "E"], None, None),
    (["elect", "-l", "E", "p"], None, None),
    (["elect", "a", "b", "c"], None, None),
    (["watch"], None, None),
    (["watch", "k", "--"], None, None),
    (["watch", "a", "b", "--prefix"], None, None),
    (["make-mirror"], None, None),
    (["user", "add"], None, None),
    (["role", "grant-permission", "r"], None, None),
    (["endpoint", "health", "-w", "fields"], None, None),
]


@pytest.fixture(scope="module")
def pair(etcd: MemberProcess, petcd: MemberProcess) -> tuple[str, str]:
    return etcd.address, petcd.address


# The default suite's share: every output format once, the txn forms, the exec form
# of lock and the common mistakes (the rest under `slow`: petcdctl's start-up costs
# about half a second a step on a loaded machine).
QUICK: list[Step] = [
    (["put", "k1", "v1"], None, None),
    (["put", "k3"], "from stdin", None),
    *_fmt("get k1", rpc.RangeResponse),
    (["get", "k", "--prefix", "--hex", "--limit", "1"], None, None),
    (["get", "k1", "--order", "sideways"], None, None),
    (["get"], None, None),
    (["txn", "-w", "fields"], TXN, None),
    (["txn", "-i"], TXN, None),
    (["txn"], TXN_BAD, None),
    (["del", "k", "--prefix", "--prev-kv", "-w", "json"], None, None),
    (["lease", "timetolive", "1234"], None, None),
    (["member", "add", "x"], None, None),
    (["compaction", "x"], None, None),
    (["lock", "L", "--", "sh", "-c", "echo $ETCD_LOCK_KEY $ETCD_LOCK_REV"], None, None),
    (["elect", "E"], None, None),
    (["watch", "k", "--"], None, None),
]


def test_quick_steps_match_etcdctl(pair: tuple[str, str]) -> None:
    etcd_ep, petcd_ep = pair
    for args, stdin, pb in QUICK:
        want, got = both(etcd_ep, petcd_ep, [a.replace("k", "q") if a.startswith("k") else a
                                             for a in args],
                          stdin.replace('"k', '"q') if stdin else None)
        assert_same(args, want, got, pb)


CHUNK = 25


@pytest.mark.slow
@pytest.mark.parametrize("chunk", range(0, len(STEPS), CHUNK))
def test_steps_match_etcdctl(pair: tuple[str, str], chunk: int) -> None:
    """In chunks (the per-test timeout); both servers see the same sequence."""
    etcd_ep, petcd_ep = pair
    for args, stdin, pb in STEPS[chunk:chunk + CHUNK]:
        want, got = both(etcd_ep, petcd_ep, args, stdin)
        assert_same(args, want, got, pb)


# Member changes on a single-voter cluster: a learner leaves the quorum alone.
def test_member_learner_lifecycle(pair: tuple[str, str]) -> None:
    etcd_ep, petcd_ep = pair
    urls = ("http://127.0.0.1:1", "http://127.0.0.1:2")
    from .harness import normalize
    for args in (["member", "add", "ln", f"--peer-urls={urls[0]}", "--learner"],
                 ["member", "list", "-w", "table"]):
        want, got = both(etcd_ep, petcd_ep, list(args))
        if "table" in args:  # rows in member ID order; IDs are random
            assert sorted(normalize(got.out.decode()).splitlines()) == sorted(
                normalize(want.out.decode()).splitlines())
            continue
        assert_same(list(args), want, got)
    from .harness import PETCDCTL, run
    ids = {}
    for name, ep in (("etcd", etcd_ep), ("petcd", petcd_ep)):
        listed = run(PETCDCTL, ep, ["member", "list"], None).out.decode()
        ids[name] = next(line.split(",")[0] for line in listed.splitlines()
                         if "unstarted" in line)
    for tmpl in (["member", "update", "{}", f"--peer-urls={urls[1]}"],
                 ["member", "promote", "{}"], ["member", "remove", "{}"],
                 ["member", "remove", "{}"]):
        # (each tool against its own server: the member IDs may differ, or coincide)
        want = run(["etcdctl"], etcd_ep, [a.format(ids["etcd"]) for a in tmpl], None)
        got = run(PETCDCTL, petcd_ep, [a.format(ids["petcd"]) for a in tmpl], None)
        assert_same(tmpl, want, got)


def test_endpoint_commands(pair: tuple[str, str]) -> None:
    """Status and hash values differ between the servers (versions, sizes, indexes):
    the shape must not."""
    etcd_ep, petcd_ep = pair
    import re
    digits = re.compile(r"\d+(\.\d+)?( [kMG]?B)?")
    for args in (["endpoint", "health"], ["endpoint", "health", "--cluster", "-w", "json"],
                 ["endpoint", "status", "-w", "table"], ["endpoint", "status"],
                 ["endpoint", "hashkv", "--cluster"], ["endpoint", "hashkv", "-w", "json"],
                 ["endpoint", "status", "-w", "fields"]):
        want, got = both(etcd_ep, petcd_ep, args)
        # (any run of 6+ hex digits: a decimal cluster ID of 16 digits or fewer would
        # otherwise count as an ID on one server and as a number on the other)
        hexid = re.compile(r"\b[0-9a-f]{6,}\b")
        # (how long a probe took: its unit too, 900µs on one and 1.2ms on the other)
        took = re.compile(r'took = [0-9.]+[µmn]?s|"took":"[^"]*"')
        w = digits.sub("D", hexid.sub("X", took.sub("took", want.out.decode() + want.err)))
        g = digits.sub("D", hexid.sub("X", took.sub("took", got.out.decode() + got.err)))
        # (tables: column widths follow the values)
        w = re.sub(r"-+| +", "_", w)
        g = re.sub(r"-+| +", "_", g)
        assert (got.rc, g) == (want.rc, w), args


AUTH_STEPS = [
    "role add r1", "role add r1", "role grant-permission r1 readwrite foo --prefix",
    "role grant-permission r1 read a z", "role grant-permission r1 write k --from-key",
    "role grant-permission r1 bogus a", "role get r1", "role get r1 -w fields",
    "role get r1 -w json", "role list", "role list -w fields",
    "user add u1 --new-user-password=x", "user add u2:pw", "user add :pw",
    "user grant-role u1 r1", "user get u1", "user get u1 --detail", "user list -w json",
    "user get nobody", "role revoke-permission r1 foo --prefix",
    "role revoke-permission r1 a z", "role revoke-permission r1 k --from-key",
    "user revoke-role u1 r1 -w fields", "user add root --new-user-password=r",
    "auth enable", "get foo", "--user root:wrong get foo", "--user root:r auth disable",
    "role delete r1", "user delete u1 -w json", "user delete u2", "user delete root",
    "role delete root", "role get nobody",
]


@pytest.mark.slow
@pytest.mark.parametrize("server", ["etcd", "petcd"])
def test_auth_commands(etcd_factory: Any, petcd_factory: Any, server: str) -> None:
    """etcdctl against a fresh etcd, petcdctl against a fresh etcd or petcd, step by
    step."""
    a = etcd_factory()
    b = etcd_factory() if server == "etcd" else petcd_factory()
    for line in AUTH_STEPS:
        args = line.split()
        from .harness import PETCDCTL, run
        want = run(["etcdctl"], a.address, args, None)
        got = run(PETCDCTL, b.address, args, None)
        assert_same(args, want, got)


def _stream(tool: list[str], endpoint: str, args: list[str], until: bytes,
            stdin: str | None = None) -> tuple[str, str, int | None]:
    """Run a long-lived command until it printed `until` (or 60 s), then end it
    (closing its stdin first when it reads one)."""
    import os
    import subprocess
    import time

    from petcd.testing import SRC_DIR
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL")}
    env["PYTHONPATH"] = str(SRC_DIR)
    p = subprocess.Popen([*tool, "--endpoints", endpoint, *args], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert p.stdin is not None and p.stdout is not None
    if stdin:
        p.stdin.write(stdin.encode())
        p.stdin.flush()
    got: list[bytes] = []
    deadline = time.monotonic() + 60
    os.set_blocking(p.stdout.fileno(), False)
    buf = b""
    while until not in buf and time.monotonic() < deadline:
        chunk = p.stdout.read()
        if chunk:
            buf += chunk
        else:
            time.sleep(0.05)
    got.append(buf)
    rc = None
    if stdin is not None:
        p.stdin.close()
        rc = p.wait(30)
    else:
        p.terminate()
        p.wait(30)
    os.set_blocking(p.stdout.fileno(), True)
    rest = p.stdout.read()
    err = p.stderr.read().decode() if p.stderr else ""
    return (buf + rest).decode(), err, rc


def test_watch_forms(pair: tuple[str, str]) -> None:
    """History from --rev in every form: plain (json, fields, simple --prev-kv), exec and
    interactive; the servers hold the same history, so the output must be the same."""
    from .harness import PETCDCTL, normalize, run
    etcd_ep, petcd_ep = pair
    revs = []
    for ep in (etcd_ep, petcd_ep):
        start = run(["etcdctl"], ep, ["put", "w/a", "1", "-w", "json"], None).out.decode()
        run(["etcdctl"], ep, ["put", "w/b", "2"], None)
        run(["etcdctl"], ep, ["put", "w/a", "3"], None)
        run(["etcdctl"], ep, ["del", "w/b"], None)
        import json
        revs.append(json.loads(start)["header"]["revision"])
    cases = [
        (["watch", "w/", "--prefix", "--rev", "{}", "--prev-kv"], b"DELETE", None),
        (["watch", "w/a", "--rev", "{}", "-w", "json"], b'"Mw=="', None),
        (["watch", "w/", "--prefix", "--rev", "{}", "-w", "fields"], b"DELETE", None),
        (["watch", "w/", "--prefix", "--rev", "{}", "--", "sh", "-c",
          "echo $ETCD_WATCH_EVENT_TYPE $ETCD_WATCH_KEY $ETCD_WATCH_VALUE"],
         b'"DELETE" "w/b"', None),
        (["watch", "-i"], b"DELETE", "watch w/ --prefix --rev {}\n"),
    ]
    for args, until, stdin in cases:
        outs = []
        for tool, ep, rev in ((["etcdctl"], etcd_ep, revs[0]), (PETCDCTL, petcd_ep, revs[1])):
            a = [x.format(rev) for x in args]
            outs.append(_stream(tool, ep, a, until, stdin.format(rev) if stdin else None))
        (wo, we, wrc), (go, ge, grc) = outs
        assert (grc, normalize(go), normalize(ge) if stdin else "") == (
            wrc, normalize(wo), normalize(we) if stdin else ""), args


def test_elect_and_lock_hold(pair: tuple[str, str]) -> None:
    """A campaigner and a lock holder that wait for a signal, and an observer: the same
    output from both tools, and SIGTERM resigns / unlocks (exit 0)."""
    import os
    import signal
    import subprocess
    import time

    from petcd.testing import SRC_DIR

    from .harness import PETCDCTL, normalize
    etcd_ep, petcd_ep = pair
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL")}
    env["PYTHONPATH"] = str(SRC_DIR)
    results = []
    for tool, ep in ((["etcdctl"], etcd_ep), (PETCDCTL, petcd_ep)):
        holders = []
        for args in (["elect", "el", "v1"], ["lock", "lk"]):
            # unbuffered: communicate() below must see everything readline() did not take
            p = subprocess.Popen([*tool, "--endpoints", ep, *args], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, env=env, bufsize=0)
            assert p.stdout is not None
            first = p.stdout.readline()  # the key: held / elected
            holders.append((p, first))
        observed = _stream(tool, ep, ["elect", "-l", "el"], b"v1")[0]
        outs = []
        for p, first in holders:
            p.send_signal(signal.SIGTERM)
            rest, err = p.communicate(timeout=30)
            outs.append((p.returncode, normalize((first + rest).decode()), err.decode()))
        deadline = time.monotonic() + 10
        # resigned and unlocked: the keys are gone
        from .harness import run
        while run(["etcdctl"], ep, ["get", "--prefix", "el/", "--count-only"],
                  None).out.decode().count("Count") and time.monotonic() < deadline:
            time.sleep(0.1)
        left = run(["etcdctl"], ep, ["get", "--prefix", "lk/", "--keys-only"], None).out
        results.append((normalize(observed), outs, left))
    assert results[1] == results[0]
    assert results[0][2] == b""


HELP = ["", "get", "put", "txn", "watch", "lease", "lease grant", "lease revoke",
        "lease timetolive", "lease list", "lease keep-alive", "member", "member add",
        "member remove", "member update", "member list", "member promote", "endpoint",
        "endpoint health", "endpoint status", "endpoint hashkv", "alarm", "alarm disarm",
        "alarm list", "defrag", "snapshot", "snapshot save", "snapshot restore",
        "snapshot status", "move-leader", "lock", "elect", "auth", "auth enable",
        "auth disable", "user", "user add", "user delete", "user get", "user list",
        "user passwd", "user grant-role", "user revoke-role", "role", "role add",
        "role delete", "role get", "role list", "role grant-permission",
        "role revoke-permission", "check", "check perf", "check datascale", "make-mirror",
        "version", "migrate", "del", "compaction"]


@pytest.mark.parametrize("command", [
    "", "put", "endpoint hashkv", "role grant-permission",
    pytest.param("*", marks=pytest.mark.slow)])
def test_help_matches_etcdctl(command: str) -> None:
    """`--help` of every command, byte for byte (no server needed)."""
    from .harness import PETCDCTL, run
    for c in HELP if command == "*" else [command]:
        args = [*c.split(), "--help"]
        want = run(["etcdctl"], "127.0.0.1:1", args, None)
        got = run(PETCDCTL, "127.0.0.1:1", args, None)
        assert (got.rc, got.out, got.err) == (want.rc, want.out, want.err), c
