"""etcd's server flags (3.4 plus those 3.5 added), with etcd's names, defaults and
help text in our own words, declared once: each row says the flag's kind, default, help
and the ServerOptions field it fills (`option`; through a `convert` of cli/flag_rules.py
when the value needs more than a type change). Its ETCD_* variable and config-file key
follow from its name (`file_key` adds etcd's nested *-transport-security key). A flag
with no option says why (`no_option`: the CLI reads it itself), or is listed in
NOT_FOR_PETCD (refused or warned about). tests/cli/test_flag_table.py holds the table
to this.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

from petcd.cli import flag_rules as rules

if TYPE_CHECKING:
    from petcd.cli.config import Config


class Kind(Enum):
    STRING = "string"
    BOOL = "bool"
    INT = "int"  # signed
    UINT = "uint"
    DURATION = "duration"  # Go syntax: 300ms, 5s, 2h; a bare number in a config file is ns
    URLS = "urls"  # comma separated list of URLs
    STRINGS = "strings"  # comma separated list
    CHOICE = "choice"


# The flag's typed value (and the whole configuration, for flags read together) -> the
# option's value; ValueError when the value is refused (its text is the user's message).
Convert = Callable[[Any, "Config"], object]


@dataclass(frozen=True, slots=True)
class Flag:
    name: str
    kind: Kind
    default: object
    help: str
    section: str
    option: str = ""  # the ServerOptions field this flag fills
    convert: Convert | None = None  # default: lists become tuples, the rest as typed
    no_option: str = ""  # why a used flag fills no option (the CLI reads it)
    file_key: str = ""  # a config-file key besides the flag's name ("a.b": nested)
    choices: tuple[str, ...] = ()
    shown_default: str | None = None  # what --help prints when it differs from str(default)
    hidden: bool = False  # petcd's own experiments: accepted, not listed by --help

    @property
    def env(self) -> str:
        return "ETCD_" + self.name.upper().replace("-", "_")

    @property
    def used(self) -> bool:
        """petcd acts on it (NOT_FOR_PETCD lists the others, with what petcd does)."""
        return bool(self.option or self.no_option)

    def option_value(self, cfg: Config) -> object:
        value = cfg.values[self.name]
        if self.convert is not None:
            return self.convert(value, cfg)
        return tuple(value) if isinstance(value, list) else value


MEMBER = "Member"
CLUSTERING = "Clustering"
SECURITY = "Security"
AUTH = "Auth"
MONITORING = "Profiling and Monitoring"
LOGGING = "Logging"
PROXY = "v2 Proxy (to be deprecated in v4)"
TRACING = "Experimental distributed tracing"
EXPERIMENTAL = "Experimental feature"
UNSAFE = "Unsafe feature"
DEPRECATED = "To be deprecated"

S, B, N, U, D, L, SL, C = (Kind.STRING, Kind.BOOL, Kind.INT, Kind.UINT, Kind.DURATION,
                           Kind.URLS, Kind.STRINGS, Kind.CHOICE)

_MAX_UINT32 = 2**32 - 1
_LOGGING = "sets up the process's logging before the member starts (cli/logsetup.py)"


FLAGS: tuple[Flag, ...] = (
    # --- member
    Flag("name", S, "default", "Human-readable name for this member.", MEMBER, "name"),
    Flag("data-dir", S, "", "Path to the data directory.", MEMBER, "data_dir",
         convert=rules.data_dir, shown_default="${name}.petcd"),
    Flag("wal-dir", S, "", "Path to a dedicated WAL directory.", MEMBER, "wal_dir"),
    Flag("snapshot-count", U, 100000,
         "Number of committed transactions that triggers a snapshot to disk.", MEMBER,
         "snapshot_count"),
    Flag("heartbeat-interval", U, 100, "Time (in milliseconds) of a heartbeat interval.",
         MEMBER, "heartbeat_ms"),
    Flag("election-timeout", U, 1000,
         "Time (in milliseconds) for an election to time out.", MEMBER, "election_ms"),
    Flag("initial-election-tick-advance", B, True,
         "Whether to fast-forward initial election ticks on boot for a faster election.",
         MEMBER, "initial_election_tick_advance"),
    Flag("listen-peer-urls", L, "http://localhost:2380",
         "List of URLs to listen on for peer traffic.", MEMBER, "listen_peer_urls"),
    Flag("listen-client-urls", L, "http://localhost:2379",
         "List of URLs to listen on for client gRPC traffic, and HTTP as long as "
         "--listen-client-http-urls is not given.", MEMBER, "listen_client_urls"),
    Flag("listen-client-http-urls", L, "",
         "List of URLs to listen on for HTTP-only client traffic. Setting it removes HTTP "
         "from --listen-client-urls, so gRPC gets those ports to itself (no mux hop).",
         MEMBER, "listen_client_http_urls"),
    Flag("max-snapshots", U, 5, "Maximum number of snapshot files to keep (0 is unlimited).",
         MEMBER, "max_snapshots"),
    Flag("max-wals", U, 5, "Maximum number of WAL files to keep (0 is unlimited).", MEMBER,
         "max_wals"),
    Flag("quota-backend-bytes", N, 0,
         "Raise an alarm when the backend size exceeds this (0 means the default, 2 GiB).",
         MEMBER, "quota_backend_bytes"),
    Flag("backend-batch-interval", D, 0,
         "Maximum time before committing the backend transaction.", MEMBER,
         "backend_batch_interval_ms", convert=rules.batch_interval_ms,
         shown_default=""),
    Flag("backend-batch-limit", N, 0,
         "Maximum operations before committing the backend transaction.", MEMBER,
         "backend_batch_limit", convert=rules.batch_limit),
    Flag("max-txn-ops", U, 128, "Maximum number of operations permitted in a transaction.",
         MEMBER, "max_txn_ops"),
    Flag("max-request-bytes", U, 1572864,
         "Maximum client request size in bytes the server accepts.", MEMBER, "max_request_bytes"),
    Flag("max-concurrent-streams", U, _MAX_UINT32,
         "Maximum concurrent streams each client can open at a time.", MEMBER,
         "max_concurrent_streams",
         shown_default="math.MaxUint32"),
    Flag("grpc-keepalive-min-time", D, 5.0,
         "Minimum interval a client should wait between pings to the server.", MEMBER,
         "grpc_keepalive_min_time",
         shown_default="5s"),
    Flag("grpc-keepalive-interval", D, 7200.0,
         "How often the server pings a client to check the connection is alive (0 disables).",
         MEMBER, "grpc_keepalive_interval", shown_default="2h"),
    Flag("grpc-keepalive-timeout", D, 20.0,
         "How long to wait for a ping answer before closing the connection (0 disables).",
         MEMBER, "grpc_keepalive_timeout", shown_default="20s"),
    Flag("socket-reuse-port", B, False,
         "Set SO_REUSEPORT on listeners (lets another process bind the same port).", MEMBER,
         "socket_reuse_port"),
    Flag("socket-reuse-address", B, False,
         "Set SO_REUSEADDR on listeners (bind to an address in TIME_WAIT state).", MEMBER,
         "socket_reuse_address"),
    Flag("enable-grpc-gateway", B, True, "Enable the gRPC gateway (HTTP/JSON API).", MEMBER,
         "enable_grpc_gateway"),
    # --- clustering
    Flag("initial-advertise-peer-urls", L, "http://localhost:2380",
         "List of this member's peer URLs to advertise to the rest of the cluster.",
         CLUSTERING, "initial_advertise_peer_urls"),
    Flag("initial-cluster", S, "default=http://localhost:2380",
         "Initial cluster configuration for bootstrapping.", CLUSTERING,
         "initial_cluster", convert=rules.cluster,
         shown_default="default=http://localhost:2380"),
    Flag("initial-cluster-state", C, "new", "Initial cluster state ('new' or 'existing').",
         CLUSTERING, "initial_cluster_state", choices=("new", "existing")),
    Flag("initial-cluster-token", S, "etcd-cluster",
         "Initial cluster token for the cluster during bootstrap; member and cluster IDs "
         "derive from it.", CLUSTERING, "initial_cluster_token"),
    Flag("advertise-client-urls", L, "http://localhost:2379",
         "List of this member's client URLs to advertise to the public.", CLUSTERING,
         "advertise_client_urls"),
    Flag("discovery", S, "", "Discovery URL used to bootstrap the cluster.", CLUSTERING),
    Flag("discovery-fallback", C, "proxy",
         "Behaviour ('exit' or 'proxy') when the discovery service fails.", CLUSTERING,
         choices=("proxy", "exit")),
    Flag("discovery-proxy", S, "", "HTTP proxy to use for traffic to the discovery service.",
         CLUSTERING),
    Flag("discovery-srv", S, "", "DNS SRV domain used to bootstrap the cluster.", CLUSTERING),
    Flag("discovery-srv-name", S, "", "Suffix to the DNS SRV name queried when bootstrapping.",
         CLUSTERING),
    Flag("strict-reconfig-check", B, True,
         "Reject reconfiguration requests that would cause quorum loss.", CLUSTERING,
         "strict_reconfig_check"),
    # etcd 3.5's default (3.4 had false): a member that comes back cannot disrupt a
    # working leader by bumping the term.
    Flag("pre-vote", B, True, "Run an additional Raft election phase (PreVote).", CLUSTERING,
         "pre_vote"),
    Flag("auto-compaction-retention", S, "0",
         "Auto compaction retention length; 0 disables auto compaction.", CLUSTERING,
         "auto_compaction_retention", convert=rules.retention),
    Flag("auto-compaction-mode", S, "periodic",
         "How to read --auto-compaction-retention: 'periodic' (a duration, hours if no unit) "
         "or 'revision' (a number of revisions).", CLUSTERING,
         "auto_compaction_mode", convert=rules.compaction_mode),
    Flag("enable-v2", B, False, "Accept etcd v2 client requests.", CLUSTERING, "enable_v2"),
    Flag("v2-deprecation", S, "not-yet", "Phase of the v2store deprecation.", CLUSTERING),
    # --- security
    Flag("cert-file", S, "", "Path to the client server TLS cert file.", SECURITY, "cert_file",
         file_key="client-transport-security.cert-file"),
    Flag("key-file", S, "", "Path to the client server TLS key file.", SECURITY, "key_file",
         file_key="client-transport-security.key-file"),
    Flag("client-cert-auth", B, False, "Enable client cert authentication.", SECURITY,
         "client_cert_auth",
         file_key="client-transport-security.client-cert-auth"),
    Flag("client-cert-file", S, "",
         "Path to an explicit client TLS cert file (else --cert-file is used), presented "
         "when this member dials other members' https client URLs.", SECURITY, "client_cert_file",
         file_key="client-transport-security.client-cert-file"),
    Flag("client-key-file", S, "",
         "Path to an explicit client TLS key file (else --key-file is used); see "
         "--client-cert-file.", SECURITY, "client_key_file",
         file_key="client-transport-security.client-key-file"),
    Flag("client-crl-file", S, "", "Path to the client certificate revocation list file.",
         SECURITY, "client_crl_file",
         file_key="client-transport-security.crl-file"),
    Flag("client-cert-allowed-hostname", S, "",
         "Allowed TLS hostname for client cert authentication.", SECURITY,
         "client_cert_allowed_hostname",
         file_key="client-transport-security.allowed-hostname"),
    Flag("trusted-ca-file", S, "",
         "Path to the client server TLS trusted CA cert file (also makes client "
         "certificates mandatory, as in etcd).", SECURITY, "trusted_ca_file",
         file_key="client-transport-security.trusted-ca-file"),
    Flag("auto-tls", B, False, "Client TLS using generated certificates.", SECURITY, "auto_tls",
         file_key="client-transport-security.auto-tls"),
    Flag("peer-cert-file", S, "", "Path to the peer server TLS cert file.", SECURITY,
         "peer_cert_file",
         file_key="peer-transport-security.cert-file"),
    Flag("peer-key-file", S, "", "Path to the peer server TLS key file.", SECURITY,
         "peer_key_file",
         file_key="peer-transport-security.key-file"),
    Flag("peer-client-cert-auth", B, False, "Enable peer client cert authentication.",
         SECURITY, "peer_client_cert_auth",
         file_key="peer-transport-security.client-cert-auth"),
    Flag("peer-client-cert-file", S, "",
         "Path to an explicit peer client TLS cert file (else --peer-cert-file is used).",
         SECURITY, "peer_client_cert_file",
         file_key="peer-transport-security.client-cert-file"),
    Flag("peer-client-key-file", S, "",
         "Path to an explicit peer client TLS key file (else --peer-key-file is used).",
         SECURITY, "peer_client_key_file",
         file_key="peer-transport-security.client-key-file"),
    Flag("peer-trusted-ca-file", S, "", "Path to the peer server TLS trusted CA file.",
         SECURITY, "peer_trusted_ca_file",
         file_key="peer-transport-security.trusted-ca-file"),
    Flag("peer-cert-allowed-cn", S, "",
         "Required CN for client certs connecting to the peer endpoint.", SECURITY,
         "peer_cert_allowed_cn",
         file_key="peer-transport-security.allowed-cn"),
    Flag("peer-cert-allowed-hostname", S, "",
         "Allowed TLS hostname for inter-peer authentication.", SECURITY,
         "peer_cert_allowed_hostname",
         file_key="peer-transport-security.allowed-hostname"),
    Flag("peer-auto-tls", B, False,
         "Peer TLS using self-generated certificates if no peer key/cert files are given.",
         SECURITY, "peer_auto_tls",
         file_key="peer-transport-security.auto-tls"),
    Flag("self-signed-cert-validity", U, 1,
         "Validity (in years) of the certificates --auto-tls and --peer-auto-tls generate.",
         SECURITY, "self_signed_cert_validity"),
    Flag("peer-crl-file", S, "", "Path to the peer certificate revocation list file.",
         SECURITY, "peer_crl_file",
         file_key="peer-transport-security.crl-file"),
    Flag("cipher-suites", SL, "",
         "Comma-separated list of TLS cipher suites (Go's names) for client/server and "
         "peers; TLS 1.3 suites are not configurable.", SECURITY, "cipher_suites"),
    Flag("cors", SL, "*",
         "Comma-separated allow-list of origins for CORS (empty or * allows all).", SECURITY,
         "cors"),
    Flag("host-whitelist", SL, "*",
         "Acceptable hostnames in HTTP client requests if the server is not secure "
         "(empty or * allows all).", SECURITY, "host_whitelist"),
    Flag("tls-min-version", S, "TLS1.2",
         "Minimum TLS version supported (TLS1.2 or TLS1.3).", SECURITY, "tls_min_version"),
    Flag("tls-max-version", S, "",
         "Maximum TLS version supported (TLS1.2 or TLS1.3; empty: the highest).", SECURITY,
         "tls_max_version"),
    # --- auth
    Flag("auth-token", S, "simple",
         "v3 authentication token type and its options: 'simple', or 'jwt,pub-key=PATH,"
         "priv-key=PATH,sign-method=RS256|ES256|...,ttl=5m'.", AUTH,
         "auth_token", convert=rules.auth_token),
    Flag("bcrypt-cost", U, 10,
         "Cost of the bcrypt hashing of auth passwords (4 to 31).", AUTH, "bcrypt_cost"),
    Flag("auth-token-ttl", U, 300,
         "Lifetime in seconds of a simple auth token after its last use.", AUTH,
         "auth_token_ttl", convert=rules.as_float),
    # --- monitoring
    Flag("enable-pprof", B, False, "Enable runtime profiling data via HTTP (petcd: a "
         "Python cProfile at /debug/pprof/profile).", MONITORING, "enable_pprof"),
    Flag("metrics", S, "basic",
         "Level of detail of exported metrics ('basic' or 'extensive').", MONITORING,
         "metrics", convert=rules.metrics),
    Flag("listen-metrics-urls", L, "",
         "List of URLs to listen on for the metrics and health endpoints.", MONITORING,
         "listen_metrics_urls"),
    # --- logging
    Flag("logger", S, "capnslog",
         "Logger: 'zap' for structured lines (--log-format), or 'capnslog' for petcd's "
         "human-readable lines.", LOGGING, no_option=_LOGGING),
    Flag("log-outputs", SL, "default",
         "Log targets: 'default', 'stderr', 'stdout' or file paths (comma separated).",
         LOGGING, no_option=_LOGGING),
    Flag("log-level", S, "info",
         "Log level: debug, info, warn, error, panic or fatal.", LOGGING, no_option=_LOGGING),
    Flag("log-format", S, "json", "Log format with --logger zap: json or console.", LOGGING,
         no_option=_LOGGING),
    Flag("enable-log-rotation", B, False,
         "Enable log rotation of a single log-outputs file target.", LOGGING, no_option=_LOGGING),
    Flag("log-rotation-config-json", S,
         '{"maxsize": 100, "maxage": 0, "maxbackups": 0, "localtime": false, '
         '"compress": false}', "Log rotation settings, as JSON.", LOGGING, no_option=_LOGGING),
    Flag("warning-unary-request-duration", D, 0.3,
         "Log a warning when a unary request takes longer than this.", LOGGING,
         "warning_unary_request_duration", convert=rules.request_warning, shown_default="300ms"),
    # --- v2 proxy
    Flag("proxy", C, "off", "Proxy mode ('off', 'readonly' or 'on').", PROXY,
         choices=("off", "readonly", "on")),
    Flag("proxy-failure-wait", U, 5000,
         "Time (in milliseconds) an endpoint is held in a failed state.", PROXY),
    Flag("proxy-refresh-interval", U, 30000,
         "Time (in milliseconds) of the endpoints refresh interval.", PROXY),
    Flag("proxy-dial-timeout", U, 1000, "Time (in milliseconds) for a dial to time out.",
         PROXY),
    Flag("proxy-write-timeout", U, 5000, "Time (in milliseconds) for a write to time out.",
         PROXY),
    Flag("proxy-read-timeout", U, 0, "Time (in milliseconds) for a read to time out.", PROXY),
    # --- tracing (3.5)
    Flag("experimental-enable-distributed-tracing", B, False,
         "Enable distributed tracing (OpenTelemetry).", TRACING),
    Flag("experimental-distributed-tracing-address", S, "localhost:4317",
         "Distributed tracing collector address.", TRACING),
    Flag("experimental-distributed-tracing-service-name", S, "etcd",
         "Distributed tracing service name.", TRACING),
    Flag("experimental-distributed-tracing-instance-id", S, "",
         "Distributed tracing instance ID, unique per member.", TRACING),
    Flag("experimental-distributed-tracing-sampling-rate", N, 0,
         "Samples to collect per million spans.", TRACING),
    # --- experimental
    Flag("experimental-initial-corrupt-check", B, False,
         "Check data corruption before serving any client or peer traffic.", EXPERIMENTAL,
         "initial_corrupt_check"),
    Flag("experimental-corrupt-check-time", D, 0.0,
         "Time between cluster corruption check passes.", EXPERIMENTAL, "corrupt_check_time",
         shown_default="0s"),
    Flag("experimental-compact-hash-check-enabled", B, False,
         "Check data corruption after each compaction.", EXPERIMENTAL, "compact_hash_check"),
    Flag("experimental-compact-hash-check-time", D, 60.0,
         "Time between leader checks of followers' compaction hashes.", EXPERIMENTAL,
         "compact_hash_check_time",
         shown_default="1m"),
    Flag("experimental-enable-v2v3", S, "",
         "Serve v2 requests through the v3 backend under this prefix.", EXPERIMENTAL),
    Flag("experimental-backend-bbolt-freelist-type", S, "array",
         "Freelist type of the bbolt backend (array or map); LMDB has none.", EXPERIMENTAL),
    Flag("experimental-enable-lease-checkpoint", B, False,
         "Leader checkpoints lease remaining TTLs to followers.", EXPERIMENTAL, "lease_checkpoint"),
    Flag("experimental-enable-lease-checkpoint-persist", B, False,
         "Persist lease remaining TTLs so long leases are not renewed forever.", EXPERIMENTAL,
         "lease_checkpoint_persist"),
    Flag("experimental-compaction-batch-limit", N, 1000,
         "Maximum keys a compaction cleans up per batch (the rest follows in later ones).",
         EXPERIMENTAL, "compaction_batch_limit", convert=rules.compaction_batch),
    Flag("experimental-compaction-sleep-interval", D, 0.01,
         "Sleep between compaction batches.", EXPERIMENTAL,
         "compaction_sleep_interval", shown_default="10ms"),
    Flag("experimental-peer-skip-client-san-verification", B, False,
         "Skip verification of the SAN field in peer client certificates.", EXPERIMENTAL,
         "peer_skip_client_san_verification"),
    Flag("experimental-watch-progress-notify-interval", D, 600.0,
         "Interval of periodic watch progress notifications.", EXPERIMENTAL,
         "watch_progress_notify_interval", convert=rules.progress_interval,
         shown_default="10m"),
    Flag("experimental-warning-apply-duration", D, 0.1,
         "Log a warning when applying a request takes longer than this.", EXPERIMENTAL,
         "warning_apply_duration", shown_default="100ms"),
    Flag("experimental-warning-unary-request-duration", D, 0.3,
         "Log a warning when a unary request takes longer than this.", EXPERIMENTAL,
         no_option="old name of --warning-unary-request-duration (read there)",
         shown_default="300ms"),
    Flag("experimental-txn-mode-write-with-shared-buffer", B, True,
         "Let write transactions use a shared buffer in their read operations.", EXPERIMENTAL),
    Flag("experimental-bootstrap-defrag-threshold-megabytes", U, 0,
         "Minimum reclaimable megabytes in the backend to defragment it on startup.",
         EXPERIMENTAL, "bootstrap_defrag_threshold_mb"),
    Flag("experimental-snapshot-catchup-entries", U, 5000,
         "Entries kept for slow followers to catch up after compacting the Raft log.",
         EXPERIMENTAL, "snapshot_catchup_entries"),
    Flag("experimental-downgrade-check-time", D, 5.0,
         "Interval of the downgrade status check.", EXPERIMENTAL, shown_default="5s"),
    Flag("experimental-memory-mlock", B, False, "Keep the backend's pages locked in RAM.",
         EXPERIMENTAL),
    Flag("experimental-stop-grpc-service-on-defrag", B, False,
         "Report the gRPC health service as not serving during defragmentation.",
         EXPERIMENTAL, "stop_grpc_service_on_defrag"),
    Flag("experimental-learner-auto-promote", B, False,
         "petcd: the leader promotes a learner to voter once it has caught up (its match "
         "index at least 90% of the leader's commit index, etcd's rule for member promote).",
         EXPERIMENTAL, "learner_auto_promote"),
    Flag("experimental-max-learners", N, 1, "Maximum number of learners in the cluster.",
         EXPERIMENTAL, "max_learners", convert=rules.max_learners),
    Flag("experimental-wait-cluster-ready-timeout", D, 5.0,
         "Maximum wait for the cluster to be ready before serving client requests.",
         EXPERIMENTAL, "wait_cluster_ready_timeout", shown_default="5s"),
    Flag("experimental-grpc-server", C, "h2",
         "gRPC server implementation: 'h2' (petcd's own HTTP/2 server; HTTP/1.1 on the same "
         "port) or 'grpcio' (grpc.aio, with HTTP/1.1 reached through a forwarding hop).",
         EXPERIMENTAL, "grpc_server", convert=rules.grpc_server, choices=("grpcio", "h2")),
    # petcd's own (etcd has no such flags; Go's HTTP server has no such limits):
    Flag("experimental-max-client-connections", U, 10000,
         "Maximum open connections on the client URLs (0: no limit); more are closed at once.",
         EXPERIMENTAL, "max_client_connections"),
    Flag("experimental-client-handshake-timeout", D, 10.0,
         "Time a new client connection has to send the HTTP/2 preface and SETTINGS (or an "
         "HTTP/1.1 request) before it is closed.", EXPERIMENTAL,
         "client_handshake_timeout", shown_default="10s"),
    # --- unsafe
    Flag("force-new-cluster", B, False,
         "Force to create a new one-member cluster from this member's data (restart only).",
         UNSAFE, "force_new_cluster"),
    Flag("unsafe-no-fsync", B, False,
         "Disable fsync: unsafe, loses acknowledged data on a crash.", UNSAFE, "unsafe_no_fsync"),
    # --- to be deprecated
    Flag("debug", B, False, "Enable debug-level logging (use --log-level=debug).", DEPRECATED,
         no_option=_LOGGING),
    Flag("log-package-levels", S, "", "Per-package log levels (ignored).", DEPRECATED),
    Flag("log-output", SL, "default", "Old name of --log-outputs.", DEPRECATED, no_option=_LOGGING),
)

# Flags older etcd releases had: still accepted and ignored, as etcd does.
IGNORED: tuple[str, ...] = (
    "cluster-active-size", "cluster-remove-delay", "cluster-sync-interval", "config",
    "force", "max-result-buffer", "max-retry-attempts", "peer-heartbeat-interval",
    "peer-election-timeout", "retry-interval", "snapshot", "v", "vv",
)

BY_NAME: dict[str, Flag] = {f.name: f for f in FLAGS}

# Flags of etcd's that cannot apply to petcd, and what petcd does when one is set to a
# value other than its default: "refuse" fails the start with the reason (the setting
# would change behaviour petcd does not have), "warn" starts with a warning (the setting
# only tunes something petcd does not have). Either way, never silently ignored.
_DISCOVERY = ("discovery needs etcd's discovery service or DNS SRV records; petcd "
              "bootstraps from --initial-cluster: list the members there")
_PROXY = ("the v2 proxy (deprecated by etcd) is not part of petcd: point clients at "
          "the members themselves")
_TRACING = "distributed tracing (OpenTelemetry) is not built into petcd"
NOT_FOR_PETCD: dict[str, tuple[str, str]] = {
    "discovery": ("refuse", _DISCOVERY),
    "discovery-srv": ("refuse", _DISCOVERY),
    "discovery-srv-name": ("refuse", _DISCOVERY),
    "discovery-proxy": ("refuse", _DISCOVERY),
    "discovery-fallback": ("warn", _DISCOVERY),
    "proxy": ("refuse", _PROXY),
    "proxy-failure-wait": ("warn", _PROXY),
    "proxy-refresh-interval": ("warn", _PROXY),
    "proxy-dial-timeout": ("warn", _PROXY),
    "proxy-write-timeout": ("warn", _PROXY),
    "proxy-read-timeout": ("warn", _PROXY),
    "v2-deprecation": ("warn", "petcd serves the v2 API as etcd 3.4 does (with "
                               "--enable-v2); etcd 3.5's deprecation phases are not built"),
    "experimental-enable-v2v3": ("refuse", "petcd does not serve the v2 API over v3"),
    "experimental-enable-distributed-tracing": ("refuse", _TRACING),
    "experimental-distributed-tracing-address": ("warn", _TRACING),
    "experimental-distributed-tracing-service-name": ("warn", _TRACING),
    "experimental-distributed-tracing-instance-id": ("warn", _TRACING),
    "experimental-distributed-tracing-sampling-rate": ("warn", _TRACING),
    "experimental-backend-bbolt-freelist-type": (
        "warn", "petcd's backend is LMDB, which has no freelist type to choose"),
    "experimental-txn-mode-write-with-shared-buffer": (
        "warn", "petcd's write transactions always read their own writes"),
    "experimental-downgrade-check-time": (
        "warn", "petcd has no cluster downgrade protocol to check"),
    "experimental-memory-mlock": (
        "refuse", "petcd cannot lock LMDB's map in memory (it maps the whole file "
                  "lazily); keep the backend below the machine's memory instead"),
    "log-package-levels": ("warn", "capnslog's per-package levels: use --log-level"),
}
BY_FILE_KEY: dict[str, Flag] = {f.file_key: f for f in FLAGS if f.file_key}
