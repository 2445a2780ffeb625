"""The gRPC server's settings and per-connection budgets (docs/ARCHITECTURE.md lists
them with their defaults)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ServerConfig:
    max_receive_message: int = 4 * 1024 * 1024  # grpc's default
    max_send_message: int = 2**31 - 1
    max_concurrent_streams: int = 2**31 - 1
    initial_window: int = 1 << 20  # per stream, what a client may send before we read
    connection_window: int = 16 << 20
    max_header_list_size: int = 64 * 1024
    # Abuse bounds (docs/ARCHITECTURE.md lists them): a client must finish the preface
    # and its SETTINGS within handshake_timeout; pings sooner than keepalive_min_time
    # (--grpc-keepalive-min-time) count as strikes, as grpc-go counts them; streams the
    # client resets (or we refuse) spend a token bucket, and so do SETTINGS frames
    # (each needs an ACK); open streams are charged
    # STREAM_BASE_COST + their header list size against stream_memory; at most
    # max_connections connections are open at once (0: no limit).
    handshake_timeout: float = 10.0
    keepalive_min_time: float = 5.0
    reset_burst: int = 1000
    reset_rate: float = 100.0
    settings_burst: int = 1000
    settings_rate: float = 100.0
    stream_memory: int = 4 * 1024 * 1024
    max_connections: int = 0
    # Server pings (--grpc-keepalive-interval/-timeout): a connection whose client does
    # not answer a ping within keepalive_timeout is closed. 0 disables.
    keepalive_interval: float = 0.0
    keepalive_timeout: float = 20.0
