"""Server configuration, read as etcd reads it: command-line flags (Go flag syntax:
-flag, --flag, --flag=value, --flag value, bare --bool), then ETCD_* environment
variables for the flags not given on the command line, and --config-file YAML
(etcd's keys), which, when given, replaces flags and environment entirely.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import SplitResult, urlsplit

import yaml

from petcd.cli.flags import BY_FILE_KEY, BY_NAME, FLAGS, IGNORED, NOT_FOR_PETCD, Flag, Kind
from petcd.server.options import ServerOptions
from petcd.tls.config import TLSError, check_tls_settings


class ConfigError(Exception):
    """A bad flag, variable or config file; the message is what the user sees."""


class FlagUsageError(ConfigError):
    """A malformed command line (unknown flag, missing value): exits 2 like Go's flag."""


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0,
                 "h": 3600.0}


def parse_duration(text: str) -> float:
    """Go's time.ParseDuration, in seconds."""
    s = text.strip()
    sign = 1.0
    if s[:1] in "+-" and s:
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    pos, total = 0, 0.0
    while pos < len(s):
        m = _DURATION_PART.match(s, pos)
        if m is None:
            raise ValueError(f"time: invalid duration {text!r}")
        total += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    if not s:
        raise ValueError(f"time: invalid duration {text!r}")
    return sign * total


def parse_url(text: str) -> SplitResult:
    """etcd's URL rules: http/https/unix/unixs, always "host:port", no path. A unix URL
    names a socket file by its host:port text (unix://localhost:2379 -> ./localhost:2379)."""
    u = urlsplit(text.strip())
    if u.scheme not in ("http", "https", "unix", "unixs"):
        raise ValueError(f"URL scheme must be http, https, unix, or unixs: {text}")
    try:
        port = u.port
    except ValueError:
        port = None
    if port is None or not u.hostname:
        raise ValueError(f"URL address does not have the form \"host:port\": {text}")
    if u.path not in ("", "/"):
        raise ValueError(f"URL must not contain a path: {text}")
    return u


def _url_string(u: SplitResult) -> str:
    # The canonical form etcd prints and hashes: scheme://host:port (no trailing slash).
    return f"{u.scheme}://{u.netloc}"


def _convert(flag: Flag, raw: object, *, from_file: bool = False) -> object:
    """Turn a flag's text (or YAML value) into its typed value; ValueError when invalid."""
    kind = flag.kind
    if kind is Kind.BOOL:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in ("1", "t", "true"):
            return True
        if text in ("0", "f", "false"):
            return False
        raise ValueError(f"parse error: invalid boolean {raw!r}")
    if kind in (Kind.INT, Kind.UINT):
        if isinstance(raw, bool):
            raise ValueError(f"invalid number {raw!r}")
        try:
            value = int(raw) if isinstance(raw, int) else int(str(raw).strip(), 0)
        except ValueError as e:
            raise ValueError(f"parse error: invalid number {raw!r}") from e
        if kind is Kind.UINT and value < 0:
            raise ValueError(f"parse error: invalid number {raw!r}")
        return value
    if kind is Kind.DURATION:
        if from_file and isinstance(raw, int | float) and not isinstance(raw, bool):
            return float(raw) / 1e9  # Go marshals a Duration as integer nanoseconds
        return parse_duration(str(raw))
    if kind is Kind.URLS:
        items = raw if isinstance(raw, list) else str(raw).split(",")
        urls = [_url_string(parse_url(str(x))) for x in items if str(x).strip()]
        return sorted(set(urls))
    if kind is Kind.STRINGS:
        items = raw if isinstance(raw, list) else str(raw).split(",")
        values = [str(x).strip() for x in items if str(x).strip()]
        if flag.name == "cors":  # etcd: origins are URLs, or "*"
            for v in values:
                if v != "*":
                    parse_url(v)
        return values
    if kind is Kind.CHOICE:
        text = str(raw)
        if text not in flag.choices:
            raise ValueError(f"invalid value {text!r}, valid values are {list(flag.choices)}")
        return text
    return "" if raw is None else str(raw)


def _default(f: Flag) -> object:
    if f.kind is Kind.DURATION and isinstance(f.default, int | float):
        return float(f.default)  # defaults are written in seconds
    return _convert(f, f.default)


