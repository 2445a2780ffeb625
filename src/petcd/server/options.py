"""What the member needs to know from its configuration, kept free of flag parsing so
tests and embedders can build it. petcd.cli fills it from etcd's flags: each flag's row in
cli/flags.py names the field it fills; a field no flag fills says why in its metadata
(tests/cli/test_flag_table.py checks both directions, and that the defaults agree)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class ServerOptions:
    name: str = "default"
    data_dir: str = "default.petcd"
    wal_dir: str = ""  # --wal-dir: the WAL on its own disk (default <data-dir>/member/wal)
    listen_client_urls: tuple[str, ...] = ("http://localhost:2379",)
    # When set, HTTP is served here only and gRPC owns listen_client_urls (no mux hop).
    listen_client_http_urls: tuple[str, ...] = ()
    advertise_client_urls: tuple[str, ...] = ("http://localhost:2379",)
    initial_advertise_peer_urls: tuple[str, ...] = ("http://localhost:2380",)
    initial_cluster: dict[str, tuple[str, ...]] = field(
        default_factory=lambda: {"default": ("http://localhost:2380",)})
    initial_cluster_token: str = "etcd-cluster"
    initial_cluster_state: str = "new"
    max_request_bytes: int = 1572864
    max_txn_ops: int = 128
    max_concurrent_streams: int = 2**32 - 1
    grpc_keepalive_min_time: float = 5.0
    grpc_keepalive_interval: float = 7200.0
    grpc_keepalive_timeout: float = 20.0
    socket_reuse_port: bool = False
    socket_reuse_address: bool = False
    # --unsafe-no-fsync: commits are not synced (a crash of the machine loses writes).
    unsafe_no_fsync: bool = False
    # Index keys a compaction visits per batch (--experimental-compaction-batch-limit);
    # the rest continues in later batches so a large compaction never stalls writes.
    compaction_batch_limit: int = 1000
    # Seconds between two of those batches (--experimental-compaction-sleep-interval).
    compaction_sleep_interval: float = 0.01
    # --auto-compaction-mode / -retention: "periodic" (retention in seconds) or "revision"
    # (retention in revisions); 0 turns auto-compaction off.
    auto_compaction_mode: str = "periodic"
    auto_compaction_retention: float = 0.0
    # Corruption checks: before serving (initial), every corrupt_check_time seconds on the
    # leader (0: off), and after compactions every compact_hash_check_time (if enabled).
    initial_corrupt_check: bool = False
    corrupt_check_time: float = 0.0
    compact_hash_check: bool = False
    compact_hash_check_time: float = 60.0
    # Warnings: a unary request slower than this (--warning-unary-request-duration), an
    # applied batch slower than this (--experimental-warning-apply-duration); 0: never.
    warning_unary_request_duration: float = 0.3
    warning_apply_duration: float = 0.1
    # --experimental-stop-grpc-service-on-defrag: grpc health NOT_SERVING while defragmenting;
    # --experimental-bootstrap-defrag-threshold-megabytes: defragment at start when at
    # least this much of the file is free (0: never).
    stop_grpc_service_on_defrag: bool = False
    bootstrap_defrag_threshold_mb: int = 0
    # --experimental-learner-auto-promote: the leader promotes caught-up learners.
    learner_auto_promote: bool = False
    # --force-new-cluster: on restart, commit the removal of every other member.
    force_new_cluster: bool = False
    # Upper bound on proposals handed to Raft in one batch (one WAL frame + one fsync).
    max_batch_entries: int = field(default=4096, metadata={
        "no_flag": "petcd's own bound on a Raft batch; etcd has no such setting"})
    # The backend commits what was applied at most this long after it was applied
    # (--backend-batch-interval) and after this many applied operations
    # (--backend-batch-limit); etcd's defaults. The WAL has everything applied.
    backend_batch_interval_ms: int = 100
    backend_batch_limit: int = 10000
    # --experimental-grpc-server: "grpcio" (grpc.aio) or "h2" (petcd.api.h2).
    grpc_server: str = "h2"
    # Client-URL connections open at once (0: no limit) and the time a new one has to
    # start talking (--experimental-max-client-connections / -client-handshake-timeout).
    max_client_connections: int = 10000
    client_handshake_timeout: float = 10.0
    # Seconds between progress notifications to watchers that asked for them
    # (--experimental-watch-progress-notify-interval; etcd raises < 100ms to 100ms).
    watch_progress_notify_interval: float = 600.0
    # Clustering (Raft and the peer transport).
    listen_peer_urls: tuple[str, ...] = ("http://localhost:2380",)
    heartbeat_ms: int = 100
    election_ms: int = 1000
    pre_vote: bool = True
    initial_election_tick_advance: bool = True
    strict_reconfig_check: bool = True
    max_learners: int = 1
    # Applied entries between snapshots (then the log is compacted, old files purged).
    snapshot_count: int = 100000
    # Entries kept in the log behind a snapshot, for slow followers to catch up from.
    snapshot_catchup_entries: int = 5000
    max_wals: int = 5
    max_snapshots: int = 5
    # Longest wait at start for this member to join before serving clients anyway.
    wait_cluster_ready_timeout: float = 5.0
    # Peer TLS (https peer URLs): our certificate, the CA peers' certificates must chain
    # to, and whether dialling peers must present one (--peer-client-cert-auth).
    peer_cert_file: str = ""
    peer_key_file: str = ""
    peer_client_cert_file: str = ""
    peer_client_key_file: str = ""
    peer_trusted_ca_file: str = ""
    peer_client_cert_auth: bool = False
    # Beyond the files: CRL, the CN or hostname a peer's certificate must carry, and
    # --peer-auto-tls (a self-signed certificate in <data-dir>/fixtures/peer).
    peer_crl_file: str = ""
    peer_cert_allowed_cn: str = ""
    peer_cert_allowed_hostname: str = ""
    peer_auto_tls: bool = False
    # etcd checks that a peer's client certificate SANs name the peer's address, unless
    # --experimental-peer-skip-client-san-verification.
    peer_skip_client_san_verification: bool = False
    # Client TLS (https and unixs client URLs), etcd's --cert-file and friends. A trusted
    # CA alone already makes client certificates mandatory (etcd's rule); --auto-tls
    # generates a certificate into <data-dir>/fixtures/client when none is given.
    cert_file: str = ""
    key_file: str = ""
    client_cert_file: str = ""
    client_key_file: str = ""
    trusted_ca_file: str = ""
    client_cert_auth: bool = False
    client_crl_file: str = ""
    client_cert_allowed_hostname: str = ""
    auto_tls: bool = False
    # Shared by client and peer TLS: Go cipher suite names, TLS1.2/TLS1.3 bounds, and
    # the validity in years of auto-TLS certificates.
    cipher_suites: tuple[str, ...] = ()
    tls_min_version: str = "TLS1.2"
    tls_max_version: str = ""
    self_signed_cert_validity: int = 1
    # --quota-backend-bytes: NOSPACE alarm past this backend size (0: 2 GiB; < 0: no quota).
    quota_backend_bytes: int = 0
    # --experimental-enable-lease-checkpoint(-persist): the leader records long leases'
    # remaining TTLs in the log every lease_checkpoint_interval seconds.
    lease_checkpoint: bool = False
    lease_checkpoint_persist: bool = False
    lease_checkpoint_interval: float = field(default=300.0, metadata={
        "no_flag": "etcd has no flag for it either (its tests shorten it)"})
    # Auth: --auth-token ("simple" or "jwt,<options>"), --auth-token-ttl (seconds a
    # simple token lives after its last use), --bcrypt-cost (password hashing).
    auth_token: str = "simple"
    auth_token_ttl: float = 300.0
    bcrypt_cost: int = 10
    # HTTP on the client URLs: the JSON gateway (--enable-grpc-gateway), --cors origins
    # and --host-whitelist ("*" or empty: any).
    enable_grpc_gateway: bool = True
    # --enable-v2: serve etcd 3.4's v2 HTTP API (/v2/keys, /v2/members, /v2/stats...).
    enable_v2: bool = False
    cors: tuple[str, ...] = ("*",)
    host_whitelist: tuple[str, ...] = ("*",)
    # --metrics: "basic", or "extensive" (adds gRPC handling-time histograms);
    # --listen-metrics-urls: /metrics and /health on their own listeners too.
    metrics: str = "basic"
    listen_metrics_urls: tuple[str, ...] = ()
    # --enable-pprof: a Python profile at /debug/pprof/profile (see api/observe.py).
    enable_pprof: bool = False
