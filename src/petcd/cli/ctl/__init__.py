"""`petcdctl`: etcdctl's command line for petcd. Each command group is a module here
(`snapshot` today) that adds its subcommands with `register(subparsers, common)`;
global flags (`common`) are accepted before or after the command, as etcdctl's
persistent flags are, and from ETCDCTL_<FLAG> variables. Real `etcdctl` works against
petcd unchanged for every client-side command; petcdctl is needed where the file
format is petcd's own (snapshot restore and status)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from petcd.cli.ctl import snapshot
from petcd.cli.ctl.common import EXIT_BAD_ARGS, GLOBAL_DEFAULTS, CtlError, global_flags

COMMANDS = (snapshot,)
BOOL_FLAGS = {"hex", "debug", *snapshot.BOOL_FLAGS}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"Error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_ARGS)


def build_parser() -> argparse.ArgumentParser:
    # Separate copies: defaults set on the top parser's flags must not leak into the
    # subcommands' (argparse shares action objects between a parent and its children).
    common = global_flags()
    parser = _Parser(prog="petcdctl", parents=[global_flags()],
                     description="A simple command line client for petcd (etcdctl's "
                                 "commands and flags).")
    subparsers = parser.add_subparsers(dest="command", metavar="<command>",
                                       parser_class=_Parser)
    for module in COMMANDS:
        module.register(subparsers, common)
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


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    _env_defaults(parser)
    args = parser.parse_args(_go_bools(list(sys.argv[1:] if argv is None else argv)))
    run = getattr(args, "run", None)
    if run is None:
        parser.print_help()
        raise SystemExit(0)
    try:
        run(args)
    except CtlError as e:
        print(f"Error: {e}", file=sys.stderr)
        raise SystemExit(e.code) from None
