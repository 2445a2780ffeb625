"""The v2 keys API against real etcd 3.4 (--enable-v2=true): the same requests to both,
answers compared after normalisation (tests/v2/client.py): status, headers, JSON body.
Every verb and option of /v2/keys, every error code, TTL expiry and refresh, waits
with and without waitIndex, the 1000-event history, /v2/members, /v2/machines, /v2/stats,
and what both answer without --enable-v2."""

from __future__ import annotations

import concurrent.futures
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from petcd.testing import EtcdProcess, MemberProcess, PetcdProcess, have_etcd

from .client import LongPoll, Norm, Resp, call, index

pytestmark = pytest.mark.skipif(not have_etcd(), reason="etcd 3.4 not installed")

V2 = ["--enable-v2=true"]


class Pair:
    def __init__(self, etcd: MemberProcess, petcd: MemberProcess) -> None:
        self.urls = [etcd.endpoint, petcd.endpoint]
        self.norms = [Norm(0), Norm(0)]

    def rebase(self) -> None:
        for url, n in zip(self.urls, self.norms, strict=True):
            n.base = index(url)

    def both(self, method: str, path: str, body: str | None = None, **kw: Any) -> list[Resp]:
        return [call(url, method, path, body, **kw) for url in self.urls]

    def same(self, method: str, path: str, body: str | None = None, *, ttl: bool = False,
             **kw: Any) -> Any:
        """`path` may hold {N}: index N after each member's base (e.g. waitIndex={1})."""
        want, got = (call(url, method, _at(path, n.base), body, **kw)
                     for url, n in zip(self.urls, self.norms, strict=True))
        w = self.norms[0].resp(want, ttl)
        g = self.norms[1].resp(got, ttl)
        assert g == w, f"{method} {path} {body!r}:\n etcd  {want}\n petcd {got}"
        return w

    def idx(self, i: int, rel: int) -> int:
        """The absolute store index `rel` after the base of member i."""
        return self.norms[i].base + rel


def _at(path: str, base: int) -> str:
    return re.sub(r"\{(\d+)\}", lambda m: str(base + int(m.group(1))), path)


def _start(proc: MemberProcess) -> MemberProcess:
    try:
        proc.start()
    except Exception:
        proc.kill()
        raise
    return proc


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    base: Path = tmp_path_factory.mktemp("v2diff")
    procs: list[MemberProcess] = []
    try:
        procs.append(_start(EtcdProcess(base / "etcd", args=V2)))
        procs.append(_start(PetcdProcess(base / "petcd", args=V2)))
        yield Pair(procs[0], procs[1])
    finally:
        for p in procs:
            p.kill()


@pytest.fixture
def p(pair: Pair) -> Pair:
    pair.rebase()
    return pair


