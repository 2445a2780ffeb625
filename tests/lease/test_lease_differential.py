"""The same etcdctl lease command sequences against real etcd 3.4 and petcd: exit codes,
stdout and stderr must match once IDs, terms and timestamps are normalized.

Server-chosen lease IDs differ between the two, so each `lease grant` output is
captured per side and later commands name the lease as {L1}, {L2}...; the IDs are
replaced by those names in the outputs (hex and decimal forms). Remaining TTLs are
normalized (they depend on timing); test_lease_e2e checks their values."""

from __future__ import annotations

import re
from collections.abc import Sequence

import grpc
import pytest

from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.pb.etcdserverpb import rpc_pb2_grpc as rpc_grpc
from petcd.testing import Etcdctl, MemberProcess, have_etcd

pytestmark = pytest.mark.skipif(not have_etcd(), reason="etcd/etcdctl 3.4 not installed")

_NORMALIZE = [
    (re.compile(r'"(cluster_id|member_id|raft_term)":\d+'), r'"\1":N'),
    (re.compile(r'"ts":"[^"]*"'), '"ts":T'),
    (re.compile(r'"target":"[^"]*"'), '"target":T'),
    (re.compile(r"127\.0\.0\.1:\d+"), "127.0.0.1:PORT"),
    (re.compile(r"remaining\(-?\d+s\)"), "remaining(Rs)"),
    (re.compile(r'"ttl":(?!-1,)-?\d+'), '"ttl":R'),
]
# etcd lists a lease's keys in Go map order (random): compare them as sets.
_KEYS_TEXT = re.compile(r"attached keys\(\[([^]]*)\]\)")
_KEYS_JSON = re.compile(r'"keys":\[([^]]*)\]')
_GRANTED = re.compile(r"lease ([0-9a-f]+) granted with TTL")
_GRANTED_JSON = re.compile(r'"ID":(\d+),')

Cmd = tuple[str, ...] | tuple[tuple[str, ...], str]  # args, or (args, stdin)


class Side:
    def __init__(self, ctl: Etcdctl) -> None:
        self.ctl = ctl
        self.ids: list[int] = []

    def names(self, text: str) -> str:
        for n, lease_id in enumerate(self.ids, 1):
            text = text.replace(f"{{L{n}}}", f"{lease_id:x}")
        return text

    def run(self, args: Sequence[str], stdin: str | None) -> tuple[int, str, str]:
        r = self.ctl(*[self.names(a) for a in args],
                     input=None if stdin is None else self.names(stdin))
        m = _GRANTED.search(r.stdout)
        if m:
            self.ids.append(int(m.group(1), 16))
        m = _GRANTED_JSON.search(r.stdout)
        if m:
            self.ids.append(int(m.group(1)))
        return r.returncode, self.normalize(r.stdout), self.normalize(r.stderr)

    def normalize(self, text: str) -> str:
        for n, lease_id in enumerate(self.ids, 1):
            name = f"{{L{n}}}"
            text = text.replace(f"{lease_id:016x}", name)
            text = text.replace(f"{lease_id:x}", name)
            text = text.replace(str(lease_id), name)
        for pattern, repl in _NORMALIZE:
            text = pattern.sub(repl, text)
        text = _KEYS_TEXT.sub(
            lambda m: "attached keys([" + " ".join(sorted(m.group(1).split(" "))) + "])", text)
        return _KEYS_JSON.sub(
            lambda m: '"keys":[' + ",".join(sorted(m.group(1).split(","))) + "]", text)


def run_both(cmds: list[Cmd], etcd: Etcdctl, petcd: Etcdctl) -> None:
    want_side, got_side = Side(etcd), Side(petcd)
    for cmd in cmds:
        if cmd and isinstance(cmd[0], tuple):
            args, stdin = cmd[0], str(cmd[1])
        else:
            args, stdin = tuple(str(c) for c in cmd), None
        want = want_side.run(args, stdin)
        got = got_side.run(args, stdin)
        shown = " ".join(args) + (f" <<< {stdin!r}" if stdin else "")
        assert got == want, shown


# A 3 s election timeout makes the minimum lease TTL 5 s (4.5 rounded up): checks the
# derivation, and gives short leases room to outlive the command sequence.
ARGS = ["--election-timeout", "3000"]


@pytest.fixture
def pair(etcd_factory: object, petcd_factory: object) -> tuple[Etcdctl, Etcdctl]:
    e: MemberProcess = etcd_factory(args=ARGS)  # type: ignore[operator]
    p: MemberProcess = petcd_factory(args=ARGS)  # type: ignore[operator]
    return Etcdctl(e.endpoint), Etcdctl(p.endpoint)


