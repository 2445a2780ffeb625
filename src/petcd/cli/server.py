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

from petcd import ETCD_API_VERSION, __version__
from petcd.cli import config as config_mod
from petcd.cli import logsetup
from petcd.cli.flags import FLAGS, IGNORED, NOT_FOR_PETCD, Flag, Kind
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
    return cfg.options()


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
