"""/debug/raft names keys in its log tail: with auth enabled only a root-role user may
read it (a token from /v3/auth/authenticate in the Authorization header)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from petcd.testing import Etcdctl


def get(url: str, token: str | None = None) -> int:
    req = urllib.request.Request(url, headers={"Authorization": token} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            json.loads(r.read())
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def token(endpoint: str, name: str, password: str) -> str:
    body = json.dumps({"name": name, "password": password}).encode()
    with urllib.request.urlopen(urllib.request.Request(
            endpoint + "/v3/auth/authenticate", data=body), timeout=10) as r:
        return str(json.loads(r.read())["token"])


def test_raft_status_needs_root_when_auth_is_on(petcd_factory: Any) -> None:
    m = petcd_factory()
    url = m.endpoint + "/debug/raft"
    assert get(url) == 200
    ctl = Etcdctl(m.endpoint)
    ctl.ok("user", "add", "root:rootpw")
    ctl.ok("user", "grant-role", "root", "root")
    ctl.ok("user", "add", "alice:alicepw")
    ctl.ok("auth", "enable")
    assert get(url) == 401
    assert get(url, "not-a-token") == 401
    assert get(url, token(m.endpoint, "alice", "alicepw")) == 401
    assert get(url, token(m.endpoint, "root", "rootpw")) == 200
