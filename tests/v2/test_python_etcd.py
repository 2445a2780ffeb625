"""Debian's python3-etcd (the v2 client, as old tools use it) against petcd, unchanged:
it runs in the system Python (it is not a dependency of petcd) as a script that
asserts what the client sees."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest

from petcd.testing import have_etcd

SYSTEM_PYTHON = "/usr/bin/python3"


def _have_client() -> bool:
    return Path(SYSTEM_PYTHON).exists() and Path(
        "/usr/lib/python3/dist-packages/etcd/__init__.py").exists()


pytestmark = pytest.mark.skipif(not _have_client(), reason="python3-etcd not installed")

SCRIPT = textwrap.dedent('''
    import sys, threading, time
    import etcd

    port = int(sys.argv[1])
    c = etcd.Client(host="127.0.0.1", port=port, protocol="http")
    # read / write / update / delete
    r = c.write("/app/a", "1")
    assert r.value == "1" and r.newKey, r
    assert c.read("/app/a").value == "1"
    r.value = "2"
    assert c.update(r).value == "2"
    assert c.get("/app/a").value == "2"
    # test_and_set and its failure
    assert c.test_and_set("/app/a", "3", "2").value == "3"
    try:
        c.test_and_set("/app/a", "4", "wrong")
        raise AssertionError("compare should fail")
    except ValueError as e:  # python-etcd maps errorCode 101 to EtcdCompareFailed
        assert "Compare failed" in str(e), e
    try:
        c.write("/app/a", "x", prevExist=False)
        raise AssertionError("create should fail")
    except etcd.EtcdAlreadyExist:
        pass
    try:
        c.read("/app/missing")
        raise AssertionError("read should fail")
    except etcd.EtcdKeyNotFound:
        pass
    # directories and TTLs
    c.write("/app/dir", None, dir=True)
    c.write("/app/dir/x", "x")
    c.write("/app/dir/y", "y", ttl=100)
    r = c.read("/app/dir", recursive=True, sorted=True)
    assert [ch.key for ch in r.children] == ["/app/dir/x", "/app/dir/y"], r
    assert r.dir
    assert c.read("/app/dir/y").ttl in (99, 100)
    try:
        c.delete("/app/dir")
        raise AssertionError("non-recursive delete of a directory should fail")
    except etcd.EtcdNotFile:
        pass
    c.delete("/app/dir", recursive=True)
    # append (in-order keys)
    keys = [c.write("/queue", f"job{i}", append=True).key for i in range(3)]
    listed = [ch.key for ch in c.read("/queue", sorted=True).children]
    assert listed == sorted(keys) == keys, (listed, keys)
    # watch: a change made after the watch started, and one from the history
    got = {}
    def watcher():
        got["r"] = c.watch("/app/w", timeout=30)
    t = threading.Thread(target=watcher)
    t.start()
    time.sleep(0.5)
    w = c.write("/app/w", "seen")
    t.join(30)
    assert got["r"].value == "seen", got
    assert c.watch("/app/w", index=w.modifiedIndex, timeout=10).value == "seen"
    # the Lock recipe: one holder at a time
    lock = etcd.Lock(c, "job")
    lock.acquire(lock_ttl=60)
    assert lock.is_acquired
    other = etcd.Lock(etcd.Client(host="127.0.0.1", port=port), "job")
    assert not other.acquire(blocking=False)
    order = []
    def contender():
        other.acquire(blocking=True, lock_ttl=60, timeout=30)
        order.append("other")
        other.release()
    t = threading.Thread(target=contender)
    t.start()
    time.sleep(1.0)
    order.append("first")
    lock.release()
    t.join(30)
    assert order == ["first", "other"], order
    assert c.machines
    print("OK")
''')


@pytest.mark.parametrize("server", ["etcd", "petcd"])
def test_python_etcd_client(server: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """(against etcd 3.4 too: the script's expectations are etcd's behaviour)"""
    if server == "etcd" and not have_etcd():
        pytest.skip("etcd 3.4 not installed")
    m = request.getfixturevalue(f"{server}_factory")(args=["--enable-v2=true"])
    script = tmp_path / "client.py"
    script.write_text(SCRIPT)
    out = subprocess.run([SYSTEM_PYTHON, str(script), str(m.client_port)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "OK", out.stderr + out.stdout
