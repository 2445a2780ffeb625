"""`petcdctl`: etcdctl 3.4's command line. The command tree is `commands.ROOT`
(parsed by `cmd`, etcdctl's flag rules); each command group runs from its own module
(kv, watch, lease, cluster, recipes, auth, check, mirror), imported only when its
command runs, so `petcdctl get k` loads gRPC and the KV messages and nothing else.
`snapshot` keeps its argparse module (its files are petcd's own format)."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from petcd.cli.ctl.common import EXIT_BAD_ARGS, GLOBAL_DEFAULTS, CtlError, global_flags

if TYPE_CHECKING:
    import argparse

BOOL_FLAGS = {"hex", "debug", "skip-hash-check", "insecure-transport",
              "insecure-skip-tls-verify", "insecure-discovery"}


def build_parser() -> argparse.ArgumentParser:
    import argparse  # only for `snapshot`: kept out of every other command's start-up

    class _Parser(argparse.ArgumentParser):
        def error(self, message: str) -> None:  # type: ignore[override]
            print(f"Error: {message}", file=sys.stderr)
            raise SystemExit(EXIT_BAD_ARGS)

    # Separate copies: defaults set on the top parser's flags must not leak into the
    # subcommands' (argparse shares action objects between a parent and its children).
    common = global_flags()
    parser = _Parser(prog="petcdctl", parents=[global_flags()],
                     description="A simple command line client for petcd (etcdctl's "
                                 "commands and flags).")
    subparsers = parser.add_subparsers(dest="command", metavar="<command>",
                                       parser_class=_Parser)
    from petcd.cli.ctl import snapshot  # (imports the server's restore code)
    snapshot.register(subparsers, common)
    parser.set_defaults(**GLOBAL_DEFAULTS)
    return parser


def _env_defaults(parser: argparse.ArgumentParser) -> None:
    """ETCDCTL_WRITE_OUT=json etc., as etcdctl reads its flags from the environment."""
    for key, value in os.environ.items():
        if key.startswith("ETCDCTL_") and key != "ETCDCTL_API":
            dest = key[len("ETCDCTL_"):].lower()
            if dest in GLOBAL_DEFAULTS:
                parser.set_defaults(**{dest: value})


def _go_bools(argv: list[str]) -> list[str]:
    """Go's --flag=false / --flag=true for boolean flags, which argparse lacks."""
    out = []
    for arg in argv:
        name, eq, value = arg.partition("=")
        if eq and name.startswith("--") and name[2:] in BOOL_FLAGS:
            v = value.strip().lower()
            if v in ("1", "t", "true"):
                out.append(name)
                continue
            if v in ("0", "f", "false"):
                continue
            print(f'Error: invalid argument "{value}" for "{name}" flag', file=sys.stderr)
            raise SystemExit(EXIT_BAD_ARGS)
        out.append(arg)
    return out


def _first_words(argv: list[str], n: int = 2) -> list[str]:
    """The first n positional arguments (global flags may come before them)."""
    from petcd.cli.ctl.cmd import GLOBAL_FLAGS
    takes_value = {f"--{f.name}" for f in GLOBAL_FLAGS if f.kind != "bool"} | {"-w", "-d"}
    words: list[str] = []
    i = 0
    while i < len(argv) and len(words) < n:
        a = argv[i]
        if a == "--":
            break
        if a.startswith("-"):
            i += 2 if a in takes_value else 1
            continue
        words.append(a)
        i += 1
    return words


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    api = os.environ.get("ETCDCTL_API", "3")
    if api not in ("3", "3.4", ""):
        print(f"Error: petcdctl speaks only etcd's v3 API (ETCDCTL_API={api} asks for "
              "another); unset it or set ETCDCTL_API=3", file=sys.stderr)
        raise SystemExit(EXIT_BAD_ARGS)
    # snapshot save is a client command: the common parser and connection
    if _first_words(args)[:1] != ["snapshot"] or "-h" in args or "--help" in args or \
            _first_words(args)[1:] == ["save"]:
        from petcd.cli.ctl import cmd
        from petcd.cli.ctl.commands import ROOT
        cmd.main(ROOT, args)
        return
    parser = build_parser()
    _env_defaults(parser)
    args = parser.parse_args(_go_bools(args))  # type: ignore[assignment]
    run = getattr(args, "run", None)
    if run is None:
        parser.print_help()
        raise SystemExit(0)
    try:
        run(args)
    except CtlError as e:
        print(f"Error: {e}", file=sys.stderr)
        raise SystemExit(e.code) from None