# -- every verb and option -----------------------------------------------------------
STEPS: list[tuple[str, str, str | None]] = [
    ("GET", "/v2/keys/", None),
    ("GET", "/v2/keys", None),
    ("PUT", "/v2/keys/b/k1", "value=v1"),
    ("PUT", "/v2/keys/b/k1?value=fromquery", None),
    ("PUT", "/v2/keys/b/k1?value=q", "value=bodywins"),
    ("GET", "/v2/keys/b/k1", None),
    ("GET", "/v2/keys/b/k1?wait=true&quorum=true", None),
    ("HEAD", "/v2/keys/b/k1?quorum=true", None),
    ("HEAD", "/v2/keys/b/k1", None),
    ("GET", "/v2/keys/b/nope", None),
    ("GET", "/v2/keys/b/k1/x", None),
    ("PUT", "/v2/keys/b/k1/x", "value=v"),
    ("PUT", "/v2/keys/b/new", "value=n&prevExist=false"),
    ("PUT", "/v2/keys/b/new", "value=n2&prevExist=false"),
    ("PUT", "/v2/keys/b/new", "value=n3&prevExist=true"),
    ("PUT", "/v2/keys/b/none", "value=n3&prevExist=true"),
    ("PUT", "/v2/keys/b/new", "value=n4&prevValue=n3"),
    ("PUT", "/v2/keys/b/new", "value=n5&prevValue=wrong"),
    ("PUT", "/v2/keys/b/new", "value=n5&prevValue=n4&prevExist=true"),
    ("PUT", "/v2/keys/b/new", "value=n6&prevValue=wrong&prevExist=true"),
    ("PUT", "/v2/keys/b/none", "value=x&prevValue=wrong"),
    ("PUT", "/v2/keys/b/d1", "dir=true"),
    ("PUT", "/v2/keys/b/d1", "dir=true"),
    ("PUT", "/v2/keys/b/d1", "value=x"),
    ("PUT", "/v2/keys/b/d1", "value=x&prevValue=y"),
    ("PUT", "/v2/keys/b/d1", "ttl=100&prevExist=true"),
    ("PUT", "/v2/keys/b/d1", "value=x&prevExist=true"),
    ("PUT", "/v2/keys/b/d1/f", "value=in%20dir&ttl=50"),
    ("PUT", "/v2/keys/b/d1/f", "value=permanent-again&prevExist=true"),
    ("PUT", "/v2/keys/b/d1/_hidden", "value=h"),
    ("GET", "/v2/keys/b/d1/_hidden", None),
    ("GET", "/v2/keys/b?recursive=true&sorted=true", None),
    ("GET", "/v2/keys/b/d1?sorted=true", None),
    ("GET", "/v2/keys/b?sorted=true", None),
    ("GET", "/v2/keys/b?recursive=true&sorted=true&quorum=true", None),
    ("GET", "/v2/keys/b/nope?quorum=true", None),
    ("PUT", "/v2/keys/b/nv", "value=quiet&noValueOnSuccess=true"),
    ("DELETE", "/v2/keys/b/nv?noValueOnSuccess=true", None),
    ("POST", "/v2/keys/b/queue", "value=first"),
    ("POST", "/v2/keys/b/queue", "value=second&ttl=100"),
    ("POST", "/v2/keys/b/queue", "dir=true"),
    ("GET", "/v2/keys/b/queue?recursive=true&sorted=true", None),
    ("POST", "/v2/keys/b/k1", "value=x"),
    ("DELETE", "/v2/keys/b/d1", None),
    ("DELETE", "/v2/keys/b/d1?dir=true", None),
    ("PUT", "/v2/keys/b/empty", "dir=true"),
    ("DELETE", "/v2/keys/b/empty?dir=true", None),
    ("DELETE", "/v2/keys/b/d1?recursive=true", None),
    ("DELETE", "/v2/keys/b/k1?prevValue=wrong", None),
    ("DELETE", "/v2/keys/b/k1?prevValue=bodywins", None),
    ("DELETE", "/v2/keys/b/new?dir=true", None),
    ("DELETE", "/v2/keys/b/nope", None),
    ("DELETE", "/v2/keys/b/queue?prevValue=x", None),
    ("PUT", "/v2/keys/", "value=1"),
    ("POST", "/v2/keys/", "value=1"),
    ("DELETE", "/v2/keys/?recursive=true", None),
    ("PUT", "/v2/keys/", "dir=true&prevExist=true&ttl=5"),
    ("PUT", "/v2/keys/", "prevValue=x&value=y"),
    ("PATCH", "/v2/keys/b", None),
    ("PUT", "/v2/keys/b/x", "wait=true"),
    ("PUT", "/v2/keys/b/x", "value=1&ttl=abc"),
    ("PUT", "/v2/keys/b/x", "value=1&ttl=-1"),
    ("PUT", "/v2/keys/b/x", "value=1&ttl="),
    ("PUT", "/v2/keys/b/x", "value=1&prevIndex=x"),
    ("GET", "/v2/keys/b/x?wait=true&waitIndex=-2", None),
    ("GET", "/v2/keys/b/x?recursive=maybe", None),
    ("GET", "/v2/keys/b/x?sorted=2", None),
    ("PUT", "/v2/keys/b/x", "value=1&dir=nope"),
    ("GET", "/v2/keys/b/x?quorum=yes", None),
    ("GET", "/v2/keys/b/x?stream=y", None),
    ("PUT", "/v2/keys/b/x", "value=1&noValueOnSuccess=y"),
    ("PUT", "/v2/keys/b/x", "value=1&prevExist=maybe"),
    ("PUT", "/v2/keys/b/x", "value=1&prevValue="),
    ("PUT", "/v2/keys/b/x", "value=1&refresh=maybe"),
    ("PUT", "/v2/keys/b/x", "value=1&refresh=true&ttl=5"),
    ("PUT", "/v2/keys/b/x", "refresh=true"),
    ("PUT", "/v2/keys/b/x", "refresh=true&ttl=500"),
    ("PUT", "/v2/keys/b/x", "value=%zz"),
    ("PUT", "/v2/keys/b/x?value=%2", None),
    ("PUT", "/v2/keys/b/sp%20ace", "value=%E2%9C%93+%3Ctag%3E%26"),
    ("GET", "/v2/keys/b/sp%20ace", None),
    ("PUT", "/v2/keys/b/ctl", "value=%08%0C%7F%FF%E2%80%A8%00a%5Cb%22%3C%26%E2%80"),
    ("GET", "/v2/keys/b/%FF%E2%80", None),
    ("GET", "/v2/keys/b/%zz", None),
    ("PUT", "/v2/keys/b/emptyval", "value="),
    ("PUT", "/v2/keys/b/noval", None),
    ("GET", "/v2/keys/b/emptyval", None),
    ("PUT", "/v2/keys/b/big1", "value=1&ttl=9000000000"),
    ("PUT", "/v2/keys/b/big2", "value=1&ttl=10000000000"),
    ("PUT", "/v2/keys/b/big3", "value=1&ttl=3000000000"),
    ("PUT", "/v2/keys/b/big4", "value=1&ttl=18446744073709551616"),
    ("PUT", "/v2/keys/b/T", "value=1&prevExist=TRUE"),
    ("PUT", "/v2/keys/b/T", "value=1&prevExist=F"),
    ("PUT", "/v2/keys/b/ttl0", "value=x&ttl=0"),  # last: expires at the next SYNC
]