def _defaults() -> dict[str, object]:
    return {name: _default(f) for name, f in BY_NAME.items()}


@dataclass
class Config:
    """Every flag's typed value (`values[flag-name]`), plus typed views of what petcd uses."""

    values: dict[str, object] = field(default_factory=_defaults)
    explicit: set[str] = field(default_factory=set)  # set on the command line/env/file
    config_file: str = ""
    warnings: list[str] = field(default_factory=list)

    # The one typed way to read a flag: by its kind in the table (cli/flags.py); asking
    # for the wrong kind is a programming error and fails at once.
    def _get(self, name: str, kinds: tuple[Kind, ...], t: type[object]) -> object:
        flag = BY_NAME[name]
        v = self.values[name]
        if flag.kind not in kinds or not isinstance(v, t):
            raise TypeError(f"--{name} is a {flag.kind.value} flag holding {v!r}")
        return v

    def text(self, name: str) -> str:
        """A string or choice flag."""
        return cast(str, self._get(name, (Kind.STRING, Kind.CHOICE), str))

    def number(self, name: str) -> int:
        """An int or uint flag."""
        return cast(int, self._get(name, (Kind.INT, Kind.UINT), int))

    def seconds(self, name: str) -> float:
        """A duration flag."""
        return cast(float, self._get(name, (Kind.DURATION,), float))

    def on(self, name: str) -> bool:
        """A bool flag."""
        return cast(bool, self._get(name, (Kind.BOOL,), bool))

    def items(self, name: str) -> list[str]:
        """A list flag (URLs or strings)."""
        return cast(list[str], self._get(name, (Kind.URLS, Kind.STRINGS), list))

    def options(self) -> ServerOptions:
        """The member's typed options, each filled by the flag naming it (cli/flags.py)."""
        fields: dict[str, Any] = {}
        for flag in FLAGS:
            if flag.option:
                try:
                    fields[flag.option] = flag.option_value(self)
                except ValueError as e:
                    raise ConfigError(str(e)) from None
        return ServerOptions(**fields)

    @property
    def name(self) -> str:
        return self.text("name")

    @property
    def data_dir(self) -> str:
        return self.text("data-dir") or f"{self.name}.petcd"

    @property
    def listen_client_urls(self) -> list[str]:
        return self.items("listen-client-urls")

    @property
    def advertise_client_urls(self) -> list[str]:
        return self.items("advertise-client-urls")

    @property
    def listen_peer_urls(self) -> list[str]:
        return self.items("listen-peer-urls")

    @property
    def initial_cluster(self) -> str:
        return self.text("initial-cluster")

    @property
    def initial_cluster_token(self) -> str:
        return self.text("initial-cluster-token")

    @property
    def max_request_bytes(self) -> int:
        return self.number("max-request-bytes")

    @property
    def max_txn_ops(self) -> int:
        return self.number("max-txn-ops")

    @property
    def auto_compaction(self) -> tuple[str, float]:
        """(mode, retention) as etcd reads them: a whole number is hours in periodic mode
        and revisions in revision mode; anything else a Go duration (in revision mode,
        etcd then takes its nanoseconds as the count)."""
        mode = self.text("auto-compaction-mode") or "periodic"
        text = self.text("auto-compaction-retention") or "0"
        if text.isascii() and text.isdigit():
            n = int(text)
            return mode, float(n * 3600 if mode == "periodic" else n)
        try:
            seconds = parse_duration(text)
        except ValueError as e:
            raise ConfigError(f"error parsing CompactionRetention: {e}") from None
        return mode, seconds if mode == "periodic" else float(int(seconds * 1e9))

    @property
    def heartbeat_ms(self) -> int:
        return self.number("heartbeat-interval")

    @property
    def election_ms(self) -> int:
        return self.number("election-timeout")

    @property
    def grpc_keepalive_min_time(self) -> float:
        return self.seconds("grpc-keepalive-min-time")

    @property
    def grpc_keepalive_interval(self) -> float:
        return self.seconds("grpc-keepalive-interval")

    @property
    def log_level(self) -> str:
        return "debug" if self.on("debug") else self.text("log-level")

    @property
    def log_outputs(self) -> list[str]:
        if "log-outputs" not in self.explicit and "log-output" in self.explicit:
            return self.items("log-output")
        return self.items("log-outputs")

    def initial_cluster_map(self) -> dict[str, list[str]]:
        """--initial-cluster as {name: sorted peer URLs}; a name may repeat for more URLs."""
        out: dict[str, list[str]] = {}
        text = self.initial_cluster.strip()
        if not text:
            return out
        for item in text.split(","):
            name, sep, url = item.partition("=")
            if not sep:
                raise ConfigError(f"failed to parse initial cluster: {item!r} is not name=url")
            try:
                out.setdefault(name.strip(), []).append(_url_string(parse_url(url)))
            except ValueError as e:
                raise ConfigError(str(e)) from e
        return {k: sorted(set(v)) for k, v in out.items()}

    def validate(self) -> None:
        """etcd's checks (embed.Config.Validate), with its messages."""
        for name, (action, reason) in NOT_FOR_PETCD.items():
            if name in self.explicit and self.values[name] != BY_NAME[name].default \
                    and self.values[name] not in ("", "off", False, 0):
                if action == "refuse":
                    raise ConfigError(f"--{name} is not supported by petcd: {reason}")
                self.warnings.append(f"--{name} has no effect in petcd: {reason}")
        for name in ("listen-peer-urls", "listen-client-urls", "listen-client-http-urls",
                     "listen-metrics-urls"):
            _check_bind_urls(self.items(name))
        if self.text("discovery") and self.initial_cluster and self.text("discovery-srv"):
            raise ConfigError("multiple discovery or bootstrap flags are set. Choose one of "
                              "\"initial-cluster\", \"discovery\" or \"discovery-srv\"")
        tick, election = self.heartbeat_ms, self.election_ms
        if tick <= 0:
            raise ConfigError(f"--heartbeat-interval must be >0 (set to {tick}ms)")
        if election <= 0:
            raise ConfigError(f"--election-timeout must be >0 (set to {election}ms)")
        if 5 * tick > election:
            raise ConfigError(f"--election-timeout[{election}ms] should be at least as 5 times "
                              f"as --heartbeat-interval[{tick}ms]")
        if election > 50000:
            raise ConfigError(f"--election-timeout[{election}ms] is too long, and should be "
                              "set less than 50000ms")
        if self.on("experimental-enable-lease-checkpoint-persist") and \
                not self.on("experimental-enable-lease-checkpoint"):
            raise ConfigError("setting experimental-enable-lease-checkpoint-persist requires "
                              "experimental-enable-lease-checkpoint")
        if self.listen_client_urls and not self.advertise_client_urls:
            raise ConfigError("--advertise-client-urls is required when --listen-client-urls "
                              "is set explicitly")
        mode = self.text("auto-compaction-mode")
        if mode not in ("", "periodic", "revision"):
            raise ConfigError(f"unknown auto-compaction-mode {mode!r}")
        _ = self.auto_compaction  # a retention etcd cannot parse fails the start
        if self.log_level not in ("debug", "info", "warn", "error", "dpanic", "panic",
                                  "fatal"):
            raise ConfigError(f"unknown log level {self.log_level!r}")
        if self.max_request_bytes <= 0:
            raise ConfigError("--max-request-bytes must be >0")
        try:
            check_tls_settings(self.items("cipher-suites"), self.text("tls-min-version"),
                               self.text("tls-max-version"))
        except TLSError as e:
            raise ConfigError(str(e)) from None


