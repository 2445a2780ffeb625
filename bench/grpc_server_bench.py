"""What a gRPC server costs per unary call, with a do-nothing raw-bytes handler, for the
servers petcd can use:

- `grpcio`: grpc.aio bound to the port directly;
- `grpcio-mux`: grpc.aio behind petcd's gRPC/HTTP-1.1 mux (api/mux.py, the forwarding hop);
- `h2lib`: a prototype on the `h2` library (python-hyper, sans-IO) on a uvloop Protocol;
- `petcd-h2`: petcd's own HTTP/2 gRPC server (petcd.api.h2), HTTP/1.1 on the same port.

Each server runs in its own process; its CPU time (from /proc) is divided by the calls it
served. Load generators:

- `h2load` (Debian's nghttp2-client, C): POSTs gRPC-framed bodies, costs little CPU;
- `grpcio`: the grpcio Python client (grpc.aio, bytes in/out) in worker processes;
- `etcdctl`: Go gRPC, one `etcdctl get` process per call (connection setup included), a
  check that real Go clients are served, and its cost including a fresh connection;
- `etcdctl-perf` (members only, 60 s): `etcdctl check perf --load=m`, 200 Go clients
  putting 1000 keys/s.

    python bench/grpc_server_bench.py                          # all servers, all loads
    python bench/grpc_server_bench.py --servers grpcio,petcd-h2 --loads h2load --seconds 5
    python bench/grpc_server_bench.py serve petcd-h2 12345     # just run one server

Real members instead of do-nothing servers (the KV work included):
`--servers member-grpcio,member-h2,member-etcd --call put` (or `--call range`).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

CLK_TCK = os.sysconf("SC_CLK_TCK")
METHOD = "/etcdserverpb.KV/Range"
REQUEST = b"\x0a\x03foo"  # RangeRequest{key: "foo"}
# --call put: PutRequest{key: "foo", value: 256 bytes} (for members)
PUT = ("/etcdserverpb.KV/Put", b"\x0a\x03foo\x12\x80\x02" + b"v" * 256)
# RangeResponse{kvs: [{key: "foo", value: "bar"}], count: 1}
RESPONSE = b"\x12\x0a\x0a\x03foo\x2a\x03bar\x20\x01"


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its threads (from /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------- servers (child process)

async def _nothing(raw: bytes, context: Any) -> bytes:
    return RESPONSE


def _generic_handlers() -> Any:
    import grpc

    return grpc.method_handlers_generic_handler("etcdserverpb.KV", {
        m: grpc.unary_unary_rpc_method_handler(_nothing)
        for m in ("Range", "Put", "DeleteRange", "Txn", "Compact")})


async def _http_handler(method: str, target: str, headers: Any, body: bytes) -> Any:
    return 200, [], b"ok\n"


async def serve_grpcio(port: int, mux: bool) -> None:
    import grpc

    from petcd.api.http import HttpProtocol
    from petcd.api.mux import MuxProtocol

    server = grpc.aio.server()
    server.add_generic_rpc_handlers((_generic_handlers(),))
    if not mux:
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
    else:
        path = f"grpc-bench-{os.getpid()}"
        server.add_insecure_port(f"unix-abstract:{path}")
        await server.start()
        await asyncio.get_running_loop().create_server(
            lambda: MuxProtocol("\0" + path, lambda: HttpProtocol(_http_handler)),
            "127.0.0.1", port)
    await asyncio.Event().wait()


class H2LibProtocol(asyncio.Protocol):
    """The prototype on the h2 library: enough for unary calls."""

    def __init__(self) -> None:
        import h2.config
        import h2.connection
        import h2.events

        self.ev = h2.events
        self.conn = h2.connection.H2Connection(config=h2.config.H2Configuration(
            client_side=False, header_encoding=None, validate_inbound_headers=False,
            validate_outbound_headers=False, normalize_inbound_headers=False,
            normalize_outbound_headers=False))
        self.transport: asyncio.Transport | None = None
        self.paths: dict[int, bytes] = {}
        self.bodies: dict[int, bytearray] = {}

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.conn.initiate_connection()
        transport.write(self.conn.data_to_send())

    def data_received(self, data: bytes) -> None:
        ev = self.ev
        for e in self.conn.receive_data(data):
            if isinstance(e, ev.RequestReceived):
                self.paths[e.stream_id] = dict(e.headers)[b":path"]
                self.bodies[e.stream_id] = bytearray()
            elif isinstance(e, ev.DataReceived):
                self.bodies[e.stream_id] += e.data
                self.conn.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
            elif isinstance(e, ev.StreamEnded):
                asyncio.get_running_loop().create_task(self.call(e.stream_id))
        self._flush()

    async def call(self, sid: int) -> None:
        body = self.bodies.pop(sid)
        self.paths.pop(sid)
        resp = await _nothing(bytes(body[5:]), None)
        c = self.conn
        if self.transport is None:
            return
        c.send_headers(sid, [(b":status", b"200"), (b"content-type", b"application/grpc")])
        c.send_data(sid, b"\0" + len(resp).to_bytes(4, "big") + resp)
        c.send_headers(sid, [(b"grpc-status", b"0")], end_stream=True)
        self._flush()

    def _flush(self) -> None:
        out = self.conn.data_to_send()
        if out and self.transport is not None:
            self.transport.write(out)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


async def serve_h2lib(port: int) -> None:
    await asyncio.get_running_loop().create_server(H2LibProtocol, "127.0.0.1", port)
    await asyncio.Event().wait()


async def serve_petcd_h2(port: int) -> None:
    from petcd.api.h2 import GrpcServer

    server = GrpcServer(http_factory=None)
    server.add_generic_rpc_handlers((_generic_handlers(),))
    await server.listen_tcp("127.0.0.1", port)
    await asyncio.Event().wait()


SERVERS: dict[str, Callable[[int], Any]] = {
    "grpcio": lambda port: serve_grpcio(port, mux=False),
    "grpcio-mux": lambda port: serve_grpcio(port, mux=True),
    "h2lib": serve_h2lib,
    "petcd-h2": serve_petcd_h2,
}


def serve(kind: str, port: int) -> None:
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as r:
        r.run(SERVERS[kind](port))


# ---------------------------------------------------------------- load generators

class Result:
    def __init__(self, calls: int, seconds: float, server_cpu: float, client_cpu: float,
                 errors: int = 0) -> None:
        self.calls, self.seconds = calls, seconds
        self.server_cpu, self.client_cpu, self.errors = server_cpu, client_cpu, errors

    def line(self) -> str:
        us = self.server_cpu / max(1, self.calls) * 1e6
        return (f"{self.calls / self.seconds:9.0f} calls/s  server {us:6.1f} us/call "
                f"({self.server_cpu / self.seconds:4.2f} cores)  client "
                f"{self.client_cpu / self.seconds:4.2f} cores"
                + (f"  errors {self.errors}" if self.errors else ""))


def grpc_frame(msg: bytes) -> bytes:
    return b"\0" + len(msg).to_bytes(4, "big") + msg


def load_h2load(pid: int, port: int, seconds: float, clients: int, streams: int,
                tmp: Path, method: str, request: bytes) -> Result:
    body = tmp / "req.bin"
    body.write_bytes(grpc_frame(request))
    cmd = ["h2load", "-D", str(max(1, round(seconds))), "-c", str(clients), "-m", str(streams),
           "-d", str(body), "-H", "content-type: application/grpc", "-H", "te: trailers",
           f"http://127.0.0.1:{port}{method}"]
    _children_cpu()
    s0 = cpu_seconds(pid)
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out, _ = p.communicate(timeout=seconds + 60)
    elapsed = time.monotonic() - t0
    s1 = cpu_seconds(pid)
    done = 0
    errored = 0
    for line in out.splitlines():
        if line.startswith("requests:"):
            parts = line.split(",")
            done = int(parts[3].split()[0])  # "N succeeded"
            errored = int(parts[4].split()[0]) + int(parts[5].split()[0])
    if done == 0:
        raise RuntimeError(f"h2load served nothing:\n{out}")
    client_cpu = _children_cpu()
    return Result(done, elapsed, s1 - s0, client_cpu, errored)


_last_children = 0.0


def _children_cpu() -> float:
    """CPU of waited-for children since the last call (h2load's, etcdctl's)."""
    global _last_children
    t = os.times()
    now = t.children_user + t.children_system
    spent, _last_children = now - _last_children, now
    return spent


async def _grpc_worker_main(address: str, concurrency: int, seconds: float,
                            method: str, request: bytes, ready: Any, go: Any,
                            out: Any) -> None:
    import grpc

    ch = grpc.aio.insecure_channel(address)
    call = ch.unary_unary(method)
    await asyncio.wait_for(ch.channel_ready(), 30)
    ready.put(0)
    await asyncio.get_running_loop().run_in_executor(None, go.wait)
    count = errors = 0
    stop_at = time.monotonic() + seconds

    async def loop() -> None:
        nonlocal count, errors
        while time.monotonic() < stop_at:
            try:
                await call(request, timeout=30)
                count += 1
            except grpc.aio.AioRpcError:
                errors += 1

    await asyncio.gather(*(loop() for _ in range(concurrency)))
    out.put((count, errors))
    await ch.close()


def _grpc_worker(*args: Any) -> None:
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as r:
        r.run(_grpc_worker_main(*args))


def load_grpcio(pid: int, port: int, seconds: float, clients: int, procs: int,
                method: str, request: bytes) -> Result:
    ctx = mp.get_context("spawn")
    ready, out, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    per = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
    workers = [ctx.Process(target=_grpc_worker, args=(f"127.0.0.1:{port}", per[i], seconds,
                                                      method, request, ready, go, out))
               for i in range(procs)]
    for w in workers:
        w.start()
    try:
        for _ in workers:
            ready.get(timeout=60)
        s0 = cpu_seconds(pid)
        c0 = sum(cpu_seconds(w.pid) for w in workers if w.pid)
        t0 = time.monotonic()
        go.set()
        results = [out.get(timeout=seconds + 60) for _ in workers]
        elapsed = time.monotonic() - t0
        s1 = cpu_seconds(pid)
        c1 = sum(cpu_seconds(w.pid) for w in workers if w.pid)
    finally:
        for w in workers:
            w.join(10)
            if w.is_alive():
                w.kill()
    return Result(sum(c for c, _ in results), elapsed, s1 - s0, c1 - c0,
                  sum(e for _, e in results))


def load_etcdctl(pid: int, port: int, calls: int, put: bool) -> Result:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL")}
    env["ETCDCTL_API"] = "3"
    _children_cpu()
    s0 = cpu_seconds(pid)
    t0 = time.monotonic()
    errors = 0
    for _ in range(calls):
        op = ["put", "foo", "v" * 256] if put else ["get", "foo"]
        r = subprocess.run(["etcdctl", "--endpoints", f"127.0.0.1:{port}", *op],
                           env=env, capture_output=True, timeout=30)
        errors += r.returncode != 0
    elapsed = time.monotonic() - t0
    s1 = cpu_seconds(pid)
    return Result(calls, elapsed, s1 - s0, _children_cpu(), errors)


def load_etcdctl_perf(pid: int, port: int) -> Result:
    """`etcdctl check perf --load=m`: 200 Go clients putting 1000 keys/s for 60 s (real
    members only: it needs Put, Range, DeleteRange and Compact to work)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL")}
    env["ETCDCTL_API"] = "3"
    _children_cpu()
    s0 = cpu_seconds(pid)
    t0 = time.monotonic()
    r = subprocess.run(["etcdctl", "--endpoints", f"127.0.0.1:{port}", "check", "perf",
                        "--load=m"], env=env, capture_output=True, text=True, timeout=300)
    elapsed = time.monotonic() - t0
    s1 = cpu_seconds(pid)
    rate = 0.0
    for line in r.stdout.splitlines():
        if "Throughput is" in line:
            rate = float(line.split("Throughput is")[1].split()[0])
    return Result(int(rate * 60), elapsed, s1 - s0, _children_cpu(),
                  0 if "PASS" in r.stdout else 1)


