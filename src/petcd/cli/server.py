"""`petcd`: run one member. Accepts etcd's flags, ETCD_* variables and --config-file."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import platform
import signal
import sys
from collections.abc import Sequence
from typing import cast

from petcd import ETCD_API_VERSION, __version__
from petcd.cli import config as config_mod
from petcd.cli import logsetup
from petcd.cli.flags import FLAGS, IGNORED, NOT_FOR_PETCD, Flag, Kind
from petcd.server.client_tls import GRPCIO_TLS_REFUSED
from petcd.server.errors import BootstrapError
from petcd.server.options import ServerOptions
from petcd.tls import TLSError

log = logging.getLogger("petcd")

# Allocations (net of frees) between young collections once serving (default 700).
GC_THRESHOLD = 20_000

USAGE = """Usage:

  petcd [flags]
    Start a petcd member (etcd v3's API, in Python).

  petcd --version
    Show the version of petcd.

  petcd playground [--members 3|5|7] [--port 8080] [--data-dir DIR]
    Start a local cluster and a web page showing Raft at work on it.

  petcd -h | --help
    Show this help.

  petcd --config-file
    Path to a server configuration file (YAML, etcd's keys). When given, other
    command-line flags and environment variables are ignored.

Every flag may also be given as an environment variable: --my-flag is ETCD_MY_FLAG.
Command-line flags win over environment variables.
Flags marked [refused in petcd] or [no effect in petcd] are etcd's, for things petcd
does not have: the list at the end says why.
"""


def _shown_default(f: Flag) -> str:
    if f.shown_default is not None:
        return f.shown_default
    if f.kind is Kind.BOOL:
        return "true" if f.default else "false"
    return str(f.default)


def help_text() -> str:
    lines = [USAGE]
    section = ""
    for f in FLAGS:
        if f.hidden:
            continue
        if f.section != section:
            section = f.section
            lines.append(f"\n{section}:")
        if f.name in NOT_FOR_PETCD:
            mark = f" [{'refused' if NOT_FOR_PETCD[f.name][0] == 'refuse' else 'no effect'}"\
                   " in petcd: see below]"
        else:
            mark = "" if f.used else " [not yet used]"
        lines.append(f"  --{f.name} '{_shown_default(f)}'{mark}")
        lines.append(f"    {f.help}")
    lines.append("\nNot for petcd (refused when set, or accepted with a warning):")
    for name, (action, reason) in NOT_FOR_PETCD.items():
        lines.append(f"  --{name}: {'refused' if action == 'refuse' else 'no effect'}: {reason}")
    lines.append("\nIgnored (flags of older etcd releases, accepted for compatibility):")
    lines.append("  " + ", ".join("--" + n for n in IGNORED))
    return "\n".join(lines) + "\n"


def version_text() -> str:
    return (f"petcd Version: {__version__}\n"
            f"etcd API Version: {ETCD_API_VERSION}\n"
            f"Python Version: {platform.python_version()}\n"
            f"OS/Arch: {sys.platform}/{platform.machine()}\n")


def options_from(cfg: config_mod.Config) -> ServerOptions:
    grpc_server = cfg.text("experimental-grpc-server")
    for url in (*cfg.listen_client_urls, *cfg.listen_client_http_urls):
        if url.startswith(("https://", "unixs://")) and grpc_server != "h2":
            raise config_mod.ConfigError(GRPCIO_TLS_REFUSED)
    return ServerOptions(
        name=cfg.name,
        data_dir=cfg.data_dir,
        wal_dir=cfg.text("wal-dir"),
        listen_client_urls=tuple(cfg.listen_client_urls),
        listen_client_http_urls=tuple(cfg.listen_client_http_urls),
        advertise_client_urls=tuple(cfg.advertise_client_urls),
        initial_advertise_peer_urls=tuple(cfg.initial_advertise_peer_urls),
        initial_cluster={k: tuple(v) for k, v in cfg.initial_cluster_map().items()},
        initial_cluster_token=cfg.initial_cluster_token,
        initial_cluster_state=cfg.initial_cluster_state,
        max_request_bytes=cfg.max_request_bytes,
        max_txn_ops=cfg.max_txn_ops,
        max_concurrent_streams=cfg.max_concurrent_streams,
        grpc_keepalive_min_time=cfg.grpc_keepalive_min_time,
        grpc_keepalive_interval=cfg.grpc_keepalive_interval,
        grpc_keepalive_timeout=cfg.grpc_keepalive_timeout,
        socket_reuse_port=cfg.socket_reuse_port,
        socket_reuse_address=cfg.socket_reuse_address,
        unsafe_no_fsync=cfg.on("unsafe-no-fsync"),
        compaction_batch_limit=cfg.compaction_batch_limit,
        compaction_sleep_interval=cfg.seconds("experimental-compaction-sleep-interval"),
        force_new_cluster=cfg.on("force-new-cluster"),
        learner_auto_promote=cfg.on("experimental-learner-auto-promote"),
        stop_grpc_service_on_defrag=cfg.on("experimental-stop-grpc-service-on-defrag"),
        bootstrap_defrag_threshold_mb=cfg.number("experimental-bootstrap-defrag-threshold-megabytes"),
        warning_unary_request_duration=_request_warning(cfg),
        warning_apply_duration=cfg.seconds("experimental-warning-apply-duration"),
        initial_corrupt_check=cfg.on("experimental-initial-corrupt-check"),
        corrupt_check_time=cfg.seconds("experimental-corrupt-check-time"),
        compact_hash_check=cfg.on("experimental-compact-hash-check-enabled"),
        compact_hash_check_time=cfg.seconds("experimental-compact-hash-check-time"),
        auto_compaction_mode=cfg.auto_compaction[0],
        auto_compaction_retention=cfg.auto_compaction[1],
        grpc_server=grpc_server,
        max_client_connections=cfg.number("experimental-max-client-connections"),
        client_handshake_timeout=cfg.seconds("experimental-client-handshake-timeout"),
        # etcd: 0 (or less) means its defaults, 100ms and 10000.
        backend_batch_interval_ms=round(
            cfg.seconds("backend-batch-interval") * 1000) or 100,
        backend_batch_limit=max(0, cfg.number("backend-batch-limit")) or 10000,
        watch_progress_notify_interval=_progress_interval(cfg),
        listen_peer_urls=tuple(cfg.listen_peer_urls),
        heartbeat_ms=cfg.heartbeat_ms,
        election_ms=cfg.election_ms,
        pre_vote=cfg.on("pre-vote"),
        initial_election_tick_advance=cfg.on("initial-election-tick-advance"),
        strict_reconfig_check=cfg.on("strict-reconfig-check"),
        max_learners=max(1, cfg.number("experimental-max-learners")),
        snapshot_count=cfg.number("snapshot-count"),
        snapshot_catchup_entries=cfg.number("experimental-snapshot-catchup-entries"),
        max_wals=cfg.number("max-wals"),
        max_snapshots=cfg.number("max-snapshots"),
        wait_cluster_ready_timeout=cfg.seconds("experimental-wait-cluster-ready-timeout"),
        peer_cert_file=cfg.text("peer-cert-file"),
        peer_key_file=cfg.text("peer-key-file"),
        peer_client_cert_file=cfg.text("peer-client-cert-file"),
        peer_client_key_file=cfg.text("peer-client-key-file"),
        peer_trusted_ca_file=cfg.text("peer-trusted-ca-file"),
        peer_client_cert_auth=cfg.on("peer-client-cert-auth"),
        peer_crl_file=cfg.text("peer-crl-file"),
        peer_cert_allowed_cn=cfg.text("peer-cert-allowed-cn"),
        peer_cert_allowed_hostname=cfg.text("peer-cert-allowed-hostname"),
        peer_auto_tls=cfg.on("peer-auto-tls"),
        peer_skip_client_san_verification=cfg.on("experimental-peer-skip-client-san-verification"),
        cert_file=cfg.text("cert-file"),
        key_file=cfg.text("key-file"),
        client_cert_file=cfg.text("client-cert-file"),
        client_key_file=cfg.text("client-key-file"),
        trusted_ca_file=cfg.text("trusted-ca-file"),
        client_cert_auth=cfg.on("client-cert-auth"),
        client_crl_file=cfg.text("client-crl-file"),
        client_cert_allowed_hostname=cfg.text("client-cert-allowed-hostname"),
        auto_tls=cfg.on("auto-tls"),
        cipher_suites=tuple(cfg.items("cipher-suites")),
        tls_min_version=cfg.text("tls-min-version"),
        tls_max_version=cfg.text("tls-max-version"),
        self_signed_cert_validity=cfg.number("self-signed-cert-validity"),
        quota_backend_bytes=cfg.number("quota-backend-bytes"),
        lease_checkpoint=cfg.on("experimental-enable-lease-checkpoint"),
        lease_checkpoint_persist=cfg.on("experimental-enable-lease-checkpoint-persist"),
        auth_token=_auth_token(cfg),
        auth_token_ttl=float(cfg.number("auth-token-ttl")),
        bcrypt_cost=cfg.number("bcrypt-cost"),
        enable_grpc_gateway=cfg.on("enable-grpc-gateway"),
        enable_v2=cfg.on("enable-v2"),
        cors=_strings(cfg.items("cors")),
        host_whitelist=_strings(cfg.items("host-whitelist")),
        metrics=_metrics_level(cfg.text("metrics")),
        listen_metrics_urls=tuple(_strings(cfg.items("listen-metrics-urls"))),
        enable_pprof=cfg.on("enable-pprof"),
    )


def _auth_token(cfg: config_mod.Config) -> str:
    """--auth-token, checked now (keys readable and matching) so that a bad one fails
    the start, as in etcd."""
    from petcd.auth.tokens import TokenOptionError, from_option

    option = cfg.text("auth-token")
    try:
        from_option(option, 300.0)
    except TokenOptionError as e:
        raise config_mod.ConfigError(f"--auth-token: {e}") from None
    return option


def _metrics_level(value: object) -> str:
    if value not in ("basic", "extensive"):
        raise config_mod.ConfigError(f"unknown metrics option {value!r} "
                                     "(expected 'basic' or 'extensive')")
    return str(value)


def _strings(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        value = value.split(",")
    return tuple(s.strip() for s in cast(list[str], value) if s.strip())


def _request_warning(cfg: config_mod.Config) -> float:
    """--warning-unary-request-duration, or its older experimental name when only that
    one is set."""
    name = "warning-unary-request-duration"
    if name not in cfg.explicit and "experimental-" + name in cfg.explicit:
        name = "experimental-" + name
    return cfg.seconds(name)


def _progress_interval(cfg: config_mod.Config) -> float:
    # etcd keeps its default (10 minutes) for a zero or negative interval.
    interval = cfg.seconds("experimental-watch-progress-notify-interval")
    return interval if interval > 0 else 600.0


def _setup_logging(cfg: config_mod.Config) -> None:
    logsetup.setup(logger=cfg.text("logger"), log_format=cfg.text("log-format"),
                   level=cfg.log_level, outputs=list(cfg.log_outputs),
                   rotate=cfg.on("enable-log-rotation"),
                   rotation_json=cfg.text("log-rotation-config-json"))


def _settle_heap() -> None:
    """Once serving: what startup built (modules, descriptors, the loaded state) lives
    as long as the process, so the collector stops re-scanning it (gc.freeze), and young
    collections run less often: a request allocates a few dozen objects that mostly die
    by refcount, and the default threshold (700) had the collector run every few requests
    (~8% of a member's CPU under load, by perf)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])


async def run(opts: ServerOptions) -> int:
    from petcd.api.server import ClientServer  # imports grpc: keep --help fast

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    exit_code = 0

    def on_fatal(exc: BaseException) -> None:
        nonlocal exit_code
        exit_code = 1
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = ClientServer(opts, on_fatal=on_fatal, on_removed=stop.set)
    try:
        await server.start()
        _settle_heap()
        await stop.wait()
        log.info("received signal or fatal error; shutting down")
    finally:
        await server.stop()
    log.info("stopped")
    return exit_code


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["playground"]:  # a subcommand; etcd's flags all start with "-"
        from petcd.playground.cli import main as playground

        playground(args[1:])
        return
    try:
        cfg, wants_help, wants_version = config_mod.load(args)
    except config_mod.FlagUsageError as e:
        print(e, file=sys.stderr)
        print("usage: petcd [flags] (see petcd --help)", file=sys.stderr)
        raise SystemExit(2) from None
    except config_mod.ConfigError as e:
        print(f"petcd: error verifying flags, {e}. See 'petcd --help'.", file=sys.stderr)
        raise SystemExit(1) from None
    if wants_help:
        sys.stdout.write(help_text())
        return
    if wants_version:
        sys.stdout.write(version_text())
        return
    try:
        _setup_logging(cfg)
    except (logsetup.LogSetupError, OSError) as e:
        print(f"petcd: error verifying flags, {e}. See 'petcd --help'.", file=sys.stderr)
        raise SystemExit(1) from None
    for w in cfg.warnings:
        log.warning("%s", w)
    if cfg.config_file:
        log.info("loaded server configuration from %s; command-line flags and environment "
                 "variables are ignored", cfg.config_file)
    try:
        opts = options_from(cfg)
    except config_mod.ConfigError as e:
        print(f"petcd: error verifying flags, {e}. See 'petcd --help'.", file=sys.stderr)
        raise SystemExit(1) from None
    log.info("petcd %s (etcd API %s), name %s, data dir %s, pid %d", __version__,
             ETCD_API_VERSION, opts.name, opts.data_dir, os.getpid())
    import uvloop

    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            code = runner.run(run(opts))
    except (BootstrapError, TLSError) as e:
        log.critical("%s", e)
        code = 1
    except OSError as e:
        log.critical("cannot serve: %s", e)
        code = 1
    raise SystemExit(code)