def _check_bind_urls(urls: Sequence[str]) -> None:
    for text in urls:
        u = urlsplit(text)
        if u.scheme in ("unix", "unixs") or u.hostname == "localhost":
            continue
        try:
            ipaddress.ip_address(u.hostname or "")
        except ValueError:
            raise ConfigError(f"expected IP in URL for binding ({text})") from None


def parse_command_line(args: Sequence[str]) -> tuple[dict[str, str], bool, bool]:
    """Go flag syntax -> ({flag name: raw text}, wants_help, wants_version)."""
    raw: dict[str, str] = {}
    wants_help = wants_version = False
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            break
        if not arg.startswith("-") or arg == "-":
            raise ConfigError(f"'{arg}' is not a valid flag")
        name, eq, value = arg.lstrip("-").partition("=")
        if name in ("h", "help"):
            wants_help = True
            continue
        if name == "version":
            wants_version = not eq or value.lower() in ("1", "t", "true")
            continue
        if name == "config-file":
            if not eq:
                if i >= len(args):
                    raise FlagUsageError("flag needs an argument: -config-file")
                value = args[i]
                i += 1
            raw[name] = value
            continue
        if name in IGNORED:
            if not eq and i < len(args) and not args[i].startswith("-"):
                i += 1
            continue
        flag = BY_NAME.get(name)
        if flag is None:
            raise FlagUsageError(f"flag provided but not defined: -{name}")
        if not eq:
            if flag.kind is Kind.BOOL:
                value = "true"
            else:
                if i >= len(args):
                    raise FlagUsageError(f"flag needs an argument: -{name}")
                value = args[i]
                i += 1
        raw[name] = value
    if i < len(args):
        raise ConfigError(f"'{args[i]}' is not a valid flag")
    return raw, wants_help, wants_version