def test_keys_api_steps(p: Pair) -> None:
    for method, path, body in STEPS:
        p.same(method, path, body)
    _wait_gone(p, "/v2/keys/b/ttl0")  # ttl=0: gone at the leader's next expiry round
    # No TTL may outlive the test: an expiry during another would shift its indexes.
    p.same("DELETE", "/v2/keys/b?recursive=true")


def test_unclean_paths_redirect(p: Pair) -> None:
    for method, path in (("GET", "/v2/keys/a/../b?x=1"), ("GET", "/v2/keys//a"),
                         ("PUT", "/v2/keys/a/./b"), ("HEAD", "/v2/keys/x/.."),
                         ("GET", "/v2/members/../machines")):
        p.same(method, path)
    p.same("GET", "/v2/keys/a;b?x=1;y=2")


def test_head_has_the_length_of_get(p: Pair) -> None:
    p.same("PUT", "/v2/keys/head/k", "value=some-value")
    for url in p.urls:
        head, get = (call(url, m, "/v2/keys/head/k") for m in ("HEAD", "GET"))
        assert head.raw == b"" and head.headers["content-length"] == str(len(get.raw))
    p.same("HEAD", "/v2/keys/head/nope")


def test_form_needs_form_content_type(p: Pair) -> None:
    p.same("PUT", "/v2/keys/ct/a", "value=x", ctype=None)
    p.same("PUT", "/v2/keys/ct/b", "value=x", ctype="application/x-www-form-urlencoded; "
           "charset=utf-8")
    p.same("PUT", "/v2/keys/ct/c", "value=x", ctype="text/plain")
    p.same("GET", "/v2/keys/ct?recursive=true&sorted=true")


def test_compare_by_index(p: Pair) -> None:
    p.same("PUT", "/v2/keys/ci/k", "value=a")  # rel index 1
    ok, bad = [], []
    for i in range(2):
        ok.append(call(p.urls[i], "PUT", "/v2/keys/ci/k",
                       f"value=b&prevIndex={p.idx(i, 1)}"))
        bad.append(call(p.urls[i], "PUT", "/v2/keys/ci/k",
                        f"value=c&prevIndex={p.idx(i, 1)}"))
        bad.append(call(p.urls[i], "PUT", "/v2/keys/ci/k",
                        f"value=c&prevIndex={p.idx(i, 1)}&prevValue=zz"))
        bad.append(call(p.urls[i], "DELETE", f"/v2/keys/ci/k?prevIndex={p.idx(i, 1)}"))
        ok.append(call(p.urls[i], "DELETE",
                       f"/v2/keys/ci/k?prevIndex={p.idx(i, 2)}&prevValue=b"))
    for a, b in ((ok[0], ok[2]), (ok[1], ok[3]), *((bad[j], bad[j + 3]) for j in range(3))):
        assert p.norms[1].resp(b) == p.norms[0].resp(a), (a, b)


