"""Commands, flags and help as etcdctl's (cobra + pflag) behave: flags anywhere among
the arguments, `--` ends them, `--flag=value` / `--flag value` / `-wjson`, booleans
as `--flag` or `--flag=false`, ETCDCTL_<FLAG> environment variables for the global
flags, and etcdctl's help layout. Stdlib only: `petcdctl get k` imports nothing else
until the command runs (commands name their module; it is imported only then)."""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from petcd.cli.ctl.common import EXIT_BAD_ARGS, EXIT_ERROR, CtlError

VERSION = "3.4.23"  # the etcdctl whose output petcdctl reproduces
API_VERSION = "3.4"


class Flag:
    # A plain class, not a dataclass: creating dataclasses costs start-up time.
    __slots__ = ("default", "help", "kind", "name", "short")

    def __init__(self, name: str, kind: str, default: Any, help: str,
                 short: str = "") -> None:
        self.name = name
        self.kind = kind  # bool | str | int | dur | list
        self.default = default
        self.help = help
        self.short = short

    @property
    def dest(self) -> str:
        return self.name.replace("-", "_")

    def shown_default(self) -> str:
        if self.kind == "bool":
            return f"[={'true' if self.default else 'false'}]"
        if self.kind == "str":
            return f'="{self.default}"'
        if self.kind == "list":
            return "=[" + ",".join(self.default) + "]"
        return f"={self.default}"


GLOBAL_FLAGS = (
    Flag("cacert", "str", "", "verify certificates of TLS-enabled secure servers using "
         "this CA bundle"),
    Flag("cert", "str", "", "identify secure client using this TLS certificate file"),
    Flag("command-timeout", "dur", "5s",
         "timeout for short running command (excluding dial timeout)"),
    Flag("debug", "bool", False, "enable client-side debug logging"),
    Flag("dial-timeout", "dur", "2s", "dial timeout for client connections"),
    Flag("discovery-srv", "str", "", "domain name to query for SRV records describing "
         "cluster endpoints", short="d"),
    Flag("discovery-srv-name", "str", "", "service name to query when using DNS discovery"),
    Flag("endpoints", "list", ["127.0.0.1:2379"], "gRPC endpoints"),
    Flag("hex", "bool", False, "print byte strings as hex encoded strings"),
    Flag("insecure-discovery", "bool", True,
         "accept insecure SRV records describing cluster endpoints"),
    Flag("insecure-skip-tls-verify", "bool", False,
         "skip server certificate verification (CAUTION: this option should be enabled "
         "only for testing purposes)"),
    Flag("insecure-transport", "bool", True, "disable transport security for client "
         "connections"),
    Flag("keepalive-time", "dur", "2s", "keepalive time for client connections"),
    Flag("keepalive-timeout", "dur", "6s", "keepalive timeout for client connections"),
    Flag("key", "str", "", "identify secure client using this TLS key file"),
    Flag("password", "str", "", "password for authentication (if this option is used, "
         "--user option shouldn't include password)"),
    Flag("user", "str", "", "username[:password] for authentication (prompt if password "
         "is not supplied)"),
    Flag("write-out", "str", "simple",
         "set the output format (fields, json, protobuf, simple, table)", short="w"),
)


class Command:
    def __init__(self, name: str, short: str, usage: str = "", run: str = "",
                 flags: Sequence[Flag] = (), long: str = "",
                 subcommands: list[Command] | None = None, hidden: bool = False) -> None:
        self.name = name
        self.short = short
        self.usage = usage  # after "etcdctl <name> "
        self.run = run  # "module:function" under petcd.cli.ctl
        self.flags = flags
        self.long = long
        self.subcommands = subcommands if subcommands is not None else []
        self.hidden = hidden

    def sub(self, name: str) -> Command | None:
        for c in self.subcommands:
            if c.name == name:
                return c
        return None


class Args:
    """Parsed flags (attributes by dest) and positional arguments."""

    def __init__(self, values: dict[str, Any], args: list[str], given: set[str],
                 command: Command, path: str) -> None:
        self.__dict__.update(values)
        self.args = args
        self.given = given
        self.command = command
        self.path = path
        self.dash: int | None = None
        self.inherited: list[Flag] = []

    def __getattr__(self, name: str) -> Any:  # for mypy: flags are dynamic
        raise AttributeError(name)


