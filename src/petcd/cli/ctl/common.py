"""What every petcdctl command shares: global flags, exit codes, output formats."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import argparse

# etcdctl's exit codes
EXIT_ERROR = 1
EXIT_BAD_CONNECTION = 2
EXIT_INVALID_INPUT = 3
EXIT_BAD_FEATURE = 4
EXIT_INTERRUPTED = 5
EXIT_IO = 6
EXIT_BAD_ARGS = 128

OUTPUT_FORMATS = ("simple", "json", "table", "fields", "protobuf")


class CtlError(Exception):
    """Printed as "Error: <message>", exit with `code` (etcdctl's ExitWithError)."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


GLOBAL_DEFAULTS: dict[str, object] = {
    "endpoints": "127.0.0.1:2379", "write_out": "simple", "dial_timeout": "2s",
    "command_timeout": None, "hex": False, "debug": False}


def global_flags() -> argparse.ArgumentParser:
    """etcdctl's persistent flags (those petcdctl acts on). Their defaults are set once
    on the top parser (GLOBAL_DEFAULTS): a subcommand's copy of a flag then cannot
    reset what was given before the subcommand."""
    import argparse  # only `snapshot` parses with argparse: kept out of start-up

    p = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    g = p.add_argument_group("global options")
    g.add_argument("--endpoints", help="gRPC endpoints (default 127.0.0.1:2379)")
    g.add_argument("-w", "--write-out", choices=OUTPUT_FORMATS,
                   help="set the output format (fields, json, protobuf, simple, table)")
    g.add_argument("--dial-timeout", help="dial timeout for client connections (default 2s)")
    g.add_argument("--command-timeout",
                   help="timeout for short running command (excluding dial timeout)")
    g.add_argument("--hex", action="store_true", help="print byte strings as hex")
    g.add_argument("--debug", action="store_true", help="enable client-side debug logging")
    # etcdctl takes every global flag with every command: the rest are accepted here
    # (status and restore make no connection, so they change nothing)
    from petcd.cli.ctl.cmd import GLOBAL_FLAGS

    for f in GLOBAL_FLAGS:
        if f.name in ("endpoints", "write-out", "dial-timeout", "command-timeout", "hex",
                      "debug"):
            continue
        names = [f"--{f.name}"] + ([f"-{f.short}"] if f.short else [])
        if f.kind == "bool":
            g.add_argument(*names, action="store_true", help=f.help)
        else:
            g.add_argument(*names, help=f.help)
    return p


def humanize_bytes(n: int) -> str:
    """Sizes as etcdctl prints them (go-humanize Bytes: SI units, "20 kB", "1.8 MB")."""
    if n < 10:
        return f"{n} B"
    units = ("B", "kB", "MB", "GB", "TB", "PB", "EB")
    exp = 0
    value = float(n)
    while value >= 1000 and exp < len(units) - 1:
        value /= 1000
        exp += 1
    rounded = int(value * 10 + 0.5) / 10
    return f"{rounded:.0f} {units[exp]}" if rounded >= 10 else f"{rounded:.1f} {units[exp]}"


def render_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A table as etcdctl draws them (tablewriter: upper-case centred header, cells
    aligned right, one space of padding)."""
    header = [h.upper() for h in header]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def centred(text: str, width: int) -> str:
        gap = width - len(text)
        return " " * (gap // 2) + text + " " * (gap - gap // 2)

    out = [line, "|" + "|".join(f" {centred(h, w)} " for h, w in zip(header, widths,
                                                                     strict=True)) + "|",
           line]
    out += ["|" + "|".join(f" {c.rjust(w)} " for c, w in zip(r, widths, strict=True)) + "|"
            for r in rows]
    out.append(line)
    return "\n".join(out) + "\n"


def to_json(value: object) -> str:
    """Compact JSON as Go's encoding/json writes it."""
    import json

    return json.dumps(value, separators=(",", ":"))
