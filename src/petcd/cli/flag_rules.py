"""How a flag's typed value becomes its ServerOptions value when a type change is not
enough: etcd's meaning of 0 and negative values, flags read together, and checks that fail
the start. Each is named by its flag's row in cli/flags.py (`convert=`); a ValueError's
text is what the user sees."""

from __future__ import annotations

from typing import TYPE_CHECKING

from petcd.server.client_tls import GRPCIO_TLS_REFUSED

if TYPE_CHECKING:
    from petcd.cli.config import Config


def data_dir(value: str, cfg: Config) -> str:
    return cfg.data_dir  # default: ${name}.petcd


def cluster(value: str, cfg: Config) -> dict[str, tuple[str, ...]]:
    return {k: tuple(v) for k, v in cfg.initial_cluster_map().items()}


def compaction_mode(value: str, cfg: Config) -> str:
    return cfg.auto_compaction[0]


def retention(value: str, cfg: Config) -> float:
    return cfg.auto_compaction[1]


def batch_interval_ms(seconds: float, cfg: Config) -> int:
    return round(seconds * 1000) or 100  # etcd: 0 (or less) means its default, 100ms


def batch_limit(limit: int, cfg: Config) -> int:
    return max(0, limit) or 10000  # etcd: 0 (or less) means its default


def compaction_batch(limit: int, cfg: Config) -> int:
    return limit if limit > 0 else 1000  # etcd: 0 means its default


def max_learners(n: int, cfg: Config) -> int:
    return max(1, n)


def progress_interval(seconds: float, cfg: Config) -> float:
    return seconds if seconds > 0 else 600.0  # etcd keeps its 10 minutes for <= 0


def request_warning(seconds: float, cfg: Config) -> float:
    """Or the older experimental name's value, when only that one is set."""
    old = "experimental-warning-unary-request-duration"
    if "warning-unary-request-duration" not in cfg.explicit and old in cfg.explicit:
        return cfg.seconds(old)
    return seconds


def grpc_server(value: str, cfg: Config) -> str:
    for url in (*cfg.items("listen-client-urls"), *cfg.items("listen-client-http-urls")):
        if url.startswith(("https://", "unixs://")) and value != "h2":
            raise ValueError(GRPCIO_TLS_REFUSED)
    return value


def auth_token(option: str, cfg: Config) -> str:
    """Checked now (keys readable and matching) so a bad one fails the start, as in etcd."""
    from petcd.auth.tokens import TokenOptionError, from_option

    try:
        from_option(option, 300.0)
    except TokenOptionError as e:
        raise ValueError(f"--auth-token: {e}") from None
    return option


def as_float(n: int, cfg: Config) -> float:
    return float(n)


def metrics(value: str, cfg: Config) -> str:
    if value not in ("basic", "extensive"):
        raise ValueError(f"unknown metrics option {value!r} (expected 'basic' or 'extensive')")
    return value