def test_in_order_keys_under_concurrency(p: Pair) -> None:
    """POSTs from many clients: distinct names, listed sorted by creation index."""
    for url in p.urls:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            got = list(pool.map(lambda n, u=url: call(u, "POST", "/v2/keys/q", f"value={n}"),
                                range(40)))
        assert all(r.status == 201 for r in got)
        names = [r.json["node"]["key"] for r in got]
        assert len(set(names)) == 40
        listing = call(url, "GET", "/v2/keys/q?sorted=true").json["node"]["nodes"]
        keys = [n["key"] for n in listing]
        assert keys == sorted(names)
        assert [n["createdIndex"] for n in listing] == sorted(
            r.json["node"]["createdIndex"] for r in got)
        assert all(k.endswith(f"{n['createdIndex']:020d}") for k, n in zip(keys, listing,
                                                                         strict=True))
    p.same("GET", "/v2/keys/q/nope")


def _wait_gone(p: Pair, path: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    for url in p.urls:
        while call(url, "GET", path).status != 404:
            assert time.monotonic() < deadline, f"{path} did not expire on {url}"
            time.sleep(0.1)


def test_ttl_expiry_refresh_and_history(p: Pair) -> None:
    p.same("PUT", "/v2/keys/ttl/r", "value=keep&ttl=30")  # rel 1
    p.same("PUT", "/v2/keys/ttl/r", "refresh=true&ttl=100&prevExist=true", ttl=True)  # 2
    p.same("PUT", "/v2/keys/ttl/r", "refresh=true&ttl=100&prevValue=keep", ttl=True)  # 3
    p.same("PUT", "/v2/keys/ttl/r", "refresh=true&ttl=100", ttl=True)  # 4
    p.same("PUT", "/v2/keys/ttl/gone", "refresh=true&ttl=100")
    p.same("GET", "/v2/keys/ttl/r")
    # (the keys that expire come last: nothing may be compared while they might go)
    p.same("PUT", "/v2/keys/ttl/a", "value=x&ttl=1")  # 5
    p.same("PUT", "/v2/keys/ttl/d", "dir=true&ttl=1")  # 6
    p.same("PUT", "/v2/keys/ttl/d/child", "value=c")  # 7
    _wait_gone(p, "/v2/keys/ttl/a")
    _wait_gone(p, "/v2/keys/ttl/d/child")
    # The expirations are events 8 and 9 in the history, in expiry order.
    p.same("GET", "/v2/keys/ttl?recursive=true&sorted=true")
    p.same("GET", "/v2/keys/ttl/a?wait=true&waitIndex={5}")
    for key in ("ttl/a", "ttl/d/child", "ttl/d"):
        r = [LongPoll(url, f"/v2/keys/{key}?wait=true&waitIndex={n.base + 8}").result()
             for url, n in zip(p.urls, p.norms, strict=True)]
        assert p.norms[1].resp(r[1]) == p.norms[0].resp(r[0])
        assert r[0].json["action"] == "expire"
    # Refreshes are in the history but never returned to a watch.
    r = [LongPoll(url, f"/v2/keys/ttl/r?wait=true&waitIndex={n.base + 2}")
         for url, n in zip(p.urls, p.norms, strict=True)]
    p.same("PUT", "/v2/keys/ttl/r", "value=changed")
    got = [x.result() for x in r]
    assert p.norms[1].resp(got[1]) == p.norms[0].resp(got[0])
    assert got[0].json["action"] == "set" and got[0].json["node"]["value"] == "changed"


def test_waits(p: Pair) -> None:
    p.same("PUT", "/v2/keys/w/a", "value=1")  # rel 1
    p.same("PUT", "/v2/keys/w/dir/x", "value=1")  # rel 2
    # From the history: the first matching event at or after waitIndex.
    for q in ("w/a?wait=true&waitIndex={1}", "w?wait=true&recursive=true&waitIndex={1}",
              "w?wait=true&recursive=true&waitIndex={2}", "w/dir/x?wait=true&waitIndex={1}"):
        r = [call(url, "GET", "/v2/keys/" + q.format(*(None, n.base + 1, n.base + 2)))
             for url, n in zip(p.urls, p.norms, strict=True)]
        assert p.norms[1].resp(r[1]) == p.norms[0].resp(r[0]), q
    # Live: each poll is registered (headers sent) before the change is made.
    cases = [
        ("w/a?wait=true", "PUT", "/v2/keys/w/a", "value=2"),
        ("w?wait=true&recursive=true", "PUT", "/v2/keys/w/dir/y", "value=3"),
        ("w/dir?wait=true", "DELETE", "/v2/keys/w/dir?recursive=true", None),
        ("w/b?wait=true", "PUT", "/v2/keys/w/b", "value=4"),
        ("w?wait=true&recursive=true", "PUT", "/v2/keys/w/_hid", "value=5"),
        ("w/a?wait=true&waitIndex={9}", "PUT", "/v2/keys/w/a", "value=6"),
    ]
    for query, method, path, body in cases:
        polls = [LongPoll(url, "/v2/keys/" + query.format(*([None] * 9), n.base + 9))
                 for url, n in zip(p.urls, p.norms, strict=True)]
        assert p.norms[1].resp(Resp(polls[1].status, polls[1].headers, b"")) == \
            p.norms[0].resp(Resp(polls[0].status, polls[0].headers, b""))
        p.same(method, path, body)
        if "_hid" in path:  # a hidden key: the recursive watch hears only the next one
            p.same("PUT", "/v2/keys/w/c", "value=7")
        got = [x.result() for x in polls]
        assert p.norms[1].resp(got[1]) == p.norms[0].resp(got[0]), query
    # A watch of a key under a deleted directory hears the delete.
    p.same("PUT", "/v2/keys/w2/d/k", "value=1")
    polls = [LongPoll(url, "/v2/keys/w2/d/k?wait=true") for url in p.urls]
    p.same("DELETE", "/v2/keys/w2?recursive=true")
    got = [x.result() for x in polls]
    assert p.norms[1].resp(got[1]) == p.norms[0].resp(got[0])
    assert got[0].json["action"] == "delete"


def test_history_window_of_1000(p: Pair) -> None:
    def burst(url: str) -> None:
        # (all alike, so that the events at each index do not depend on the order in
        # which concurrent writes reach the log)
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            codes = set(pool.map(lambda _: call(url, "PUT", "/v2/keys/h/k", "value=v").status,
                                 range(1005)))
        assert codes <= {200, 201}
    for url in p.urls:
        burst(url)
    p.same("PUT", "/v2/keys/h/other", "value=o")  # rel 1006
    for query in ("h?wait=true&recursive=true&waitIndex={1}",
                  "h?wait=true&recursive=true&waitIndex={5}",
                  "h?wait=true&recursive=true&waitIndex={7}",
                  "h/k?wait=true&waitIndex={900}",
                  "h/other?wait=true&waitIndex={6}"):
        p.same("GET", "/v2/keys/" + query)
    r0 = call(p.urls[1], "GET", f"/v2/keys/h?wait=true&waitIndex={p.norms[1].base + 5}")
    assert r0.status == 400 and r0.json["errorCode"] == 401
    assert r0.json["cause"] == (f"the requested history has been cleared "
                                f"[{p.norms[1].base + 7}/{p.norms[1].base + 5}]")


def test_members_machines_stats(p: Pair) -> None:
    got = [call(url, "GET", "/v2/members") for url in p.urls]
    for r, url in zip(got, p.urls, strict=True):
        assert r.status == 200 and r.headers["content-type"] == "application/json"
        (m,) = r.json["members"]
        assert set(m) == {"id", "name", "peerURLs", "clientURLs"}
        assert m["clientURLs"] == [url]
    lead = [call(url, "GET", "/v2/members/leader") for url in p.urls]
    assert [r.json for r in lead] == [r.json["members"][0] for r in got]
    p.same("GET", "/v2/members/nope")
    p.same("PUT", "/v2/machines")
    for url in p.urls:
        r = call(url, "GET", "/v2/machines")
        assert (r.status, r.raw) == (200, url.encode())
        assert r.headers["content-type"] == "text/plain; charset=utf-8"
    for which in ("self", "leader", "store"):
        w, g = (call(url, "GET", f"/v2/stats/{which}") for url in p.urls)
        assert (g.status, g.headers["content-type"]) == (w.status, w.headers["content-type"])
        assert list(g.json) == list(w.json), which
        if which == "self":
            assert list(g.json["leaderInfo"]) == list(w.json["leaderInfo"])
            assert g.json["state"] == w.json["state"] == "StateLeader"
    p.same("POST", "/v2/stats/self")
    p.same("GET", "/v2/stats")


def test_member_changes_refused(p: Pair) -> None:
    """Membership changes through /v2/members that must fail, fail as etcd's do (the ones
    that succeed are in test_v2_cluster.py: a cluster of one cannot lose quorum here)."""
    js = "application/json"
    for method, path, body, ctype in [
        ("POST", "/v2/members", '{"peerURLs":["http://127.0.0.1:1"]}', "text/plain"),
        ("POST", "/v2/members", '{"peerURLs":["http://127.0.0.1:1"]}', None),
        ("POST", "/v2/members", '{"peerURLs":[]}', js),
        ("POST", "/v2/members", '{"peerURLs":["ftp://127.0.0.1:1"]}', js),
        ("POST", "/v2/members", '{"peerURLs":["http://127.0.0.1"]}', js),
        ("POST", "/v2/members", '{"peerURLs":["http://127.0.0.1:1/x"]}', "Application/JSON; x=y"),
        ("DELETE", "/v2/members", None, None),
        ("DELETE", "/v2/members/zz", None, None),
        ("DELETE", "/v2/members/1234", None, None),
        ("PUT", "/v2/members/1234", '{"peerURLs":["http://127.0.0.1:2"]}', js),
        ("PUT", "/v2/members/1234", '{"peerURLs":["http://127.0.0.1:2"]}', "text/json"),
        ("PATCH", "/v2/members", None, None),
    ]:
        p.same(method, path, body, ctype=ctype)


def test_without_enable_v2(tmp_path: Path) -> None:
    procs = [_start(EtcdProcess(tmp_path / "etcd")), _start(PetcdProcess(tmp_path / "petcd"))]
    try:
        for path in ("/v2/keys/a", "/v2/keys", "/v2/members", "/v2/machines",
                     "/v2/stats/self"):
            for method in ("GET", "PUT"):
                w, g = (call(m.endpoint, method, path, "value=1") for m in procs)
                assert (g.status, g.raw) == (w.status, w.raw), (method, path)
    finally:
        for m in procs:
            m.kill()


def test_waits_for_later_indexes_and_every_action(p: Pair) -> None:
    p.same("PUT", "/v2/keys/wl/a", "value=0")
    p.same("PUT", "/v2/keys/wl/d", "dir=true")
    now = index(p.urls[0]) - p.norms[0].base
    assert index(p.urls[1]) - p.norms[1].base == now

    def polls(query: str) -> list[LongPoll]:
        out = [LongPoll(url, "/v2/keys/" + _at(query, n.base))
               for url, n in zip(p.urls, p.norms, strict=True)]
        assert p.norms[1].resp(Resp(out[1].status, out[1].headers, b"")) == \
            p.norms[0].resp(Resp(out[0].status, out[0].headers, b""))
        return out

    def check(ps: list[LongPoll]) -> str:
        got = [x.result() for x in ps]
        assert p.norms[1].resp(got[1]) == p.norms[0].resp(got[0])
        return str(got[0].json["action"])
    # A waitIndex ahead of the store: changes before it do not count.
    ahead = polls(f"wl/a?wait=true&waitIndex={{{now + 3}}}")
    p.same("PUT", "/v2/keys/wl/a", "value=1")
    p.same("PUT", "/v2/keys/wl/a", "value=2")
    p.same("PUT", "/v2/keys/wl/a", "value=3")
    assert check(ahead) == "set"
    # Each kind of change, heard by the right watchers.
    for query, method, path, body, action in [
        ("?wait=true&recursive=true", "PUT", "/v2/keys/wl/any", "value=x", "set"),
        ("wl/new?wait=true", "PUT", "/v2/keys/wl/new", "value=x&prevExist=false", "create"),
        ("wl/a?wait=true", "PUT", "/v2/keys/wl/a", "value=4&prevValue=3", "compareAndSwap"),
        ("wl/a?wait=true", "PUT", "/v2/keys/wl/a", "value=5&prevExist=true", "update"),
        ("wl/d?wait=true", "PUT", "/v2/keys/wl/d", "ttl=100&prevExist=true&dir=true",
         "update"),
        ("wl/a?wait=true", "DELETE", "/v2/keys/wl/a?prevValue=5", None, "compareAndDelete"),
        ("wl/q?wait=true&recursive=true", "POST", "/v2/keys/wl/q", "value=j", "create"),
    ]:
        ps = polls(query)
        p.same(method, path, body)
        assert check(ps) == action, query
    # A directory's own watch does not hear its children (only their deletion with it).
    ps = polls("wl/d?wait=true")
    p.same("PUT", "/v2/keys/wl/d/child", "value=c")
    p.same("PUT", "/v2/keys/wl/d", "ttl=200&prevExist=true&dir=true")
    assert check(ps) == "update"
    p.same("DELETE", "/v2/keys/wl?recursive=true")  # (no TTL outlives the test)