# ---------------------------------------------------------------- driver

def start_server(kind: str, tmp: Path) -> tuple[Any, int]:
    if kind.startswith("member-"):  # a real member: petcd with either server, or etcd
        from petcd.testing import EtcdProcess, PetcdProcess

        target = kind.removeprefix("member-")
        if target == "etcd":
            m: Any = EtcdProcess(tmp / kind).start()
        else:
            m = PetcdProcess(tmp / kind, args=[f"--experimental-grpc-server={target}"]).start()
        return m.proc, m.client_port
    port = free_port()
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1] / "src")
    p = subprocess.Popen([sys.executable, __file__, "serve", kind, str(port)], env=env)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return p, port
        except OSError:
            if p.poll() is not None:
                raise RuntimeError(f"server {kind} exited with {p.returncode}") from None
            time.sleep(0.05)
    p.kill()
    raise RuntimeError(f"server {kind} did not listen")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        serve(sys.argv[2], int(sys.argv[3]))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--servers", default="grpcio,grpcio-mux,h2lib,petcd-h2")
    ap.add_argument("--loads", default="h2load,grpcio,etcdctl")
    ap.add_argument("--seconds", type=float, default=5.0, help="per cell (default 5)")
    ap.add_argument("--clients", type=int, default=64,
                    help="concurrent calls (h2load: connections x streams; default 64)")
    ap.add_argument("--conns", type=int, default=8, help="h2load connections (default 8)")
    ap.add_argument("--procs", type=int, default=1, help="grpcio client processes")
    ap.add_argument("--etcdctl-calls", type=int, default=100)
    ap.add_argument("--call", choices=("range", "put"), default="range",
                    help="the request: Range of one key (default) or Put of 256 bytes")
    args = ap.parse_args()
    method, request = PUT if args.call == "put" else (METHOD, REQUEST)
    servers = [s for s in args.servers.split(",") if s]
    loads = [x for x in args.loads.split(",") if x]
    if "h2load" in loads and shutil.which("h2load") is None:
        print("h2load not installed (apt-get install nghttp2-client): skipped", file=sys.stderr)
        loads.remove("h2load")
    if "etcdctl" in loads and shutil.which("etcdctl") is None:
        loads.remove("etcdctl")
    results: dict[tuple[str, str], Result] = {}
    with tempfile.TemporaryDirectory(prefix="grpc-bench-") as tmpdir:
        tmp = Path(tmpdir)
        procs: dict[str, tuple[Any, int]] = {}
        try:
            for s in servers:
                procs[s] = start_server(s, tmp)
            # Loads take turns server by server, so that noisy neighbours hurt all alike.
            for load in loads:
                for s in servers:
                    p, port = procs[s]
                    if load == "h2load":
                        conns = min(args.conns, args.clients)
                        r = load_h2load(p.pid, port, args.seconds, conns,
                                        max(1, args.clients // conns), tmp, method, request)
                    elif load == "grpcio":
                        r = load_grpcio(p.pid, port, args.seconds, args.clients, args.procs,
                                        method, request)
                    elif load == "etcdctl-perf":
                        r = load_etcdctl_perf(p.pid, port)
                    else:
                        r = load_etcdctl(p.pid, port, args.etcdctl_calls, args.call == "put")
                    results[(s, load)] = r
                    print(f"{s:11} {load:8} {r.line()}", flush=True)
        finally:
            for p, _ in procs.values():
                p.send_signal(signal.SIGKILL)
                p.wait()
    print("\nserver CPU us/call (calls/s)")
    print(f"{'server':11} " + " ".join(f"{x:>22}" for x in loads))
    for s in servers:
        row = f"{s:11} "
        for load in loads:
            r = results[(s, load)]
            row += f"{r.server_cpu / max(1, r.calls) * 1e6:>10.1f} ({r.calls / r.seconds:>8.0f}) "
        print(row)


if __name__ == "__main__":
    main()