def _set(cfg: Config, flag: Flag, raw: object, origin: str, *, from_file: bool = False) -> None:
    try:
        cfg.values[flag.name] = _convert(flag, raw, from_file=from_file)
    except ValueError as e:
        raise ConfigError(f"invalid value {raw!r} for {origin}: {e}") from e
    cfg.explicit.add(flag.name)


def load_config_file(path: str) -> Config:
    """etcd's YAML config file: keys are flag names; flags and ETCD_* are ignored."""
    try:
        with open(path, encoding="utf-8") as f:
            data: Any = yaml.safe_load(f)
    except OSError as e:
        raise ConfigError(f"cannot read config file: {e}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"error converting YAML to JSON: {e}") from e
    cfg = Config(config_file=path)
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError("config file must hold a YAML mapping of flag names to values")
    for key, value in data.items():
        key = str(key)
        if key in ("client-transport-security", "peer-transport-security"):
            if isinstance(value, Mapping):
                for sub, sub_value in value.items():
                    target = BY_FILE_KEY.get(f"{key}.{sub}")
                    if target is not None and sub_value is not None:
                        _set(cfg, target, sub_value, f"{key}.{sub}", from_file=True)
            continue
        flag = BY_NAME.get(key)
        if flag is None or value is None:
            continue  # unknown keys are ignored, as etcd's JSON decoding does
        if flag.kind is Kind.URLS and value == "":
            continue
        _set(cfg, flag, value, f"config key {key!r}", from_file=True)
    return cfg


def load(args: Sequence[str],
         environ: Mapping[str, str] | None = None) -> tuple[Config, bool, bool]:
    """Build the configuration from argv and the environment.

    Returns (config, wants_help, wants_version); raises ConfigError on bad input.
    """
    env = os.environ if environ is None else environ
    raw, wants_help, wants_version = parse_command_line(args)
    if wants_help or wants_version:
        return Config(), wants_help, wants_version
    config_file = raw.pop("config-file", "") or env.get("ETCD_CONFIG_FILE", "")
    if config_file:
        cfg = load_config_file(config_file)
    else:
        cfg = Config()
        for name, text in raw.items():
            _set(cfg, BY_NAME[name], text, f"flag -{name}")
        for flag in BY_NAME.values():
            if flag.env in env:
                if flag.name in raw:
                    cfg.warnings.append(f"recognized environment variable {flag.env}, but "
                                        "unused: shadowed by corresponding flag")
                    continue
                _set(cfg, flag, env[flag.env], f"environment variable {flag.env}")
        known = {f.env for f in BY_NAME.values()} | {"ETCD_CONFIG_FILE"}
        cfg.warnings.extend(f"unrecognized environment variable {k}"
                            for k in env if k.startswith("ETCD_") and k not in known
                            and not k.startswith("ETCDCTL"))
        # etcd drops its default advertise URL when the listen URL was given explicitly.
        if "listen-client-urls" in cfg.explicit and "advertise-client-urls" not in cfg.explicit:
            cfg.values["advertise-client-urls"] = []
    if ("discovery" in cfg.explicit or "discovery-srv" in cfg.explicit) and \
            "initial-cluster" not in cfg.explicit:
        cfg.values["initial-cluster"] = ""
    cfg.validate()
    return cfg, False, False
