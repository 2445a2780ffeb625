"""petcd's own guarantees around v2 waits: a client that goes away frees its watcher
at once, idle long-polls are cheap, and stream=true delivers every event."""

from __future__ import annotations

import resource
import socket
import time
from typing import Any

from .client import LongPoll, call

POLLS = 1500


def _watchers(url: str) -> int:
    return int(call(url, "GET", "/v2/stats/store").json["watchers"])


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))


def _until(cond: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_long_polls_are_freed_and_cheap(petcd_factory: Any) -> None:
    m = petcd_factory(args=["--enable-v2"])
    url = m.endpoint
    assert m.proc is not None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < POLLS + 200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, POLLS + 200), hard))
    before = _rss_kb(m.proc.pid)
    socks = []
    try:
        for i in range(POLLS):
            s = socket.create_connection(("127.0.0.1", m.client_port))
            s.sendall(f"GET /v2/keys/idle/{i % 20}?wait=true HTTP/1.1\r\nHost: x\r\n\r\n"
                      .encode())
            socks.append(s)
        for s in socks:
            s.settimeout(30)
            assert s.recv(4096).startswith(b"HTTP/1.1 200 OK")
        _until(lambda: _watchers(url) == POLLS)
        per_poll = (_rss_kb(m.proc.pid) - before) / POLLS
        assert per_poll < 40, f"{per_poll:.1f} KiB per idle long-poll"
        # One write wakes exactly the polls of its key.
        assert call(url, "PUT", "/v2/keys/idle/3", "value=x").status == 201
        _until(lambda: _watchers(url) == POLLS - POLLS // 20)
    finally:
        for s in socks:
            s.close()
    _until(lambda: _watchers(url) == 0)  # gone with their clients, none left behind


def test_stream_wait_delivers_every_event(petcd_factory: Any) -> None:
    m = petcd_factory(args=["--enable-v2"])
    poll = LongPoll(m.endpoint, "/v2/keys/s?wait=true&recursive=true&stream=true")
    for i in range(3):
        call(m.endpoint, "PUT", f"/v2/keys/s/{i}", f"value={i}")
    got = [poll.result_line() for _ in range(3)]
    assert [g["node"]["value"] for g in got] == ["0", "1", "2"]
    poll.close()
    _until(lambda: _watchers(m.endpoint) == 0)


def test_long_and_deep_keys_survive_restart(petcd_factory: Any) -> None:
    """Paths past LMDB's key size and trees deeper than Python's recursion limit: kept,
    deleted and reloaded like any other (a hostile key must not stop the member)."""
    m = petcd_factory(args=["--enable-v2"])
    url = m.endpoint
    long_dir = "/v2/keys/" + "d" * 450
    deep = "/v2/keys/deep/" + "/".join("n" for _ in range(1500))
    for path, body in ((long_dir + "/" + "k" * 300, "value=long"),
                       (long_dir + "/other", "value=short-name"),
                       ("/v2/keys/" + "x" * 700, "value=x"),
                       (deep, "value=bottom"), ("/v2/keys/keep/me", "value=1")):
        assert call(url, "PUT", path, body).status == 201, path
    assert call(url, "GET", deep).json["node"]["value"] == "bottom"
    for q in ("", "&quorum=true"):  # too deep to render here: an error, the member lives
        r = call(url, "GET", "/v2/keys/deep?recursive=true" + q)
        assert r.status == 200 or r.json["errorCode"] == 300, r
    assert call(url, "DELETE", "/v2/keys/deep?recursive=true").status == 200
    assert call(url, "DELETE", long_dir + "/other").status == 200
    before = call(url, "GET", "/v2/keys/?recursive=true&sorted=true").json
    m.kill()
    m.start()
    assert call(url, "GET", "/v2/keys/?recursive=true&sorted=true").json == before
    assert call(url, "GET", deep).status == 404
    assert call(url, "GET", long_dir + "/" + "k" * 300).json["node"]["value"] == "long"
    assert call(url, "DELETE", long_dir + "?recursive=true").status == 200
    m.kill()
    m.start()
    assert [n["key"] for n in call(url, "GET", "/v2/keys/?sorted=true").json["node"][
        "nodes"]] == ["/keep", "/" + "x" * 700]
