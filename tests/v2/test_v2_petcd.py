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
