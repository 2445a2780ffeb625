"""The same HTTP/JSON requests against real etcd 3.4's grpc-gateway and petcd's gateway:
status, content type and JSON must match once IDs that differ by design are
normalised (cluster/member IDs, raft term, hashes, sizes). Revisions are compared as
they are: both members see the same writes in the same order."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from petcd.testing import EtcdProcess, PetcdProcess, have_etcd

pytestmark = pytest.mark.skipif(not have_etcd(), reason="etcd 3.4 not installed")

MAX_REQUEST = 4096
ARGS = ["--max-request-bytes", str(MAX_REQUEST)]
_ID_FIELDS = {"cluster_id", "member_id", "raft_term", "hash", "dbSize", "dbSizeInUse",
              "raftIndex", "raftTerm", "raftAppliedIndex", "version", "leader"}


def b64(s: str | bytes) -> str:
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def normalise(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: ("*" if k in _ID_FIELDS else normalise(x)) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return type(v)(normalise(x) for x in v)
    return v


class Pair:
    def __init__(self, etcd: EtcdProcess, petcd: PetcdProcess) -> None:
        self.urls = [etcd.endpoint, petcd.endpoint]
        self.sessions = [requests.Session(), requests.Session()]

    def post(self, i: int, path: str, body: str | bytes | None,
             method: str = "POST") -> tuple[int, str, Any]:
        r = self.sessions[i].request(method, self.urls[i] + path, data=body, timeout=20)
        ctype = r.headers.get("Content-Type", "")
        try:
            payload: Any = r.json()
        except ValueError:
            payload = r.text
        return r.status_code, ctype, payload

    def same(self, path: str, body: Any = None, *, method: str = "POST",
             norm: bool = True) -> Any:
        raw = body if body is None or isinstance(body, (str, bytes)) else json.dumps(body)
        want, got = (self.post(i, path, raw, method) for i in range(2))
        if norm:
            want, got = normalise(want), normalise(got)
        assert got == want, f"{method} {path} {raw!r}"
        return got[2]

    def close(self) -> None:
        for s in self.sessions:
            s.close()


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    base = tmp_path_factory.mktemp("gw-diff")
    etcd = EtcdProcess(base / "etcd", args=ARGS)
    petcd = PetcdProcess(base / "petcd", args=ARGS)
    try:
        etcd.start()
        petcd.start()
        p = Pair(etcd, petcd)
        yield p
        p.close()
    except BaseException:
        print(etcd.log_tail(), petcd.log_tail())
        raise
    finally:
        etcd.kill()
        petcd.kill()


def test_kv(pair: Pair) -> None:
    for i in range(5):
        pair.same("/v3/kv/put", {"key": b64(f"kv/{i}"), "value": b64(f"v{i}")})
    pair.same("/v3/kv/put", {"key": b64("kv/1"), "value": b64("w"), "prev_kv": True})
    pair.same("/v3/kv/range", {"key": b64("kv/1")})
    pair.same("/v3/kv/range", {"key": b64("kv/"), "range_end": b64("kv0")})
    pair.same("/v3/kv/range", {"key": b64("kv/"), "rangeEnd": b64("kv0"), "limit": 2,
                               "sortOrder": "DESCEND", "sort_target": "MOD"})
    pair.same("/v3/kv/range", {"key": b64("kv/"), "range_end": b64("kv0"), "limit": "2",
                               "keys_only": True, "count_only": False})
    pair.same("/v3/kv/range", {"key": b64("kv/"), "range_end": b64("kv0"), "count_only": True})
    pair.same("/v3/kv/range", {"key": b64("kv/"), "range_end": b64("kv0"), "revision": 3})
    pair.same("/v3/kv/range", {"key": b64("nothing")})
    pair.same("/v3/kv/range", {"key": b64("kv/1"), "serializable": True})
    txn = {"compare": [{"target": "VALUE", "key": b64("kv/2"), "value": b64("v2")}],
           "success": [{"request_put": {"key": b64("kv/2"), "value": b64("t")}},
                       {"requestRange": {"key": b64("kv/2")}}],
           "failure": [{"request_delete_range": {"key": b64("kv/2")}}]}
    pair.same("/v3/kv/txn", txn)
    pair.same("/v3/kv/txn", txn)  # the compare fails now: the delete runs
    pair.same("/v3/kv/txn", {"compare": [{"target": "CREATE", "key": b64("kv/3"),
                                          "result": "GREATER", "create_revision": "1"}],
                             "success": [{"request_range": {"key": b64("kv/3")}}]})
    pair.same("/v3/kv/deleterange", {"key": b64("kv/3"), "prev_kv": True})
    pair.same("/v3/kv/deleterange", {"key": b64("kv/"), "range_end": b64("kv0")})
    pair.same("/v3/kv/compaction", {"revision": "3", "physical": True})
    pair.same("/v3/kv/range", {"key": b64("kv/1"), "revision": 2})  # compacted
    pair.same("/v3/kv/compaction", {"revision": 1000})  # future
    pair.same("/v3beta/kv/range", {"key": b64("kv/1")})


@pytest.mark.parametrize("body", [
    '{"key": "!!!"}', '{"key": "Zm9"}', '{"key": "Zm9v=="}', '{"key": "Zm9v-_"}',
    '{"key": "Zg="}', '{"key": "Z==="}', '{"key": "Zm9vYg==x"}', '{"key": "Zm9v\\nYmFy"}',
    '{"key": "a2V5", "bogus": 1, "other": {"x": [1]}}',  # unknown fields: ignored
    '{"key": 123}', '{"key": "a2V5", "limit": 5.5}', '{"key": "a2V5", "limit": "5.5"}',
    '{"key": "a2V5", "limit": "abc"}', '{"key": "a2V5", "limit": true}',
    '{"key": "a2V5", "serializable": "true"}', '{"key": "a2V5", "sort_order": "NOPE"}',
    '{"key": "a2V5", "sort_order": 1}', '{"key": "a2V5", "limit": -1}',
    '[1]', '"x"', 'null', '', '{"key":', '{"key" "a"}', 'xyz', '{"key": "a2V5"} trailing',
    '{"key": "a2V5", "revision": "99999999999999999999"}',
])
def test_bad_requests(pair: Pair, body: str) -> None:
    pair.same("/v3/kv/range", body)


def test_nothing_applied_on_bad_input(pair: Pair) -> None:
    pair.same("/v3/kv/put", '{"key": "YmFk", "value": "!!"}')
    pair.same("/v3/kv/put", '{"key": "YmFk", "value": "dg==", "lease": "x"}')
    pair.same("/v3/kv/txn", '{"success": [{"request_put": {"key": "YmFk", "value": 5}}]}')
    pair.same("/v3/kv/range", {"key": b64("bad")})  # absent on both


def test_sizes(pair: Pair) -> None:
    pair.same("/v3/kv/put", {"key": b64("big"), "value": b64("x" * (MAX_REQUEST + 100))})
    pair.same("/v3/kv/put", {"key": b64("big"), "value": b64("x" * (MAX_REQUEST - 200))})
    pair.same("/v3/kv/range", {"key": b64("big"), "keys_only": True})
    # Past what gRPC itself accepts: RESOURCE_EXHAUSTED (429) on both.
    want, got = (pair.post(i, "/v3/kv/put", json.dumps(
        {"key": b64("huge"), "value": b64("h" * (MAX_REQUEST + 600 * 1024))}))
        for i in range(2))
    assert got == want and got[0] == 429 and got[2]["code"] == 8  # grpc-go's words too


def test_http_errors(pair: Pair) -> None:
    pair.same("/v3/kv/nope", "{}")
    pair.same("/v3/nope", "{}")
    pair.same("/v3/kv/range", method="GET")
    pair.same("/v3/kv/range", method="PUT", body="{}")
    pair.same("/v3/kv/range", method="OPTIONS")
    pair.same("/nothing", method="GET")


def test_lease(pair: Pair) -> None:
    pair.same("/v3/lease/grant", {"TTL": 60, "ID": 1001})
    pair.same("/v3/lease/grant", {"TTL": "60", "ID": "1002"})
    pair.same("/v3/lease/grant", {"TTL": 60, "ID": 1001})  # exists
    pair.same("/v3/kv/put", {"key": b64("lease/a"), "value": b64("x"), "lease": 1001})
    pair.same("/v3/lease/timetolive", {"ID": 1001, "keys": True}, norm=True)
    pair.same("/v3/kv/lease/timetolive", {"ID": 1001})
    pair.same("/v3/lease/leases", {})
    pair.same("/v3/kv/lease/leases", {})
    pair.same("/v3/lease/revoke", {"ID": 1001})
    pair.same("/v3/kv/lease/revoke", {"ID": 1001})  # not found
    pair.same("/v3/lease/timetolive", {"ID": 1001})
    pair.same("/v3/kv/range", {"key": b64("lease/a")})
    pair.same("/v3/lease/grant", {"TTL": 60, "ID": 1003})


def _stream_lines(url: str, body: str, want: int, timeout: float = 15.0) -> list[Any]:
    """The first `want` JSON lines of a streamed response (then the connection closes)."""
    out: list[Any] = []
    with requests.post(url, data=body, stream=True, timeout=timeout) as r:
        assert r.status_code == 200, r.text
        for line in r.iter_lines(chunk_size=None):
            if line:
                out.append(json.loads(line))
            if len(out) >= want:
                break
    return out


def test_lease_keepalive_stream(pair: Pair) -> None:
    pair.same("/v3/lease/grant", {"TTL": 60, "ID": 2001})
    got = [normalise(_stream_lines(u + "/v3/lease/keepalive",
                                   '{"ID": 2001} {"ID": "2001"}', 2)) for u in pair.urls]
    assert got[0] == got[1]
    assert got[1][0]["result"]["TTL"] == "60"
    got = [normalise(_stream_lines(u + "/v3/lease/keepalive", '{"ID": 2999}', 1))
           for u in pair.urls]
    assert got[0] == got[1]  # not found: TTL omitted


def test_watch_stream(pair: Pair) -> None:
    results: list[list[Any]] = [[], []]
    start = pair.same("/v3/kv/put", {"key": b64("w/0"), "value": b64("0")})
    rev = int(start["header"]["revision"])
    body = (json.dumps({"create_request": {"key": b64("w/"), "range_end": b64("w0"),
                                           "prev_kv": True}}) + "\n"
            + json.dumps({"create_request": {"key": b64("w/x"), "start_revision": rev}})
            + json.dumps({"cancel_request": {"watch_id": "1"}}))
    ready = [threading.Event(), threading.Event()]

    def watch(i: int) -> None:
        with requests.post(pair.urls[i] + "/v3/watch", data=body, stream=True,
                           timeout=20) as r:
            for line in r.iter_lines(chunk_size=None):
                if not line:
                    continue
                results[i].append(json.loads(line))
                if len(results[i]) == 3:
                    ready[i].set()
                if len(results[i]) == 6:
                    return

    threads = [threading.Thread(target=watch, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for e in ready:
        assert e.wait(20)
    pair.same("/v3/kv/put", {"key": b64("w/1"), "value": b64("1")})
    pair.same("/v3/kv/put", {"key": b64("w/1"), "value": b64("2")})
    pair.same("/v3/kv/deleterange", {"key": b64("w/1")})
    for t in threads:
        t.join(20)
    assert normalise(results[1]) == normalise(results[0])
    assert len(results[1]) == 6


def test_watch_bad_requests(pair: Pair) -> None:
    pair.same("/v3/watch", '{"create_request": {"key": "!!"}}')
    pair.same("/v3/watch", '{"create_request": ')
    # A bad request after a good one ends the requests, not the stream.
    got = [normalise(_stream_lines(u + "/v3/watch",
                                   '{"create_request": {"key": "YQ=="}} {"x": "!!', 1))
           for u in pair.urls]
    assert got[0] == got[1]


def test_cluster(pair: Pair) -> None:
    def shape(v: Any) -> Any:
        for m in v.get("members", []):
            m["peerURLs"] = m["clientURLs"] = m["ID"] = m["name"] = "*"
        if "members" in v:  # listed by ID, and IDs are random
            v["members"].sort(key=lambda m: json.dumps(m, sort_keys=True))
        if "member" in v:
            v["member"]["ID"] = "*"
        return v

    lists = [shape(normalise(pair.post(i, "/v3/cluster/member/list", "{}")[2]))
             for i in range(2)]
    assert lists[0] == lists[1]
    added = [pair.post(i, "/v3/cluster/member/add",
                       json.dumps({"peerURLs": ["http://127.0.0.1:1"], "isLearner": True}))
             for i in range(2)]
    assert [a[0] for a in added] == [200, 200]
    assert shape(normalise(added[0][2])) == shape(normalise(added[1][2]))
    ids = [a[2]["member"]["ID"] for a in added]
    for i in range(2):
        r = pair.post(i, "/v3/cluster/member/update",
                      json.dumps({"ID": ids[i], "peerURLs": ["http://127.0.0.1:2"]}))
        assert r[0] == 200, r
    promote = [normalise(pair.post(i, "/v3/cluster/member/promote",
                                   json.dumps({"ID": ids[i]}))) for i in range(2)]
    assert promote[0] == promote[1]
    removed = [shape(normalise(pair.post(i, "/v3/cluster/member/remove",
                                         json.dumps({"ID": ids[i]}))[2])) for i in range(2)]
    assert removed[0] == removed[1]
    pair.same("/v3/cluster/member/remove", {"ID": 42})


def test_maintenance(pair: Pair) -> None:
    status = pair.same("/v3/maintenance/status", {})
    assert set(status) >= {"header", "version", "dbSize", "leader", "raftIndex"}
    pair.same("/v3/maintenance/alarm", {})
    pair.same("/v3/maintenance/alarm", {"action": "GET", "alarm": "NONE"})
    pair.same("/v3/maintenance/defragment", {})
    pair.same("/v3/maintenance/hash", {})
    pair.same("/v3/maintenance/transfer-leadership", {"targetID": 12345})
    pair.same("/v3/maintenance/alarm", {"action": "BOGUS"})


def test_snapshot_stream(pair: Pair) -> None:
    for url in pair.urls:
        with requests.post(url + "/v3/maintenance/snapshot", data="{}", stream=True,
                           timeout=30) as r:
            assert r.status_code == 200
            lines = [json.loads(x) for x in r.iter_lines(chunk_size=None) if x]
        blob = b"".join(base64.b64decode(x["result"].get("blob", "")) for x in lines)
        assert all(set(x) == {"result"} for x in lines)
        import hashlib
        assert hashlib.sha256(blob[:-32]).digest() == blob[-32:]


def test_cors_and_host_whitelist(tmp_path_factory: pytest.TempPathFactory) -> None:
    base = tmp_path_factory.mktemp("gw-cors")
    args = ["--cors", "http://a.example:8080", "--host-whitelist", "127.0.0.1,localhost"]
    etcd = EtcdProcess(base / "etcd", args=args)
    petcd = PetcdProcess(base / "petcd", args=args)
    try:
        etcd.start()
        petcd.start()
        cors = ("Access-Control-Allow-Origin", "Access-Control-Allow-Methods",
                "Access-Control-Allow-Headers")
        cases = [
            ("POST", "/v3/kv/range", {"Origin": "http://a.example:8080"}),
            ("POST", "/v3/kv/range", {"Origin": "http://b.example"}),
            ("OPTIONS", "/v3/kv/range", {"Origin": "http://a.example:8080"}),
            ("GET", "/health", {"Host": "evil.example:1234"}),
            ("POST", "/v3/kv/put", {"Host": "evil.example"}),
            ("GET", "/version", {"Host": "localhost:80"}),
        ]
        for method, path, headers in cases:
            seen = []
            for m in (etcd, petcd):
                r = requests.request(method, m.endpoint + path, headers=headers,
                                     data='{"key": "YQ=="}', timeout=10)
                seen.append((r.status_code, {h: r.headers.get(h) for h in cors},
                             r.text if r.status_code == 421 else ""))
            assert seen[0] == seen[1], (method, path, headers)
        # Nothing was written by the refused put.
        assert requests.post(petcd.endpoint + "/v3/kv/range", data='{"key": "YQ=="}',
                             timeout=10).json().get("count") is None
    finally:
        etcd.kill()
        petcd.kill()


def _curl(*args: str) -> str:
    import subprocess
    return subprocess.run(["curl", "-s", *args], capture_output=True, timeout=30,
                          check=False).stdout.decode()


@pytest.mark.skipif(__import__("shutil").which("curl") is None, reason="no curl")
def test_curl_sequence(pair: Pair) -> None:
    """The README-style curl session, byte for byte once IDs are normalised."""
    outs: list[list[Any]] = [[], []]
    for i, url in enumerate(pair.urls):
        for path, body in [
                ("/v3/kv/put", '{"key": "Y3VybC9h", "value": "MQ=="}'),
                ("/v3/kv/range", '{"key": "Y3VybC9h"}'),
                ("/v3/kv/txn", '{"compare":[{"key":"Y3VybC9h","result":"EQUAL",'
                               '"target":"VALUE","value":"MQ=="}],"success":[{"requestPut":'
                               '{"key":"Y3VybC9h","value":"Mg=="}}]}'),
                ("/v3/kv/deleterange", '{"key": "Y3VybC9h", "prev_kv": true}'),
                ("/v3/kv/range", '{"key": "Y3VybC9h", "revision": "1"}')]:
            outs[i].append(json.loads(_curl(url + path, "-X", "POST", "-d", body)))
        # The history of the key since this test's first put, streamed (read until its 3
        # events are in); not from revision 1, which another test may have compacted.
        events: list[Any] = []
        first = outs[i][0]["header"]["revision"]
        with requests.post(url + "/v3/watch", stream=True, timeout=30, data=json.dumps(
                {"create_request": {"key": "Y3VybC9h", "start_revision": first}})) as r:
            for line in r.iter_lines(chunk_size=None):
                if line:
                    events += json.loads(line)["result"].get("events", [])
                if len(events) >= 3:
                    break
        outs[i].append(events)
    assert normalise(outs[0]) == normalise(outs[1])
    assert len(outs[1][-1]) == 3, outs[1][-1]
