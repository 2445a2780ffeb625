"""One member process (petcd or etcd) on free loopback ports, and etcdctl bound to it."""

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
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from petcd.testing_pki import ClientTLS

SRC_DIR = Path(__file__).resolve().parents[2]  # the directory holding petcd/
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


# Flags that keep a member's backend from committing on its own (only at snapshots and
# clean stops): after a kill -9, everything since its start is in its WAL only.
LAGGING_BACKEND = ["--backend-batch-interval", "1h", "--backend-batch-limit", "1000000000"]


def backend_index(data_dir: str | os.PathLike[str]) -> int:
    """The Raft index a stopped member's backend file holds (where its replay starts)."""
    from petcd.mvcc import Backend

    backend = Backend(os.path.join(data_dir, "member", "snap", "db"))
    try:
        return backend.committed_index()[0]
    finally:
        backend.close()


class MemberProcess:
    """One server process; subclasses say how to start it. Output goes to a log file."""

    kind = "member"

    def __init__(self, data_dir: str | os.PathLike[str], *, name: str = "default",
                 args: Sequence[str] = (), env: Mapping[str, str] | None = None,
                 client_port: int | None = None, peer_port: int | None = None,
                 initial_cluster: str | None = None,
                 initial_cluster_state: str = "new", peer_scheme: str = "http",
                 client_tls: ClientTLS | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.peer_scheme = peer_scheme  # https: pass the --peer-* TLS flags in args
        # Given: the client URL is https (pass --cert-file etc. in args) and the helpers
        # here (readiness, status) reach it with these client settings.
        self.client_tls = client_tls
        self.name = name
        # None: a cluster of one (this member); else --initial-cluster as given.
        self.initial_cluster = initial_cluster
        self.initial_cluster_state = initial_cluster_state
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
        scheme = "http" if self.client_tls is None else "https"
        return f"{scheme}://127.0.0.1:{self.client_port}"

    def grpc_channel(self) -> Any:
        """A grpc channel to the client port (secure when the client URL is https)."""
        import grpc

        if self.client_tls is None:
            return grpc.insecure_channel(self.address)
        creds = self.client_tls.grpc_credentials(("127.0.0.1", self.client_port))
        return grpc.secure_channel(self.address, creds)

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
        return f"{self.peer_scheme}://127.0.0.1:{self.peer_port}"

    def member_args(self) -> list[str]:
        return [
            "--name", self.name,
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.endpoint,
            "--advertise-client-urls", self.endpoint,
            "--listen-peer-urls", self.peer_url,
            "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", self.initial_cluster or f"{self.name}={self.peer_url}",
            "--initial-cluster-state", self.initial_cluster_state,
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
                # (a cluster member's ports are in its peers' flags: its cluster retries)
                if not (fresh and lost_port and attempt < 2 and self.initial_cluster is None):
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
        tls = None if not url.startswith("https") or self.client_tls is None else \
            self.client_tls.ssl_context()
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited with {self.proc.returncode} before "
                                   f"becoming ready; log:\n{self.log_tail()}")
            with contextlib.suppress(OSError, urllib.error.URLError), \
                    urllib.request.urlopen(url, timeout=1.0, context=tls) as r:
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

        if self.client_tls is not None and self.client_tls.ca is None:
            return self._serves_our_auto_tls_cert()
        try:
            with self.grpc_channel() as ch:
                member_list = ch.unary_unary(
                    "/etcdserverpb.Cluster/MemberList",
                    request_serializer=rpc_pb2.MemberListRequest.SerializeToString,
                    response_deserializer=rpc_pb2.MemberListResponse.FromString)
                resp = member_list(rpc_pb2.MemberListRequest(), timeout=2.0)
        except grpc.RpcError:
            return False
        return any(self.peer_url in m.peerURLs for m in resp.members)

    def _serves_our_auto_tls_cert(self) -> bool:
        """An auto-TLS member is ours when it serves the certificate in our data dir (a
        grpc client cannot reach etcd's P-521 auto-TLS certificate to ask it)."""
        import ssl

        mine = self.data_dir / "fixtures" / "client" / "cert.pem"
        try:
            served = ssl.get_server_certificate(("127.0.0.1", self.client_port), timeout=2)
            return ssl.PEM_cert_to_DER_cert(served) == \
                ssl.PEM_cert_to_DER_cert(mine.read_text())
        except (OSError, ValueError):
            return False

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def pause(self, timeout: float = 30.0) -> None:
        """SIGSTOP: the process hangs (as under a long GC pause or a frozen VM). Returns
        once every thread has stopped: kill() only starts the stop, which one thread takes
        to the others when it next runs, so on a loaded machine the member can go on
        answering for a while after the signal was sent."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        wait_stopped(self.proc.pid, timeout)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

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
            with contextlib.suppress(OSError):
                self.proc.send_signal(signal.SIGCONT)  # (a paused process dies all the same)
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
        return f"{self.endpoint.split(':', 1)[0]}://127.0.0.1:{self.http_port}"

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
                 cwd: str | None = None, tls: ClientTLS | None = None) -> None:
        self.endpoints = endpoints if isinstance(endpoints, str) else ",".join(endpoints)
        self.timeout = timeout
        self.cwd = cwd  # unix:// endpoints name socket files relative to it
        self.tls_args = [] if tls is None else tls.etcdctl_args()

    def __call__(self, *args: str, input: str | None = None,
                 check: bool = False) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL")}
        env["ETCDCTL_API"] = "3"
        return subprocess.run([ETCDCTL_BIN, "--endpoints", self.endpoints, *self.tls_args,
                               *args],
                              input=input, capture_output=True, text=True, env=env,
                              timeout=self.timeout, check=check, cwd=self.cwd)

    def ok(self, *args: str, input: str | None = None) -> str:
        """Run, require exit 0, return stdout."""
        r = self(*args, input=input)
        if r.returncode != 0:
            raise AssertionError(f"etcdctl {' '.join(args)} failed ({r.returncode}):\n"
                                 f"{r.stdout}{r.stderr}")
        return r.stdout


def wait_stopped(pid: int, timeout: float = 30.0) -> None:
    """Until every thread of `pid` has stopped after a SIGSTOP (a signal only starts the
    stop: one thread takes it to the others when it next runs)."""
    deadline = time.monotonic() + timeout
    while not _stopped(pid):
        if time.monotonic() > deadline:
            raise TimeoutError(f"process {pid} did not stop within {timeout} s")
        time.sleep(0.001)


def _stopped(pid: int) -> bool:
    """Every thread of `pid` is stopped (state T in /proc), or the process is gone."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return True
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                state = f.read().rpartition(")")[2].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            continue  # (a thread that ended meanwhile)
        if state not in ("T", "t", "Z", "X"):  # (stopped, or dead)
            return False
    return True
