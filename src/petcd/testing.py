"""Start real petcd and etcd members on free loopback ports, and run etcdctl against
them. Used by the test fixtures (tests/conftest.py) and by the benchmarks; every
process started here is stopped by `stop()`/`kill()` (the fixtures always call them).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

SRC_DIR = Path(__file__).resolve().parents[1]  # the directory holding petcd/
ETCD_BIN = os.environ.get("PETCD_TEST_ETCD", "/usr/bin/etcd")
ETCDCTL_BIN = os.environ.get("PETCD_TEST_ETCDCTL", "/usr/bin/etcdctl")
# Which gRPC server petcd members run in tests (--experimental-grpc-server): the
# default (unset) or "h2" / "grpcio", e.g. PETCD_TEST_GRPC_SERVER=h2 pytest tests/e2e.
GRPC_SERVER = os.environ.get("PETCD_TEST_GRPC_SERVER", "")

_used_ports: set[int] = set()


def free_port() -> int:
    """A loopback TCP port nobody listens on now (never 2379/2380)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in (2379, 2380) and port not in _used_ports:
            _used_ports.add(port)
            return port


class MemberProcess:
    """One server process; subclasses say how to start it. Output goes to a log file."""

    kind = "member"

    def __init__(self, data_dir: str | os.PathLike[str], *, name: str = "default",
                 args: Sequence[str] = (), env: Mapping[str, str] | None = None,
                 client_port: int | None = None, peer_port: int | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.name = name
        self.extra_args = list(args)
        self.extra_env = dict(env or {})
        self.client_port = client_port or free_port()
        self.peer_port = peer_port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._fresh = True
        self.log_path = Path(str(self.data_dir) + f".{self.kind}.log")
        self._log_file: object = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def http_endpoint(self) -> str:
        """Where /health and /version are served."""
        return self.endpoint

    @property
    def address(self) -> str:
        """host:port for grpc channels."""
        return f"127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    def member_args(self) -> list[str]:
        return [
            "--name", self.name,
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.endpoint,
            "--advertise-client-urls", self.endpoint,
            "--listen-peer-urls", self.peer_url,
            "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", f"{self.name}={self.peer_url}",
        ]

    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
        env.update(self.extra_env)
        return env

    def start(self, *, wait: bool = True, timeout: float = 30.0) -> MemberProcess:
        """Start (and by default wait until ready). A first start that loses its free ports
        to another process (parallel tests) is retried on new ports."""
        fresh = self._fresh = not self.data_dir.exists()
        for attempt in range(3):
            self._spawn()
            if not wait:
                return self
            try:
                self.wait_ready(timeout)
                return self
            except RuntimeError:
                lost_port = "address already in use" in self.log_tail(2000).lower()
                if not (fresh and lost_port and attempt < 2):
                    raise
                shutil.rmtree(self.data_dir, ignore_errors=True)  # IDs derive from the ports
                self.client_port, self.peer_port = free_port(), free_port()
        return self

    def _spawn(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed in _reap
        log.write(f"--- start: {' '.join(self.command())}\n".encode())
        log.flush()
        self._log_file = log
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                     env=self.environment(), start_new_session=True)

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until GET /health answers 200; raises (with the log) if the process dies."""
        deadline = time.monotonic() + timeout
        url = self.http_endpoint + "/health"
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited with {self.proc.returncode} before "
                                   f"becoming ready; log:\n{self.log_tail()}")
            with contextlib.suppress(OSError, urllib.error.URLError), \
                    urllib.request.urlopen(url, timeout=1.0) as r:
                if r.status == 200 and (not self._fresh or self._is_ours()):
                    return
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(f"{self.kind} not ready after {timeout}s; log:\n"
                                   f"{self.log_tail()}")
            time.sleep(0.05)

    def _is_ours(self) -> bool:
        """The member answering on our client port lists our peer URL (not a process of
        another test that happened to take the port). Only checked on a first start: a
        restarted member keeps the peer URLs its data dir holds."""
        import grpc

        from petcd.pb.etcdserverpb import rpc_pb2

        try:
            with grpc.insecure_channel(self.address) as ch:
                member_list = ch.unary_unary(
                    "/etcdserverpb.Cluster/MemberList",
                    request_serializer=rpc_pb2.MemberListRequest.SerializeToString,
                    response_deserializer=rpc_pb2.MemberListResponse.FromString)
                resp = member_list(rpc_pb2.MemberListRequest(), timeout=2.0)
        except grpc.RpcError:
            return False
        return any(self.peer_url in m.peerURLs for m in resp.members)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self._reap()

    def kill(self) -> int | None:
        """SIGKILL: the crash case."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        return self._reap()

    def _reap(self) -> int | None:
        log = self._log_file
        if log is not None:
            log.close()  # type: ignore[attr-defined]
            self._log_file = None
        return None if self.proc is None else self.proc.returncode

    def log_tail(self, chars: int = 8000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def __enter__(self) -> MemberProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


class PetcdProcess(MemberProcess):
    """`python -m petcd` from this source tree. With separate_http=True, HTTP gets its own
    port (--listen-client-http-urls) and gRPC owns the client port (no mux)."""

    kind = "petcd"

    def __init__(self, data_dir: str | os.PathLike[str], *, separate_http: bool = False,
                 **kw: Any) -> None:
        super().__init__(data_dir, **kw)
        self.http_port = free_port() if separate_http else None

    @property
    def http_endpoint(self) -> str:
        if self.http_port is None:
            return self.endpoint
        return f"http://127.0.0.1:{self.http_port}"

    def command(self) -> list[str]:
        http = [] if self.http_port is None else ["--listen-client-http-urls",
                                                   self.http_endpoint]
        server = [f"--experimental-grpc-server={GRPC_SERVER}"] if GRPC_SERVER else []
        return [sys.executable, "-m", "petcd", *self.member_args(), *http, *server,
                *self.extra_args]

    def environment(self) -> dict[str, str]:
        env = super().environment()
        env["PYTHONPATH"] = os.pathsep.join(
            [str(SRC_DIR), *filter(None, [env.get("PYTHONPATH", "")])])
        return env


class EtcdProcess(MemberProcess):
    """The reference: real etcd (3.4 from Debian)."""

    kind = "etcd"

    def command(self) -> list[str]:
        return [ETCD_BIN, *self.member_args(), *self.extra_args]


def have_etcd() -> bool:
    return shutil.which(ETCD_BIN) is not None and shutil.which(ETCDCTL_BIN) is not None


class Etcdctl:
    """Runs etcdctl (v3 API) against endpoints; returns CompletedProcess with text."""

    def __init__(self, endpoints: str | Sequence[str], *, timeout: float = 30.0,
                 cwd: str | None = None) -> None:
        self.endpoints = endpoints if isinstance(endpoints, str) else ",".join(endpoints)
        self.timeout = timeout
        self.cwd = cwd  # unix:// endpoints name socket files relative to it

    def __call__(self, *args: str, input: str | None = None,
                 check: bool = False) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL")}
        env["ETCDCTL_API"] = "3"
        return subprocess.run([ETCDCTL_BIN, "--endpoints", self.endpoints, *args],
                              input=input, capture_output=True, text=True, env=env,
                              timeout=self.timeout, check=check, cwd=self.cwd)

    def ok(self, *args: str, input: str | None = None) -> str:
        """Run, require exit 0, return stdout."""
        r = self(*args, input=input)
        if r.returncode != 0:
            raise AssertionError(f"etcdctl {' '.join(args)} failed ({r.returncode}):\n"
                                 f"{r.stdout}{r.stderr}")
        return r.stdout
