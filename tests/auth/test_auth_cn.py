"""With --client-cert-auth and auth enabled, a verified client certificate's common name
is the user name (etcd's rule), and a token (a --user login) takes precedence over it.
The same etcdctl steps against etcd 3.4 and petcd must give the same outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from petcd.testing import Etcdctl, MemberProcess, have_etcd
from petcd.testing_pki import ClientTLS, TestCA

from .test_auth_etcdctl import normalize

pytestmark = pytest.mark.skipif(not have_etcd(), reason="etcd/etcdctl 3.4 not installed")


def steps(m: MemberProcess, ca: TestCA, certs: dict[str, Any]) -> list[tuple[int, str, str]]:
    def ctl(who: str) -> Etcdctl:
        c = certs[who]
        return Etcdctl(m.endpoint, tls=ClientTLS(ca.cert, c.cert, c.key), timeout=30)

    out = []
    for who, args in [
        ("root", ("user", "add", "root:rootpw")),
        ("root", ("user", "grant-role", "root", "root")),
        ("root", ("user", "add", "alice", "--no-password")),
        ("root", ("role", "add", "rw")),
        ("root", ("role", "grant-permission", "rw", "readwrite", "w/", "--prefix")),
        ("root", ("user", "grant-role", "alice", "rw")),
        ("root", ("auth", "enable")),
        ("root", ("user", "list")),  # CN root: the root role
        ("alice", ("put", "w/a", "1")),
        ("alice", ("get", "w/a")),
        ("alice", ("put", "x", "1")),  # not alice's
        ("alice", ("user", "list")),
        ("alice", ("user", "get", "alice")),
        ("alice", ("--user", "root:rootpw", "put", "x", "1")),  # the login wins
        ("carol", ("put", "w/b", "1")),  # a CN that is no user
        ("root", ("get", "", "--prefix")),
    ]:
        r = ctl(who)("--dial-timeout=5s", "--command-timeout=10s", *args)
        out.append((r.returncode, normalize(r.stdout), normalize(r.stderr)))
    return out


@pytest.mark.parametrize("flag", ["--client-cert-auth", "--client-cert-auth=false"])
def test_common_name_is_the_user(flag: str, tmp_path: Path, etcd_factory: Any,
                                 petcd_factory: Any) -> None:
    """(Without --client-cert-auth, --trusted-ca-file still makes clients present a
    certificate, but its CN names nobody: the same on etcd.)"""
    ca = TestCA(tmp_path / "pki")
    server = ca.issue("server")
    certs = {cn: ca.issue(cn, hosts=()) for cn in ("root", "alice", "carol")}
    args = ["--cert-file", str(server.cert), "--key-file", str(server.key),
            "--trusted-ca-file", str(ca.cert), flag, "--bcrypt-cost", "4"]
    tls = ClientTLS(ca.cert, certs["root"].cert, certs["root"].key)
    want = steps(etcd_factory(args=args, client_tls=tls), ca, certs)
    got = steps(petcd_factory(args=args, client_tls=tls), ca, certs)
    for g, w in zip(got, want, strict=True):
        assert g == w
