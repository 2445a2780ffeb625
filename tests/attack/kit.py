"""Tools of the attack suite: a raw HTTP/2 client (frames by hand, hpack for the
well-formed blocks), a guard that watches a member's RSS and a concurrent client's put
latency while an attack runs, and the member fixtures' arguments.

Attacks stop early when the member's RSS has grown past the bound (so a regression
fails the test instead of swapping the machine)."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any
from urllib.parse import unquote

import grpc
import hpack

from petcd.api.h2 import frames as F
from petcd.pb.etcdserverpb import rpc_pb2 as rpc
from petcd.testing import MemberProcess

MiB = 1024 * 1024
# Every member under attack: no fsync (the suite measures the front door, not the disk).
MEMBER_ARGS = ["--unsafe-no-fsync"]
# The bounds every attack is held to (measured on a loaded 2-core box: an attack-free
# run's put p99 is a few ms; today's holes cost seconds or hundreds of MB).
RSS_GROWTH_MIB = 48.0
P99_SECONDS = 0.1
PUT_TIMEOUT = 2.0
MIN_GUARD_SECONDS = 4.0  # so that a p99 is not the single slowest put
# Guard.allowed_p99: the control member's p99 up to which the machine counts as quiet
# (then P99_SECONDS is absolute; 1.5 x 33 ms + 50 ms = 100 ms, the two rules meet), and
# the most a loaded machine may excuse (a put slower than PUT_TIMEOUT fails anyway).
CONTROL_QUIET_P99 = 0.0333
RELATIVE_CAP = 2.0

PUT = "/etcdserverpb.KV/Put"
RANGE = "/etcdserverpb.KV/Range"


def grpc_msg(body: bytes) -> bytes:
    return b"\0" + len(body).to_bytes(4, "big") + body


def range_request(key: bytes = b"attack") -> bytes:
    return grpc_msg(rpc.RangeRequest(key=key, serializable=True).SerializeToString())


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class Raw:
    """An HTTP/2 client writing frames by hand. `reading()` starts a thread that
    reads and parses what the server sends (else the client never reads)."""

    def __init__(self, port: int, settings: dict[int, int] | None = None,
                 preface: bool = True, timeout: float = 10.0, rcvbuf: int = 0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:  # a client that reads nothing and buffers little: our output backs up
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        self.enc = hpack.Encoder()
        self.goaway: tuple[int, int, bytes] | None = None  # last stream, code, debug
        self.resets: dict[int, int] = {}
        self.headers: dict[int, list[bytes]] = {}
        self.closed = threading.Event()
        self.conn_window = F.DEFAULT_WINDOW
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        if preface:
            self.send(F.PREFACE + F.settings_frame(settings or {}))

    def send(self, *frames: bytes) -> bool:
        try:
            self.sock.sendall(b"".join(frames))
            return True
        except OSError:
            self.closed.set()
            return False

    def block(self, path: str = RANGE, *extra: tuple[str, str]) -> bytes:
        return bytes(self.enc.encode([
            (":method", "POST"), (":scheme", "http"), (":path", path),
            (":authority", "attack"), ("content-type", "application/grpc"),
            ("te", "trailers"), *extra]))

    def headers_frame(self, sid: int, block: bytes, end_stream: bool = False) -> bytes:
        return F.frame(F.HEADERS, F.END_HEADERS | (F.END_STREAM if end_stream else 0),
                       sid, block)

    def reading(self) -> Raw:
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        buf = b""
        try:
            while True:
                chunk = self.sock.recv(1 << 20)
                if not chunk:
                    break
                buf += chunk
                while len(buf) >= 9:
                    hi, lo, ftype, flags, sid = F.HEADER.unpack_from(buf)
                    n = hi << 16 | lo
                    if len(buf) < 9 + n:
                        break
                    payload, buf = buf[9:9 + n], buf[9 + n:]
                    self._on_frame(ftype, flags, sid, payload)
        except OSError:
            pass
        self.closed.set()
        with self._cond:
            self._cond.notify_all()

    def _on_frame(self, ftype: int, flags: int, sid: int, payload: bytes) -> None:
        if ftype == F.GOAWAY:
            self.goaway = (F.u32(payload[:4]), F.u32(payload[4:8]), payload[8:])
        elif ftype == F.RST_STREAM:
            self.resets[sid] = F.u32(payload)
        elif ftype == F.HEADERS:
            self.headers.setdefault(sid, []).append(payload)
        elif ftype == F.WINDOW_UPDATE and sid == 0:
            with self._cond:
                self.conn_window += F.u32(payload)
                self._cond.notify_all()

    def take_window(self, n: int, timeout: float = 5.0) -> bool:
        """Wait until the connection window has n bytes (the reader must run)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.conn_window < n:
                left = deadline - time.monotonic()
                if left <= 0 or self.closed.is_set():
                    return False
                self._cond.wait(left)
            self.conn_window -= n
            return True

    def wait_headers(self, streams: int, timeout: float = 60.0) -> None:
        """Wait until `streams` streams got response headers (the member is done
        setting up what the attack needs; the reader must run)."""
        deadline = time.monotonic() + timeout
        while len(self.headers) < streams:
            assert time.monotonic() < deadline, f"{len(self.headers)} of {streams} answered"
            assert not self.closed.is_set(), f"closed: GOAWAY {self.goaway}"
            time.sleep(0.05)

    def outcome(self, sid: int, timeout: float = 10.0) -> tuple[str, str] | int | None:
        """(grpc-status, grpc-message) of a call, or the RST_STREAM code it got, or
        None if the connection closed first (the reader must run)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for payload in self.headers.get(sid, []):
                fields = dict(hpack.Decoder().decode(payload))  # our blocks never index
                if "grpc-status" in fields:
                    return fields["grpc-status"], unquote(fields.get("grpc-message", ""))
            if sid in self.resets:
                return self.resets[sid]
            if self.closed.is_set():
                return None
            time.sleep(0.02)
        raise AssertionError(f"no answer on stream {sid}")

    def wait_closed(self, timeout: float = 10.0) -> bool:
        return self.closed.wait(timeout)

    def close(self) -> None:
        with suppress(OSError):
            self.sock.close()
        if self._thread is not None:
            self._thread.join(5)


def _p99(latencies: list[float]) -> float:
    lat = sorted(latencies)
    return lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else float("inf")


def _run_delay(path: str) -> float:
    """Seconds a thread has waited, runnable, for a CPU (schedstat's second field):
    time the machine's other processes took, not time the thread spent working."""
    try:
        with open(path) as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


class _Putter:
    """Puts every ~10 ms through its own connection; latencies and failures.

    A latency is the put's wall time less the time, during it, that the member's main
    thread (front door, Raft and apply all run there) and this putter thread sat
    runnable waiting for a CPU (their schedstat run delay). What is left is what the
    member made the put wait for: its own work (an attack's cost included), its sleeps
    and its locks, so the bound holds on a quiet machine and on one loaded by other
    processes alike (a member that stops serving still fails it: a stopped or blocked
    thread is not runnable, so nothing of that is taken off). `wall` keeps the raw
    times for the report."""

    def __init__(self, member: MemberProcess) -> None:
        self.member = member
        self.latencies: list[float] = []
        self.wall: list[float] = []
        self.failures: list[str] = []
        assert member.proc is not None
        self._member_thread = f"/proc/{member.proc.pid}/task/{member.proc.pid}/schedstat"

    def _waited(self) -> float:
        return _run_delay(self._member_thread) + _run_delay("/proc/thread-self/schedstat")

    def run(self, stop: threading.Event) -> None:
        channel = grpc.insecure_channel(f"127.0.0.1:{self.member.client_port}")
        put = channel.unary_unary(PUT, request_serializer=lambda b: b,
                                  response_deserializer=lambda b: b)
        body = rpc.PutRequest(key=b"guard", value=b"v" * 100).SerializeToString()
        try:
            put(body, timeout=10)  # connected before the clock starts
        except grpc.RpcError as e:
            self.failures.append(f"first put: {e.code()}")
        try:
            while not stop.is_set():
                w0, t0 = self._waited(), time.monotonic()
                try:
                    put(body, timeout=PUT_TIMEOUT)
                except grpc.RpcError as e:
                    self.failures.append(f"{e.code()}: {e.details()}")
                wall = time.monotonic() - t0
                self.wall.append(wall)
                self.latencies.append(max(0.0, wall - (self._waited() - w0)))
                stop.wait(0.005)
        finally:
            channel.close()


class Guard:
    """While an attack runs: a client puts through its own connection (latency and
    failures recorded), the member's RSS is sampled, and, when a control member is
    given, the same puts go to it: the machine's own noise over the same seconds."""

    def __init__(self, member: MemberProcess, control: MemberProcess | None = None) -> None:
        assert member.proc is not None
        self.member = member
        self.pid = member.proc.pid
        self.baseline = rss_mib(self.pid)
        self.peak = self.baseline
        self._putter = _Putter(member)
        self._control = _Putter(control) if control is not None else None
        self.latencies = self._putter.latencies
        self.failures = self._putter.failures
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._putter.run, args=(self._stop,),
                                          daemon=True),
                         threading.Thread(target=self._rss_loop, daemon=True)]
        if self._control is not None:
            self._threads.append(threading.Thread(target=self._control.run,
                                                  args=(self._stop,), daemon=True))

    def over(self) -> bool:
        """True once the RSS grew past the bound: attacks stop then."""
        return self.peak - self.baseline > RSS_GROWTH_MIB or self._stop.is_set()

    def _rss_loop(self) -> None:
        while not self._stop.wait(0.05):
            try:
                self.peak = max(self.peak, rss_mib(self.pid))
            except OSError:
                return

    def start(self) -> Guard:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(PUT_TIMEOUT + 5)
        self.peak = max(self.peak, rss_mib(self.pid))

    def p99(self) -> float:
        return _p99(self.latencies)

    def allowed_p99(self, p99: float) -> float:
        """The bound the attacked member's put p99 is held to. The method: an unattacked
        control member takes the same puts over the same seconds. While it answers with
        p99 <= CONTROL_QUIET_P99 the machine has headroom and the bound is absolute
        (`p99`, 100 ms by default). When the machine is loaded by other processes (the
        control is slow too), an absolute bound would measure them, not the attack: the
        bound is then relative, 1.5x the control's p99 + 50 ms (the attack may not make
        the member notably slower than an identical member beside it), and never above
        RELATIVE_CAP. `mode()` says which applied; the report prints it."""
        control = self.control_p99()
        if control is None or control <= CONTROL_QUIET_P99:
            return p99
        return min(max(p99, 1.5 * control + 0.05), RELATIVE_CAP)

    def control_p99(self) -> float | None:
        if self._control is None or not self._control.latencies:
            return None
        return _p99(self._control.latencies)

    def mode(self) -> str:
        control = self.control_p99()
        if control is None or control <= CONTROL_QUIET_P99:
            return "absolute"
        return "relative to the control (machine loaded)"

    def report(self, p99: float = P99_SECONDS) -> str:
        lat = sorted(self.latencies)
        control = (f"; control p99 {_p99(self._control.latencies) * 1000:.1f} ms "
                   f"(wall {_p99(self._control.wall) * 1000:.1f} ms)"
                   if self._control is not None else "")
        control += f"; bound {self.allowed_p99(p99) * 1000:.0f} ms, {self.mode()}"
        return (f"RSS {self.baseline:.0f} -> peak {self.peak:.0f} MiB; "
                f"{len(lat)} puts, p50 {lat[len(lat) // 2] * 1000 if lat else 0:.1f} ms, "
                f"p99 {self.p99() * 1000:.1f} ms, max {lat[-1] * 1000 if lat else 0:.1f} ms "
                f"(less CPU waits; wall p99 {_p99(self._putter.wall) * 1000:.1f} ms), "
                f"{len(self.failures)} failed {self.failures[:3]}{control}")

    def check(self, p99: float = P99_SECONDS) -> None:
        report = self.report(p99)
        print(report)
        assert self.member.running, "the member died"
        assert self.peak - self.baseline <= RSS_GROWTH_MIB, report
        assert not self.failures, report
        assert len(self.latencies) >= 10, report
        assert self.p99() < self.allowed_p99(p99), report


