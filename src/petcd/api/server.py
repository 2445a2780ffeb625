"""Start and stop a member's client side: the node (store + log + apply loop), the
gRPC server, and the listeners on the client URLs (gRPC and HTTP/1.1 on one port
through the mux, or separately when --listen-client-http-urls is given; TLS on https
and unixs URLs, see server/client_tls.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import stat
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import grpc

from petcd.api.auth import AuthService
from petcd.api.authz import Authorizer, recipe_checker
from petcd.api.cluster import ClusterService, HealthService
from petcd.api.election import ElectionService
from petcd.api.gateway import Gateway
from petcd.api.grpc_metrics import GrpcMetrics
from petcd.api.h2 import GrpcServer, ServerConfig
from petcd.api.h2.admission import ConnectionLimit
from petcd.api.h2.budgets import MAX_PING_STRIKES
from petcd.api.h2.registry import Registry
from petcd.api.http import HttpApp, HttpProtocol
from petcd.api.lease import LeaseService
from petcd.api.lock import LockService
from petcd.api.maintenance import MaintenanceService
from petcd.api.mux import MuxProtocol
from petcd.api.observe import Observability
from petcd.api.quota import QuotaKVService
from petcd.api.v2http import V2Http
from petcd.api.watch import WatchService
from petcd.server.client_tls import GRPCIO_TLS_REFUSED, TLS_SCHEMES, client_tls
from petcd.server.concurrency import Access, Recipes
from petcd.server.node import Node
from petcd.server.options import ServerOptions
from petcd.tls import TLSError

log = logging.getLogger("petcd.api")

# etcd lets gRPC accept this much beyond --max-request-bytes, so that requests a bit
# too large reach its own check and get "etcdserver: request is too large".
GRPC_OVERHEAD_BYTES = 512 * 1024
_INT32_MAX = 2**31 - 1
MAX_HEADER_LIST_SIZE = 64 * 1024  # both gRPC servers' header list bound
# A client that has not finished its TLS handshake by then is dropped (it holds a socket).
TLS_HANDSHAKE_TIMEOUT = 10.0


# The grpcio fallback (--experimental-grpc-server=grpcio) has no per-connection stream
# memory budget as api/h2 has (4 MiB, ~1800 small streams): it gets a stream count of
# about the same size instead (or --max-concurrent-streams if lower).
GRPCIO_MAX_STREAMS = 2048


def grpc_options(opts: ServerOptions) -> list[tuple[str, int]]:
    """grpc.aio's settings: the same bounds api/h2 keeps where grpc core has a knob
    (message size, header list size, streams, handshake timeout, connections, grpc-go's
    ping policy: 2 strikes, then GOAWAY too_many_pings)."""
    o = [
        ("grpc.max_receive_message_length", opts.max_request_bytes + GRPC_OVERHEAD_BYTES),
        ("grpc.max_send_message_length", _INT32_MAX),
        ("grpc.max_concurrent_streams", min(opts.max_concurrent_streams, GRPCIO_MAX_STREAMS)),
        ("grpc.max_metadata_size", MAX_HEADER_LIST_SIZE),
        ("grpc.so_reuseport", int(opts.socket_reuse_port)),
        ("grpc.http2.min_recv_ping_interval_without_data_ms",
         int(opts.grpc_keepalive_min_time * 1000)),
        ("grpc.http2.max_ping_strikes", MAX_PING_STRIKES),
        ("grpc.keepalive_permit_without_calls", 0),
        ("grpc.server_handshake_timeout_ms", int(opts.client_handshake_timeout * 1000)),
    ]
    if opts.max_client_connections > 0:
        o.append(("grpc.max_allowed_incoming_connections", opts.max_client_connections))
    if opts.grpc_keepalive_interval > 0:
        o.append(("grpc.keepalive_time_ms", int(opts.grpc_keepalive_interval * 1000)))
    if opts.grpc_keepalive_timeout > 0:
        o.append(("grpc.keepalive_timeout_ms", int(opts.grpc_keepalive_timeout * 1000)))
    return o


def _host_port(url: str) -> tuple[str, int]:
    u = urlsplit(url)
    assert u.hostname is not None and u.port is not None
    return u.hostname, u.port


class ClientServer:
    """Everything a member serves to clients. start() returns once all listeners are
    bound; stop() stops accepting, ends in-flight calls, then closes the node."""

    def __init__(self, opts: ServerOptions,
                 on_fatal: Callable[[BaseException], None] | None = None,
                 on_removed: Callable[[], None] | None = None) -> None:
        self.opts = opts
        # Certificates first: a bad file fails the start before anything is opened.
        self._tls = client_tls(opts)
        if self._tls is not None and opts.grpc_server != "h2":
            raise TLSError(GRPCIO_TLS_REFUSED)
        self.node = Node(opts, on_fatal=on_fatal, on_removed=on_removed)
        self._grpc: grpc.aio.Server | None = None
        self._h2: GrpcServer | None = None
        self._listeners: list[asyncio.Server] = []
        self._socket_files: list[str] = []
        self.kv = QuotaKVService(self.node, max_request_bytes=opts.max_request_bytes,
                                 max_txn_ops=opts.max_txn_ops)
        self.kv.bytes_only = opts.grpc_server != "h2"
        self.observe = Observability(self.node, pprof=opts.enable_pprof)
        # --host-whitelist guards plaintext HTTP only (etcd checks req.TLS == nil): on
        # TLS-only client URLs any Host is accepted.
        http_urls = opts.listen_client_http_urls or opts.listen_client_urls
        self.http = HttpApp(self.node, routes=((self.observe.serves, self.observe.handle),),
                            cors=opts.cors, host_whitelist=opts.host_whitelist,
                            tls=all(u.startswith(TLS_SCHEMES) for u in http_urls))
        if opts.enable_v2:
            v2 = V2Http(self.node)
            self.http.add_route(v2.serves, v2.handle)
        self.grpc_metrics = GrpcMetrics(self.node.metrics_registry,
                                        extensive=opts.metrics == "extensive",
            slow_request=opts.warning_unary_request_duration)
        self.lease = LeaseService(self.node, max_request_bytes=opts.max_request_bytes)
        self.watch = WatchService(
            self.node, response_limit=opts.max_request_bytes + GRPC_OVERHEAD_BYTES,
            progress_interval=opts.watch_progress_notify_interval)
        # Lock and Election run on this member's KV, Lease and Watch (auth: Access.authorize).
        access = Access(self.node, self.watch.hub)
        self.authz = Authorizer(self.node)
        access.authorize = recipe_checker(self.authz)
        self.recipes = Recipes(access)

    async def start(self) -> None:
        opts = self.opts
        await self.node.listen_peers()
        self.watch.start()  # before the node applies anything
        self.node.start()
        if not await self.node.wait_ready(opts.wait_cluster_ready_timeout):
            log.warning("not yet part of the cluster after %.1fs; serving clients anyway",
                        opts.wait_cluster_ready_timeout)
        if opts.initial_corrupt_check:
            await self.node.initial_corrupt_check()  # raises: the member does not serve
        await self.node.bootstrap_defrag(opts.bootstrap_defrag_threshold_mb)
        handlers: tuple[grpc.GenericRpcHandler[Any, Any], ...] = (
            self.kv.handler(), AuthService(self.node).handler(),
            ClusterService(self.node).handler(),
            MaintenanceService(self.node).handler(), HealthService(self.node).handler(),
            self.lease.handler(), self.watch.handler(),
            LockService(self.recipes, max_request_bytes=opts.max_request_bytes,
                        authz=self.authz).handler(),
            ElectionService(self.recipes, max_request_bytes=opts.max_request_bytes,
                            authz=self.authz).handler())
        handlers = self.grpc_metrics.instrument(handlers)
        if opts.enable_grpc_gateway:
            self._add_gateway(handlers)
        http_factory = lambda: HttpProtocol(  # noqa: E731
            self.http.handle, streams_body=self.http.streams_body)
        if opts.grpc_server == "h2":
            await self._start_h2(handlers, http_factory)
            return
        server = grpc.aio.server(options=grpc_options(opts))
        server.add_generic_rpc_handlers(handlers)
        self._grpc = server
        # Connections the Python side accepts (the mux, HTTP) are counted here; a port
        # grpc binds itself has grpc.max_allowed_incoming_connections.
        limit = ConnectionLimit(opts.max_client_connections)
        if opts.listen_client_http_urls:
            # gRPC owns the client URLs outright; HTTP gets its own.
            for url in opts.listen_client_urls:
                self._bind_grpc(server, url)
            for url in opts.listen_client_http_urls:
                self._listeners.append(await self._listen(url, limit.gate(http_factory)))
            await server.start()
        else:
            path = f"petcd-{os.getpid()}-{secrets.token_hex(6)}"
            if server.add_insecure_port(f"unix-abstract:{path}") == 0:
                raise OSError(f"cannot bind the internal gRPC socket {path}")
            await server.start()
            sock_path = "\0" + path  # Linux abstract namespace: nothing on disk to clean up
            mux = limit.gate(lambda: MuxProtocol(sock_path, http_factory,
                                                 opts.client_handshake_timeout))
            for url in opts.listen_client_urls:
                self._listeners.append(await self._listen(url, mux))
        await self._listen_metrics()
        log.info("ready to serve client requests on %s", ", ".join(opts.listen_client_urls))

    def _add_gateway(self, handlers: tuple[grpc.GenericRpcHandler[Any, Any], ...]) -> None:
        """The JSON gateway calls the same handlers the gRPC server serves."""
        registry = Registry()
        registry.add_generic_rpc_handlers(handlers)
        self.gateway = Gateway(
            registry.lookup,
            max_receive=self.opts.max_request_bytes + GRPC_OVERHEAD_BYTES)
        self.http.add_streaming_route(self.gateway.serves, self.gateway.handle,
                                      self.gateway.streams_body)

    async def _start_h2(self, handlers: tuple[grpc.GenericRpcHandler[Any, Any], ...],
                        http_factory: Callable[[], asyncio.Protocol]) -> None:
        """petcd's own gRPC server: HTTP/1.1 is served on the client URLs' listener itself
        (unless --listen-client-http-urls moves it), no forwarding hop."""
        opts = self.opts
        separate_http = bool(opts.listen_client_http_urls)
        server = GrpcServer(ServerConfig(
            max_receive_message=opts.max_request_bytes + GRPC_OVERHEAD_BYTES,
            max_concurrent_streams=min(opts.max_concurrent_streams, 2**32 - 1),
            keepalive_interval=opts.grpc_keepalive_interval,
            keepalive_timeout=opts.grpc_keepalive_timeout,
            keepalive_min_time=opts.grpc_keepalive_min_time,
            handshake_timeout=opts.client_handshake_timeout,
            max_header_list_size=MAX_HEADER_LIST_SIZE,
            max_connections=opts.max_client_connections),
            http_factory=None if separate_http else http_factory)
        server.add_generic_rpc_handlers(handlers)
        self._h2 = server
        for url in opts.listen_client_urls:
            self._listeners.append(await self._listen(url, server.protocol_factory))
        for url in opts.listen_client_http_urls:  # counted with the gRPC connections
            self._listeners.append(await self._listen(url, server.limit.gate(http_factory)))
        await self._listen_metrics()
        log.info("ready to serve client requests on %s (gRPC server: h2)",
                 ", ".join(opts.listen_client_urls))

    async def _listen_metrics(self) -> None:
        """--listen-metrics-urls: /metrics and the health endpoints only (etcd's metrics
        mux), with no gateway and no CORS."""
        if not self.opts.listen_metrics_urls:
            return
        app = HttpApp(self.node, routes=((self.observe.serves, self.observe.handle),),
                      metrics_only=True)
        for url in self.opts.listen_metrics_urls:
            self._listeners.append(await self._listen(url, lambda: HttpProtocol(app.handle)))

    def _bind_grpc(self, server: grpc.aio.Server, url: str) -> None:
        u = urlsplit(url)
        if u.scheme in ("unix", "unixs"):
            target = f"unix:{u.netloc}"
        else:
            host, port = _host_port(url)
            target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            bound = server.add_insecure_port(target)
        except RuntimeError:  # newer gRPC raises instead of returning 0
            bound = 0
        if bound == 0:
            raise OSError(f"listen tcp {target}: bind: address already in use")

    async def _listen(self, url: str,
                      factory: Callable[[], asyncio.BaseProtocol]) -> asyncio.Server:
        loop = asyncio.get_running_loop()
        u = urlsplit(url)
        tls: dict[str, Any] = {}
        if u.scheme in TLS_SCHEMES:
            assert self._tls is not None
            tls = {"ssl": self._tls.context, "ssl_handshake_timeout": TLS_HANDSHAKE_TIMEOUT}
            if self._tls.gate is not None:
                factory = self._tls.gate.wrap(factory)
        if u.scheme in ("unix", "unixs"):
            path = u.netloc
            with contextlib.suppress(FileNotFoundError):
                if stat.S_ISSOCK(os.stat(path).st_mode):
                    os.unlink(path)  # a stale socket of an earlier run, as etcd removes it
            self._socket_files.append(path)
            return await loop.create_unix_server(factory, path, **tls)
        host, port = _host_port(url)
        return await loop.create_server(
            factory, host, port, reuse_address=self.opts.socket_reuse_address or None,
            reuse_port=self.opts.socket_reuse_port or None, backlog=1024,
            family=socket.AF_UNSPEC, **tls)

    async def stop(self, grace: float = 2.0) -> None:
        for listener in self._listeners:
            listener.close()
        self.watch.close()  # watch streams never end by themselves
        if self._grpc is not None:
            await self._grpc.stop(grace)
        if self._h2 is not None:
            await self._h2.stop(grace)
        for listener in self._listeners:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(listener.wait_closed(), 1.0)
        await self.node.stop()
        for path in self._socket_files:
            with contextlib.suppress(OSError):
                os.unlink(path)
