"""Auth with real etcdctl 3.4, the same command sequences against etcd 3.4 and petcd:
stdout, stderr and exit codes must match (normalized as in tests/e2e). Covers every
Auth RPC etcdctl drives and its errors, the root user and role rules, and RBAC on
keys, ranges, prefixes and from-key permissions for get, put, del and txn."""

from __future__ import annotations

import re

import pytest

from petcd.testing import Etcdctl, EtcdProcess, PetcdProcess, have_etcd

pytestmark = pytest.mark.skipif(not have_etcd(), reason="etcd/etcdctl 3.4 not installed")

# bcrypt's cheapest cost on both, to keep the test quick: hashes never show in output.
ARGS = ["--bcrypt-cost", "4"]

Cmd = tuple[str, ...] | tuple[tuple[str, ...], str]  # args, or (args, stdin)
_NORMALIZE = [
    (re.compile(r'"(cluster_id|member_id|raft_term)":\d+'), r'"\1":N'),
    (re.compile(r'"ts":"[^"]*"'), '"ts":T'),
    (re.compile(r"127\.0\.0\.1:\d+"), "127.0.0.1:PORT"),
    (re.compile(r"client-[0-9a-f-]{36}"), "client-X"),
]


def normalize(text: str) -> str:
    for pattern, repl in _NORMALIZE:
        text = pattern.sub(repl, text)
    return text


def run_both(cmds: list[Cmd], etcd: Etcdctl, petcd: Etcdctl) -> None:
    for cmd in cmds:
        if cmd and isinstance(cmd[0], tuple):
            args, stdin = cmd[0], str(cmd[1])
        else:
            args, stdin = tuple(str(c) for c in cmd), None
        want = etcd(*args, input=stdin)
        got = petcd(*args, input=stdin)
        shown = " ".join(args) + (f" <<< {stdin!r}" if stdin else "")
        assert (got.returncode, normalize(got.stdout), normalize(got.stderr)) == (
            want.returncode, normalize(want.stdout), normalize(want.stderr)), shown


@pytest.fixture
def pair(etcd_factory: object, petcd_factory: object) -> tuple[Etcdctl, Etcdctl]:
    e = etcd_factory(args=ARGS)  # type: ignore[operator]
    p = petcd_factory(args=ARGS)  # type: ignore[operator]
    assert isinstance(e, EtcdProcess) and isinstance(p, PetcdProcess)
    return Etcdctl(e.endpoint), Etcdctl(p.endpoint)


ROOT = ("--user", "root:rootpw")
ALICE = ("--user", "alice:apw")
BOB = ("--user", "bob:bpw")

ENABLE: list[Cmd] = [
    ("auth", "enable"),  # no root user
    ("user", "add", "root:rootpw"),
    ("auth", "enable"),  # root has no root role: etcdctl grants it, then enables
    ("user", "get", "root"),  # anonymous while auth is on
    ("get", "a"),
    ("put", "a", "1"),
    (*ROOT, "put", "a", "1"),
    (*ROOT, "auth", "enable"),  # already enabled: fine
    ("--user", "root:wrong", "get", "a"),
    ("--user", "nobody:x", "get", "a"),
    (*ROOT, "user", "list"), (*ROOT, "role", "list"),
    (*ROOT, "user", "get", "root"), (*ROOT, "role", "get", "root"),
]

USERS_ROLES: list[Cmd] = [
    (*ROOT, "user", "add", "alice:apw"),
    (*ROOT, "user", "add", "alice:other"),  # exists
    (*ROOT, "user", "add", "bob", "--new-user-password", "bpw"),
    (*ROOT, "user", "add", "carol", "--no-password"),
    ("--user", "carol:x", "get", "a"),  # a no-password user cannot log in
    (*ROOT, "role", "add", "rw"), (*ROOT, "role", "add", "rw"),
    (*ROOT, "role", "add", "ro"),
    (*ROOT, "role", "grant-permission", "rw", "readwrite", "foo/", "--prefix"),
    (*ROOT, "role", "grant-permission", "rw", "write", "w1"),
    (*ROOT, "role", "grant-permission", "rw", "read", "r1", "r5"),
    (*ROOT, "role", "grant-permission", "rw", "readwrite", "r5", "r9"),  # adjacent range
    (*ROOT, "role", "grant-permission", "ro", "read", "z", "--from-key"),
    (*ROOT, "role", "grant-permission", "ro", "read", "k"),
    (*ROOT, "role", "grant-permission", "ro", "write", "k"),  # replaces READ on k
    (*ROOT, "role", "grant-permission", "nope", "read", "k"),
    (*ROOT, "role", "get", "rw"), (*ROOT, "role", "get", "ro"), (*ROOT, "role", "get", "nope"),
    (*ROOT, "user", "grant-role", "alice", "rw"),
    (*ROOT, "user", "grant-role", "alice", "rw"),  # again: no change
    (*ROOT, "user", "grant-role", "alice", "nope"),
    (*ROOT, "user", "grant-role", "nobody", "rw"),
    (*ROOT, "user", "grant-role", "bob", "ro"),
    (*ROOT, "user", "get", "alice"), (*ROOT, "user", "get", "alice", "--detail"),
    (*ROOT, "user", "get", "nobody"), (*ROOT, "user", "list"), (*ROOT, "role", "list"),
    # what a user may see about themself and their roles, and no more
    (*ALICE, "user", "get", "alice"), (*ALICE, "user", "get", "bob"),
    (*ALICE, "role", "get", "rw"), (*ALICE, "role", "get", "ro"),
    (*ALICE, "user", "list"), (*ALICE, "role", "list"), (*ALICE, "role", "add", "x"),
    (*ALICE, "user", "add", "eve:x"), (*ALICE, "auth", "disable"),
    (*ALICE, "user", "grant-role", "alice", "root"),
]