def parse_duration(text: str) -> float:
    """Go's time.ParseDuration (the units etcdctl's flags use)."""
    units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0,
             "h": 3600.0}
    s = text.strip()
    if s in ("0", ""):
        return 0.0
    total, i = 0.0, 0
    sign = -1.0 if s.startswith("-") else 1.0
    s = s.lstrip("+-")
    while i < len(s):
        j = i
        while j < len(s) and (s[j].isdigit() or s[j] == "."):
            j += 1
        k = j
        while k < len(s) and not (s[k].isdigit() or s[k] == "."):
            k += 1
        if j == i or s[j:k] not in units:
            raise ValueError(f"time: invalid duration {text}")
        total += float(s[i:j]) * units[s[j:k]]
        i = k
    return sign * total


def _convert(flag: Flag, value: str) -> Any:
    try:
        if flag.kind == "bool":
            v = value.lower()
            if v in ("1", "t", "true"):
                return True
            if v in ("0", "f", "false"):
                return False
            raise ValueError
        if flag.kind == "int":
            return int(value, 0) if value.lower().startswith(("0x", "-0x")) else int(value)
        if flag.kind == "dur":
            parse_duration(value)
            return value
        if flag.kind == "list":
            return [p for p in value.split(",")]
        return value
    except ValueError:
        shown = "--" + flag.name if not flag.short else f"-{flag.short}, --{flag.name}"
        raise CtlError(f'invalid argument "{value}" for "{shown}" flag: '
                       f'{_why(flag, value)}', EXIT_ERROR) from None


def _why(flag: Flag, value: str) -> str:
    if flag.kind == "bool":
        return f'strconv.ParseBool: parsing "{value}": invalid syntax'
    if flag.kind == "int":
        return f'strconv.ParseInt: parsing "{value}": invalid syntax'
    return f"time: invalid duration {value}"


def parse(root: Command, argv: list[str]) -> tuple[Command, Args]:
    """The command named by the leading words and its parsed flags."""
    cmd = root
    path = [root.name]
    flags: dict[str, Flag] = {}
    shorts: dict[str, Flag] = {}

    def add(fs: Sequence[Flag]) -> None:
        for f in fs:
            flags[f.name] = f
            if f.short:
                shorts[f.short] = f

    add(GLOBAL_FLAGS)
    add((Flag("help", "bool", False, "", short="h"),))
    add(cmd.flags)
    values: dict[str, Any] = {f.dest: f.default for f in flags.values()}
    _env_defaults(values)
    given: set[str] = set()
    args: list[str] = []
    dash: int | None = None
    inherited: list[Flag] = []
    i = 0
    descending = True
    while i < len(argv):
        a = argv[i]
        i += 1
        if a == "--":
            dash = len(args)
            args.extend(argv[i:])
            break
        if a.startswith("--") and len(a) > 2:
            name, eq, value = a[2:].partition("=")
            f = flags.get(name)
            if f is None:
                raise _Usage(cmd, " ".join(path), f"unknown flag: --{name}")
            if not eq:
                if f.kind == "bool":
                    value = "true"
                elif i < len(argv):
                    value = argv[i]
                    i += 1
                else:
                    raise _Usage(cmd, " ".join(path), f"flag needs an argument: --{name}")
            values[f.dest] = _convert(f, value)
            given.add(f.name)
            continue
        if a.startswith("-") and len(a) > 1 and a != "-":
            letter, rest = a[1], a[2:]
            f = shorts.get(letter)
            if f is None:
                raise _Usage(cmd, " ".join(path), f"unknown shorthand flag: '{letter}' in {a}")
            if f.kind == "bool":
                values[f.dest] = _convert(f, rest.lstrip("=") or "true")
            else:
                if not rest:
                    if i >= len(argv):
                        raise _Usage(cmd, " ".join(path),
                                     f"flag needs an argument: '{letter}' in -{letter}")
                    rest = argv[i]
                    i += 1
                values[f.dest] = _convert(f, rest.lstrip("="))
            given.add(f.name)
            continue
        if descending and not args:
            sub = cmd.sub(a)
            if sub is not None:
                inherited.extend(cmd.flags if cmd is not root else ())
                cmd = sub
                path.append(a)
                add(cmd.flags)
                for f in cmd.flags:
                    values.setdefault(f.dest, f.default)
                continue
        descending = False
        args.append(a)
    for f in cmd.flags:
        values.setdefault(f.dest, f.default)
    parsed = Args(values, args, given, cmd, " ".join(path))
    parsed.dash = dash  # where `--` was among the arguments (the exec forms)
    parsed.inherited = inherited
    return cmd, parsed


