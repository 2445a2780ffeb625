"""Auth, Lock and Election through the JSON gateway, against etcd 3.4's: the same
requests give the same status and JSON (tokens, IDs and revisions-in-keys aside),
the Authorization header carries the token, and a call without one is refused."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from petcd.testing import EtcdProcess, PetcdProcess, have_etcd

from .test_gateway_differential import b64, normalise

pytestmark = pytest.mark.skipif(not have_etcd(), reason="etcd 3.4 not installed")


class Both:
    def __init__(self, etcd: EtcdProcess, petcd: PetcdProcess) -> None:
        self.urls = [etcd.endpoint, petcd.endpoint]
        self.tokens: list[str | None] = [None, None]

    def call(self, i: int, path: str, body: Any) -> tuple[int, Any]:
        headers = {} if self.tokens[i] is None else {"Authorization": str(self.tokens[i])}
        r = requests.post(self.urls[i] + path, data=json.dumps(body), headers=headers,
                          timeout=20)
        return r.status_code, r.json()

    def same(self, path: str, body: Any) -> Any:
        got = [self.call(i, path, body) for i in range(2)]
        norm = [normalise(_drop_tokens(g)) for g in got]
        assert norm[1] == norm[0], path
        return got


def _drop_tokens(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: ("*" if k == "token" else _drop_tokens(x)) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return type(v)(_drop_tokens(x) for x in v)
    return v


@pytest.fixture
def both(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Both]:
    base = tmp_path_factory.mktemp("gw-svc")
    etcd = EtcdProcess(base / "etcd")
    petcd = PetcdProcess(base / "petcd")
    try:
        etcd.start()
        petcd.start()
        yield Both(etcd, petcd)
    except BaseException:
        print(etcd.log_tail(), petcd.log_tail())
        raise
    finally:
        etcd.kill()
        petcd.kill()


def test_auth(both: Both) -> None:
    both.same("/v3/auth/user/add", {"name": "root", "password": "rootpw"})
    both.same("/v3/auth/user/grant", {"user": "root", "role": "root"})
    both.same("/v3/auth/user/add", {"name": "alice", "password": "pw"})
    both.same("/v3/auth/role/add", {"name": "app"})
    both.same("/v3/auth/role/grant", {"name": "app", "perm": {
        "permType": "READWRITE", "key": b64("app/"), "range_end": b64("app0")}})
    both.same("/v3/auth/user/grant", {"user": "alice", "role": "app"})
    both.same("/v3/auth/role/get", {"role": "app"})
    both.same("/v3/auth/user/get", {"name": "alice"})
    both.same("/v3/auth/user/list", {})
    both.same("/v3/auth/role/list", {})
    both.same("/v3/auth/enable", {})
    # Auth on: no token, a bad password, then alice's token.
    both.same("/v3/kv/put", {"key": b64("app/x"), "value": b64("1")})
    both.same("/v3/auth/authenticate", {"name": "alice", "password": "nope"})
    got = both.same("/v3/auth/authenticate", {"name": "alice", "password": "pw"})
    both.tokens = [got[0][1]["token"], got[1][1]["token"]]
    both.same("/v3/kv/put", {"key": b64("app/x"), "value": b64("1")})
    both.same("/v3/kv/range", {"key": b64("app/x")})
    both.same("/v3/kv/put", {"key": b64("other"), "value": b64("1")})  # denied
    both.same("/v3/auth/user/list", {})  # alice is not root
    got = both.same("/v3/auth/authenticate", {"name": "root", "password": "rootpw"})
    both.tokens = [got[0][1]["token"], got[1][1]["token"]]
    both.same("/v3/auth/role/revoke", {"role": "app", "key": b64("app/"),
                                       "range_end": b64("app0")})
    both.same("/v3/auth/user/changepw", {"name": "alice", "password": "pw2"})
    both.same("/v3/auth/user/revoke", {"name": "alice", "role": "app"})
    both.same("/v3/auth/user/delete", {"name": "alice"})
    both.same("/v3/auth/role/delete", {"role": "app"})
    both.same("/v3/auth/disable", {})
    both.tokens = [None, None]
    both.same("/v3/kv/range", {"key": b64("app/x")})


def test_lock_and_election(both: Both) -> None:
    both.same("/v3/lease/grant", {"TTL": 60, "ID": 4242})
    both.same("/v3/lease/grant", {"TTL": 60, "ID": 4343})
    lock = both.same("/v3/lock/lock", {"name": b64("mylock"), "lease": 4242})
    assert lock[1][0] == 200 and "key" in lock[1][1]
    both.same("/v3/lock/unlock", {"key": lock[1][1]["key"]})
    # No lease: the server makes a session lease of its own (its ID is in the key).
    free = [both.call(i, "/v3/lock/lock", {"name": b64("mylock")}) for i in range(2)]
    assert [f[0] for f in free] == [200, 200]
    assert all(base64.b64decode(f[1]["key"]).startswith(b"mylock/") for f in free)
    camp = both.same("/v3/election/campaign", {"name": b64("el"), "lease": 4343,
                                               "value": b64("first")})
    leader = camp[1][1]["leader"]
    both.same("/v3/election/leader", {"name": b64("el")})
    both.same("/v3/election/proclaim", {"leader": leader, "value": b64("second")})
    observed = []
    for url in both.urls:
        with requests.post(url + "/v3/election/observe", data=json.dumps({"name": b64("el")}),
                           stream=True, timeout=20) as r:
            assert r.status_code == 200
            for line in r.iter_lines(chunk_size=None):
                if line:
                    observed.append(normalise(json.loads(line)))
                    break
    assert observed[0] == observed[1]
    assert observed[1]["result"]["kv"]["value"] == b64("second")
    both.same("/v3/election/resign", {"leader": leader})
    both.same("/v3/election/leader", {"name": b64("el")})  # no leader now