# The unattacked member guards compare against (set by the suite's fixtures).
CONTROL: list[MemberProcess] = []


@contextmanager
def guarded(member: MemberProcess) -> Iterator[Guard]:
    guard = Guard(member, CONTROL[0] if CONTROL else None).start()
    time.sleep(0.3)  # some puts before the attack: the latencies include its start
    start = time.monotonic()
    try:
        yield guard
        # an attack stopped early (by a bound) still gets enough puts measured after it
        time.sleep(max(0.0, MIN_GUARD_SECONDS - (time.monotonic() - start)))
    finally:
        guard.stop()


def run_for(seconds: float, guard: Guard, step: Callable[[], Any],
            per_second: float = 0.0) -> int:
    """Call step() (at most per_second times a second, when given) until `seconds`
    passed, the RSS bound is exceeded, or step returns False; the number of calls.
    Paced attacks measure amplification (what a modest client makes the member do);
    the member's CPU is not the resource under test."""
    start = time.monotonic()
    deadline = start + seconds
    n = 0
    while time.monotonic() < deadline and not guard.over():
        if step() is False:
            break
        n += 1
        if per_second:
            delay = start + n / per_second - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    return n


def member_log_has(member: MemberProcess, text: str) -> bool:
    return os.path.exists(member.log_path) and text in member.log_path.read_text(
        errors="replace")