class _Usage(Exception):
    def __init__(self, cmd: Command, path: str, message: str) -> None:
        super().__init__(message)
        self.cmd = cmd
        self.path = path


def env_key(flag: Flag) -> str:
    return "ETCDCTL_" + flag.name.upper().replace("-", "_")


def _env_defaults(values: dict[str, Any]) -> None:
    """Global flags from ETCDCTL_<FLAG>, as etcd's pkg/flags sets them: empty values
    are skipped and a value that does not parse is dropped silently (etcdctl 3.4
    ignores that error and keeps the default)."""
    for f in GLOBAL_FLAGS:
        env = os.environ.get(env_key(f))
        if env:
            with contextlib.suppress(CtlError):
                values[f.dest] = _convert(f, env)


def verify_env(given: set[str], path: str) -> None:
    """What etcdctl checks when it makes its client: an ETCDCTL_ variable shadowed by
    the same flag on the command line is fatal, one naming no global flag draws a
    warning (capnslog lines on stderr)."""
    used = {env_key(f) for f in GLOBAL_FLAGS if f.name not in given and os.environ.get(
        env_key(f))}
    shadowed = {env_key(f) for f in GLOBAL_FLAGS if f.name in given}
    if path.split(" ")[0] == "watch":  # (etcdctl silences these for watch)
        used |= {"ETCDCTL_WATCH_KEY", "ETCDCTL_WATCH_RANGE_END"}
    for key, value in os.environ.items():
        if key in used or key == "ETCDCTL_API":  # (etcdctl unsets ETCDCTL_API first)
            continue
        if key in shadowed:
            _capnslog("C", f'conflicting environment variable "{key}" is shadowed by '
                      "corresponding command-line flag (either unset environment "
                      "variable or disable flag)")
            raise SystemExit(1)
        if key.startswith("ETCDCTL_"):
            _capnslog("W", f"unrecognized environment variable {key}={value}")


def _capnslog(level: str, message: str) -> None:
    import datetime

    now = datetime.datetime.now()
    sys.stderr.write(f"{now:%Y-%m-%d %H:%M:%S.%f} {level} | pkg/flags: {message}\n")
    sys.stderr.flush()


# -- help
def _tab_columns(rows: list[tuple[str, str]], indent: str = "") -> str:
    """Go's tabwriter with padchar '\\t' (cobra's etcdctl template): cells padded with
    tabs to a column width rounded up to a multiple of 8."""
    if not rows:
        return ""
    width = max(len(a) for a, _ in rows) + 1
    width = (width + 7) // 8 * 8
    out = []
    for a, b in rows:
        tabs = (width - len(a) + 7) // 8
        out.append(f"{indent}{a}{chr(9) * tabs}{b}\n")
    return "".join(out)


def _flag_rows(flags: Sequence[Flag]) -> list[tuple[str, str]]:
    rows = []
    for f in sorted(flags, key=lambda f: f.name):
        lead = f"  -{f.short}, " if f.short else "      "
        rows.append((f"{lead}--{f.name}{f.shown_default()}", f.help))
    return rows


def _leaves(cmd: Command, prefix: str = "") -> list[tuple[str, str]]:
    out = []
    for c in sorted(cmd.subcommands, key=lambda c: c.name):
        if c.hidden:
            continue
        name = f"{prefix}{c.name}"
        if c.subcommands and not c.run:
            out += _leaves(c, name + " ")
        else:
            out.append((name, c.short))
    return out


