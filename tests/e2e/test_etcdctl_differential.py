"""The same etcdctl 3.4 command sequences against real etcd 3.4 and against petcd:
stdout, stderr and exit codes must match once cluster/member IDs, raft terms, versions,
ports and timestamps are normalized. Each scenario gets a fresh pair of members, so
revisions line up."""

from __future__ import annotations

import re

import pytest

from petcd.testing import Etcdctl, EtcdProcess, PetcdProcess, have_etcd

pytestmark = pytest.mark.skipif(not have_etcd(), reason="etcd/etcdctl 3.4 not installed")

# Both members run with these, so limits can be hit with small requests.
# A tiny compaction batch limit makes petcd spread compactions over several batches.
LIMIT_ARGS = ["--max-txn-ops", "4", "--max-request-bytes", "4096",
              "--experimental-compaction-batch-limit", "2"]

Cmd = tuple[str, ...] | tuple[tuple[str, ...], str]  # args, or (args, stdin)

_NORMALIZE = [
    (re.compile(r'"(cluster_id|member_id|raft_term)":\d+'), r'"\1":N'),
    (re.compile(r'"(ClusterID|MemberID|RaftTerm)" : \d+'), r'"\1" : N'),
    (re.compile(r'"ts":"[^"]*"'), '"ts":T'),
    (re.compile(r'"target":"[^"]*"'), '"target":T'),
    (re.compile(r"127\.0\.0\.1:\d+"), "127.0.0.1:PORT"),
    (re.compile(r"took = [0-9.]+[µmn]?s"), "took = D"),
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
    e = etcd_factory(args=LIMIT_ARGS)  # type: ignore[operator]
    p = petcd_factory(args=LIMIT_ARGS)  # type: ignore[operator]
    assert isinstance(e, EtcdProcess) and isinstance(p, PetcdProcess)
    return Etcdctl(e.endpoint), Etcdctl(p.endpoint)


SEED: list[Cmd] = [
    ("put", "a", "1"), ("put", "b", "2"), ("put", "c", "3"),
    ("put", "foo/1", "x"), ("put", "foo/2", "yy"), ("put", "foo/3", "a"), ("put", "zoo", "z"),
    ("put", "foo/2", "y2"), ("put", "a", "11", "--prev-kv"), ("put", "a", "12", "-w", "json"),
    ("put", "b", "22", "--prev-kv", "-w", "json"), ("put", "b", "23", "-w", "fields"),
]

GETS: list[Cmd] = [
    ("get", "a"), ("get", "a", "-w", "json"), ("get", "a", "-w", "fields"),
    ("get", "nope"), ("get", "nope", "-w", "json"),
    ("get", "a", "c"), ("get", "a", "c", "-w", "json"),
    ("get", "foo/", "--prefix"), ("get", "", "--prefix"), ("get", "b", "--from-key"),
    ("get", "foo/", "--prefix", "--limit", "2"), ("get", "foo/", "--prefix", "--limit", "2",
                                                   "-w", "json"),
    ("get", "--from-key", "", "--limit", "3", "-w", "fields"),
    ("get", "a", "--rev", "2"), ("get", "a", "--rev", "10", "-w", "json"),
    ("get", "foo/", "--prefix", "--rev", "5"),
    ("get", "foo/", "--prefix", "--keys-only"), ("get", "foo/", "--prefix", "--print-value-only"),
    ("get", "foo/", "--prefix", "--count-only", "-w", "json"),
    ("get", "foo/", "--prefix", "--count-only", "-w", "fields"),
    ("get", "a", "--consistency", "s", "-w", "json"),
]
GETS.extend(("get", "", "--prefix", "--sort-by", target, "--order", order)
            for target in ("KEY", "CREATE", "MODIFY", "VALUE", "VERSION")
            for order in ("ASCEND", "DESCEND"))
GETS.append(("get", "foo/", "--prefix", "--order", "DESCEND", "--limit", "2"))
GETS.append(("get", "foo/", "--prefix", "--sort-by", "VALUE", "--limit", "2", "-w", "json"))

PUT_FLAGS: list[Cmd] = [
    ("put", "a", "--ignore-value"), ("get", "a", "-w", "json"),
    ("put", "nokey", "--ignore-value"),
    ("put", "a", "13", "--ignore-lease", "-w", "json"),
    ("put", "nokey", "1", "--ignore-lease"),
    ("put", "a", "1", "--lease", "1234"),
    ("get", "a", "-w", "fields"),
]

DELETES: list[Cmd] = [
    ("del", "a"), ("del", "a"), ("del", "b", "--prev-kv"), ("del", "b", "-w", "json"),
    ("del", "foo/", "--prefix", "--prev-kv", "-w", "json"),
    ("del", "c", "--from-key", "--prev-kv"), ("get", "", "--prefix", "-w", "json"),
    ("put", "d", "1"), ("del", "a", "z", "-w", "fields"),
]

TXNS: list[Cmd] = [
    (("txn",), 'value("a") = "12"\n\nput a ok\nget a\n\nput a bad\n\n'),
    (("txn", "-w", "json"), 'value("a") = "12"\n\nput a ok2\n\nget a\nget b\n\n'),
    (("txn", "-w", "fields"), 'version("a") > "1"\nversion("b") < "100"\n\nget foo/ --prefix\n'
                              'del zoo\n\nput x 1\n\n'),
    (("txn",), 'create("a") = "2"\nmod("a") != "2"\n\nput created yes\n\nput created no\n\n'),
    (("txn", "-w", "json"), 'mod("nope") = "0"\ncreate("nope") = "0"\nversion("nope") = "0"\n'
                            '\nget nope\n\n\n'),
    (("txn", "-w", "json"), 'value("a") > "a"\n\n\ndel foo/ --prefix\nget foo/ --prefix\n\n'),
    (("txn",), '\nput t1 1\nput t2 2\n\n\n'),
    (("txn", "-w", "json"), '\n\n\n'),
    (("txn", "-i"), 'value("a") = "ok2"\n\nput i1 yes\nget i1\n\nput i1 no\n\n'),
    (("txn", "--interactive", "-w", "json"), 'mod("a") > "1000"\n\n\nget a\n\n'),
    ("get", "", "--prefix", "-w", "json"),
]

COMPACTION: list[Cmd] = [
    ("compaction", "5"), ("get", "a", "--rev", "4"), ("get", "a", "--rev", "5"),
    ("compaction", "5"), ("compaction", "3"), ("compaction", "1000"),
    ("compaction", "8", "--physical"), ("get", "foo/", "--prefix", "--rev", "8", "-w", "json"),
    ("get", "foo/", "--prefix", "--rev", "7"), ("get", "a", "--rev", "1000"),
    ("put", "a", "after"), ("get", "a", "-w", "json"),
    (("txn",), '\nget a --rev 3\n\n\n'),
]

BAD_INPUT: list[Cmd] = [
    ("put", "", "x"), ("get", ""), ("del", ""),
    ("put", "big", "x" * 5000),  # over --max-request-bytes 4096
    (("txn",), '\nput t1 1\nput t2 2\nput t3 3\nput t4 4\nput t5 5\n\n\n'),  # > --max-txn-ops
    (("txn",), '\nput t1 1\nput t1 2\n\n\n'),  # duplicate key
    (("txn",), '\nput foo/1 1\ndel foo/ --prefix\n\n\n'),  # put inside a deleted range
    (("txn",), 'value("") = "x"\n\n\n\n'),
    ("get", "", "--prefix", "-w", "json"),  # nothing above changed anything
    ("put", "ok", "still-serving"), ("get", "ok"),
]


@pytest.mark.parametrize("scenario", [
    pytest.param(SEED + GETS, id="get"),
    pytest.param(SEED + PUT_FLAGS, id="put-flags"),
    pytest.param(SEED + DELETES, id="delete"),
    pytest.param(SEED + TXNS, id="txn"),
    pytest.param(SEED + COMPACTION, id="compaction"),
    pytest.param(SEED + BAD_INPUT, id="bad-input"),
])
def test_same_as_etcd(pair: tuple[Etcdctl, Etcdctl], scenario: list[Cmd]) -> None:
    run_both(scenario, *pair)