RBAC: list[Cmd] = [
    (*ROOT, "put", "foo/1", "v"), (*ROOT, "put", "r3", "v"), (*ROOT, "put", "z1", "v"),
    (*ROOT, "put", "k", "v"), (*ROOT, "put", "other", "v"),
    (*ALICE, "get", "foo/1"), (*ALICE, "put", "foo/2", "x"), (*ALICE, "get", "foo/", "--prefix"),
    (*ALICE, "get", "fo", "--prefix"),  # wider than the permission
    (*ALICE, "del", "foo/", "--prefix"), (*ALICE, "put", "foo/3", "y"),
    (*ALICE, "put", "w1", "x"), (*ALICE, "get", "w1"), (*ALICE, "put", "w1", "y", "--prev-kv"),
    (*ALICE, "get", "r3"), (*ALICE, "put", "r3", "x"), (*ALICE, "put", "r6", "x"),
    (*ALICE, "get", "r1", "r9"),  # two adjacent permissions cover it
    (*ALICE, "get", "r1", "s"), (*ALICE, "get", "r", "r9"),
    (*ALICE, "get", "other"), (*ALICE, "put", "other", "x"), (*ALICE, "del", "other"),
    (*ALICE, "del", "r6", "--prev-kv"), (*ALICE, "del", "w1", "--prev-kv"), (*ALICE, "del", "w1"),
    (*BOB, "get", "z1"), (*BOB, "get", "z", "--from-key"), (*BOB, "get", "y", "--from-key"),
    (*BOB, "get", "", "--from-key"), (*BOB, "put", "z2", "x"), (*BOB, "get", "k"),
    (*BOB, "put", "k", "x"),
    ((*ALICE, "txn"), 'value("foo/1") = "v"\n\nput foo/t yes\nget r3\n\nput foo/t no\n\n'),
    ((*ALICE, "txn"), 'value("other") = "v"\n\nput foo/t yes\n\n\n'),  # compare denied
    ((*ALICE, "txn"), '\n\nput foo/t yes\n\nput other no\n\n'),  # failure branch denied
    ((*ALICE, "txn"), '\n\nget r1 r9\nget foo/ --prefix\n\n\n'),  # read-only txn
    ((*ALICE, "txn"), '\n\nget other\n\n\n'),
    ((*ALICE, "txn"), '\n\ndel foo/ --prefix\n\n\n'),
    (*ROOT, "get", "", "--prefix", "--keys-only"),
]

CHANGES: list[Cmd] = [
    (*ROOT, "role", "revoke-permission", "rw", "foo/", "--prefix"),
    (*ROOT, "role", "revoke-permission", "rw", "foo/", "--prefix"),  # not granted
    (*ROOT, "role", "revoke-permission", "nope", "foo/"),
    (*ALICE, "get", "foo/1"),
    (*ROOT, "user", "revoke-role", "alice", "rw"),
    (*ROOT, "user", "revoke-role", "alice", "rw"),
    (*ROOT, "user", "revoke-role", "nobody", "rw"),
    (*ALICE, "get", "r3"),
    (*ROOT, "user", "grant-role", "alice", "rw"), (*ALICE, "get", "r3"),
    (*ROOT, "role", "delete", "rw"), (*ROOT, "role", "delete", "rw"),
    (*ALICE, "get", "r3"), (*ROOT, "user", "get", "alice"),
    ((*ROOT, "user", "passwd", "alice", "--interactive=false"), "newpw\n"),
    (*ALICE, "get", "r3"), ("--user", "alice:newpw", "get", "r3"),
    ((*ROOT, "user", "passwd", "nobody", "--interactive=false"), "x\n"),
    (*ROOT, "user", "delete", "alice"), (*ROOT, "user", "delete", "alice"),
    ("--user", "alice:newpw", "get", "r3"),
    # root's rules
    (*ROOT, "user", "delete", "root"), (*ROOT, "role", "delete", "root"),
    (*ROOT, "user", "revoke-role", "root", "root"),
    (*ROOT, "user", "grant-role", "bob", "root"), (*BOB, "get", "other"),
    (*BOB, "user", "list"), (*BOB, "user", "revoke-role", "bob", "root"),
    (*BOB, "get", "other"),
    (*ROOT, "auth", "disable"), ("get", "other"), ("auth", "disable"),
    ("user", "list"), ("user", "revoke-role", "root", "root"), ("auth", "enable"),
    ("user", "delete", "root"), ("role", "delete", "ro"), ("role", "list"),
    ("auth", "enable"),
]


def test_users_roles_and_permissions(pair: tuple[Etcdctl, Etcdctl]) -> None:
    run_both(ENABLE + USERS_ROLES + RBAC, *pair)


def test_changes_and_root_rules(pair: tuple[Etcdctl, Etcdctl]) -> None:
    run_both(ENABLE + USERS_ROLES + CHANGES, *pair)