def help_text(cmd: Command, path: str, inherited: Sequence[Flag] = ()) -> str:
    """etcdctl's help for `cmd`; `inherited`: its parents' persistent flags."""
    root = path == "etcdctl"
    parts = ["NAME:\n", f"\t{path.split(' ', 1)[-1] if not root else 'etcdctl'} - "
             f"{cmd.short}\n\n", "USAGE:\n"]
    if root:
        parts.append("\tetcdctl [flags]\n\nVERSION:\n\t" + VERSION + "\n\n")
    elif cmd.subcommands and not cmd.run and "<" in cmd.usage:
        parts.append(f"\tetcdctl {cmd.usage} [flags]\n\n")
    else:
        parts.append(f"\tetcdctl {cmd.usage} [flags]\n\n")
    if root or (cmd.subcommands and not cmd.run):
        parts.append(f"API VERSION:\n\t{API_VERSION}\n\n\n")
        parts.append("COMMANDS:\n")
        items = _leaves(cmd) if root else [(c.name, c.short) for c in sorted(
            cmd.subcommands, key=lambda c: c.name) if not c.hidden]
        parts.append(_tab_columns(items, "\t"))
        parts.append("\n")
    if cmd.long:
        parts.append("DESCRIPTION:\n" + "".join(f"\t{line}\n" for line in
                                                 cmd.long.split("\n")) + "\n")
    name = "etcdctl" if root else cmd.name
    own = [*cmd.flags, Flag("help", "bool", False, f"help for {name}", short="h")]
    if root:
        own = [*GLOBAL_FLAGS, own[-1]]
    parts.append("OPTIONS:\n" + _tab_columns(_flag_rows(own)) + "\n")
    if not root:
        parts.append("GLOBAL OPTIONS:\n"
                     + _tab_columns(_flag_rows([*GLOBAL_FLAGS, *inherited])) + "\n")
    return "".join(parts)


def main(root: Command, argv: list[str]) -> None:
    try:
        cmd, args = parse(root, argv)
    except _Usage as e:
        # cobra: the error, the command's help, then etcdctl's own report of it
        sys.stderr.write(f"Error: {e}\n")
        sys.stderr.flush()
        sys.stdout.write(help_text(e.cmd, e.path))
        sys.stdout.flush()
        sys.stderr.write(f"\nError: {e}\n")
        raise SystemExit(EXIT_ERROR) from None
    except CtlError as e:
        print(f"Error: {e}", file=sys.stderr)
        raise SystemExit(e.code) from None
    if args.help or not cmd.run:
        sys.stdout.write(help_text(cmd, args.path, args.inherited))
        raise SystemExit(0)
    if args.debug:
        _debug(args)
    module, _, fn = cmd.run.partition(":")
    try:
        run: Callable[[Args], None] = getattr(
            importlib.import_module(f"petcd.cli.ctl.{module}"), fn)
        run(args)
    except CtlError as e:
        print(f"Error: {e}", file=sys.stderr)
        raise SystemExit(e.code) from None
    except KeyboardInterrupt:
        # A Go program that does not catch SIGINT (etcdctl, but for lock and elect,
        # which handle it themselves) dies of it: so does petcdctl, with what it
        # printed flushed.
        import signal

        sys.stdout.flush()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
        raise SystemExit(130) from None  # (not reached)


def _debug(args: Args) -> None:
    """--debug: the effective global flags as etcdctl lists them, and gRPC's log."""
    for f in GLOBAL_FLAGS:
        v = getattr(args, f.dest)
        shown = ("true" if v else "false") if f.kind == "bool" else \
            "[" + " ".join(v) + "]" if f.kind == "list" else str(v)
        sys.stderr.write(f"ETCDCTL_{f.dest.upper()}={shown}\n")
    os.environ["GRPC_VERBOSITY"] = "INFO"


def bad_args(message: str) -> CtlError:
    return CtlError(message, EXIT_BAD_ARGS)