def test_lease_lifecycle_with_etcdctl(pair: tuple[Etcdctl, Etcdctl]) -> None:
    run_both([
        ("lease", "grant", "100"),
        ("lease", "grant", "300"),
        ("lease", "grant", "1"),  # raised to the minimum TTL
        ("lease", "grant", "-w", "json", "500"),
        ("put", "--lease", "{L1}", "foo", "bar"),
        ("put", "--lease", "{L1}", "foo2", "bar"),
        ("put", "--lease", "{L2}", "baz", "q"),
        ("lease", "timetolive", "{L1}"),
        ("lease", "timetolive", "--keys", "{L1}"),
        ("lease", "timetolive", "--keys", "-w", "json", "{L2}"),
        ("lease", "timetolive", "1234"),
        ("lease", "timetolive", "-w", "json", "1234"),
        ("lease", "list"),
        ("lease", "list", "-w", "json"),
        ("lease", "revoke", "{L3}"),  # before it could expire
        ("lease", "keep-alive", "--once", "{L1}"),
        ("lease", "keep-alive", "--once", "-w", "json", "{L2}"),
        ("lease", "keep-alive", "--once", "1234"),
        ("put", "--lease", "1234", "x", "y"),
        ("put", "--lease", "zz", "x", "y"),
        ("lease", "grant", "9000000001"),
        ("lease", "grant", "9000000000"),
        ("lease", "grant", "abc"),
        ("lease", "revoke", "1234"),
        ("put", "foo2", "detached"),
        ("put", "--lease", "{L2}", "foo", "moved"),
        ("lease", "timetolive", "--keys", "{L1}"),
        ("lease", "timetolive", "--keys", "{L2}"),
        ("get", "--prefix", "-w", "json", "foo"),
        ("lease", "revoke", "{L2}"),
        ("get", "--prefix", "", "--from-key", "-w", "json"),
        ("lease", "revoke", "{L1}"),
        ("lease", "list"),
        ("lease", "timetolive", "{L2}"),
        ("lease", "keep-alive", "--once", "{L2}"),
        ("get", "-w", "json", "foo2"),
    ], *pair)


def test_put_ignore_lease_and_txn_with_leases(pair: tuple[Etcdctl, Etcdctl]) -> None:
    run_both([
        ("lease", "grant", "100"),
        ("put", "--ignore-lease", "k", "v"),
        ("put", "--lease", "{L1}", "k", "v"),
        ("put", "--ignore-lease", "k", "v2"),
        ("lease", "timetolive", "--keys", "{L1}"),
        ("put", "--lease", "{L1}", "--ignore-lease", "k", "v3"),
        (("txn", "-w", "json"), "\nput t1 v --lease=1234\n\n\n"),
        (("txn",), "\nput t1 v --lease={L1}\nput t2 v --lease={L1}\n\n\n"),
        (("txn",), 'value("k") = "nope"\n\nput t3 v --lease=1234\n\nput t4 v\n\n'),
        ("lease", "timetolive", "--keys", "{L1}"),
        ("lease", "revoke", "{L1}"),
        ("get", "--prefix", "", "--from-key", "-w", "json"),
    ], *pair)


def _grpc_outcomes(member: MemberProcess) -> list[str]:
    """Client-chosen IDs and raw gRPC calls: every answer and error, normalized."""
    out: list[str] = []
    with grpc.insecure_channel(member.address) as ch:
        lease, kv = rpc_grpc.LeaseStub(ch), rpc_grpc.KVStub(ch)

        def call(fn: object, req: object) -> None:
            try:
                resp = fn(req, timeout=10)  # type: ignore[operator]
                resp.header.Clear()
                out.append("OK " + str(resp).replace("\n", " "))
            except grpc.RpcError as e:
                out.append(f"ERR {e.code()} {e.details()}")

        for lease_id, ttl in ((5, 30), (5, 30), (-3, 20), (6, 0), (7, -1), (8, 2**40)):
            call(lease.LeaseGrant, rpc.LeaseGrantRequest(ID=lease_id, TTL=ttl))
        call(kv.Put, rpc.PutRequest(key=b"a", lease=5))
        call(kv.Put, rpc.PutRequest(key=b"b", lease=-3))
        call(lease.LeaseTimeToLive, rpc.LeaseTimeToLiveRequest(ID=0))
        call(lease.LeaseTimeToLive, rpc.LeaseTimeToLiveRequest(ID=-3, keys=True))
        keep = lease.LeaseKeepAlive(iter([rpc.LeaseKeepAliveRequest(ID=i)
                                          for i in (5, 0, -3, 999, 6)]), timeout=10)
        out.extend(f"KA {r.ID} {r.TTL} {r.header.revision}" for r in keep)
        for lease_id in (0, -3, 404):
            call(lease.LeaseRevoke, rpc.LeaseRevokeRequest(ID=lease_id))
        call(kv.Range, rpc.RangeRequest(key=b"a", range_end=b"c"))
        ids = [le.ID for le in lease.LeaseLeases(rpc.LeaseLeasesRequest(), timeout=10).leases]
        out.append(f"leases {ids}")
    return [re.sub(r"TTL: (\d+) grantedTTL", "TTL: R grantedTTL", line) for line in out]


def test_grpc_answers_match_etcd(etcd_factory: object, petcd_factory: object) -> None:
    want = _grpc_outcomes(etcd_factory(args=ARGS))  # type: ignore[operator]
    got = _grpc_outcomes(petcd_factory(args=ARGS))  # type: ignore[operator]
    assert got == want
