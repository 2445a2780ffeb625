"""The member's logging, from etcd's flags: --logger (zap: structured lines with etcd's
field names; capnslog: petcd's human-readable lines), --log-format (json or console, as
etcd 3.5's zap), --log-level, --log-outputs (default/stderr, stdout, file paths) and
--enable-log-rotation with --log-rotation-config-json for a single file output.

Context fields ride on a record as `extra={"fields": {...}}` and become JSON keys (zap)
or a trailing JSON object (console), as zap writes them.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import logging
import logging.handlers
import os
import shutil
import sys
import time
from typing import Any

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
          "error": logging.ERROR, "dpanic": logging.CRITICAL, "panic": logging.CRITICAL,
          "fatal": logging.CRITICAL}
_ZAP_LEVEL = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warn",
              logging.ERROR: "error", logging.CRITICAL: "fatal"}


class LogSetupError(ValueError):
    pass


def _caller(record: logging.LogRecord) -> str:
    """zap's short caller: the last two path parts and the line."""
    parts = record.pathname.replace(os.sep, "/").split("/")
    return f"{'/'.join(parts[-2:])}:{record.lineno}"


def _ts(record: logging.LogRecord) -> str:
    t = dt.datetime.fromtimestamp(record.created, dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


class ZapJsonFormatter(logging.Formatter):
    """One JSON object per line: level, ts, caller, msg, then the record's fields."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {"level": _ZAP_LEVEL.get(record.levelno, "info"),
                               "ts": _ts(record), "caller": _caller(record),
                               "msg": record.getMessage()}
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            for k, v in fields.items():
                doc.setdefault(str(k), v)
        if record.exc_info:
            doc["error"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str, separators=(",", ":"))


class ZapConsoleFormatter(logging.Formatter):
    """zap's console encoding: tab-separated ts, level, caller, msg, then the fields."""

    def format(self, record: logging.LogRecord) -> str:
        line = "\t".join((_ts(record), _ZAP_LEVEL.get(record.levelno, "info"),
                          _caller(record), record.getMessage()))
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict) and fields:
            line += "\t" + json.dumps(fields, default=str, separators=(",", ":"))
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class RotatingFile(logging.handlers.RotatingFileHandler):
    """lumberjack's rules (what etcd rotates with): rotate past maxsize MB, keep at most
    maxbackups old files (0: all) no older than maxage days (0: any age), gzip them if
    compress; backups are named <name>-<timestamp><ext> in UTC unless localtime."""

    def __init__(self, path: str, maxsize_mb: int, maxage_days: int, maxbackups: int,
                 localtime: bool, compress: bool) -> None:
        super().__init__(path, maxBytes=max(1, maxsize_mb) * 1024 * 1024, backupCount=0)
        self.maxage = maxage_days
        self.maxbackups = maxbackups
        self.localtime = localtime
        self.compress = compress

    def doRollover(self) -> None:
        if self.stream:
            self.stream.close()
            self.stream = None  # type: ignore[assignment]
        base, ext = os.path.splitext(self.baseFilename)
        now = time.localtime() if self.localtime else time.gmtime()
        stamp = time.strftime("%Y-%m-%dT%H-%M-%S", now) + f".{int(time.time() * 1000) % 1000:03d}"
        backup = f"{base}-{stamp}{ext}"
        if os.path.exists(self.baseFilename):
            os.replace(self.baseFilename, backup)
            if self.compress:
                with open(backup, "rb") as src, gzip.open(backup + ".gz", "wb") as dst:
                    shutil.copyfileobj(src, dst)
                os.unlink(backup)
        self._prune(base, ext)
        self.stream = self._open()

    def _prune(self, base: str, ext: str) -> None:
        folder = os.path.dirname(base) or "."
        prefix = os.path.basename(base) + "-"
        olds = sorted((os.path.join(folder, n) for n in os.listdir(folder)
                       if n.startswith(prefix) and (n.endswith(ext) or n.endswith(ext + ".gz"))),
                      reverse=True)
        keep = olds if self.maxbackups <= 0 else olds[:self.maxbackups]
        cutoff = time.time() - self.maxage * 86400 if self.maxage > 0 else None
        for path in olds:
            if path not in keep or (cutoff is not None and os.path.getmtime(path) < cutoff):
                os.unlink(path)


def rotation_config(text: str) -> dict[str, Any]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise LogSetupError(f"improperly formatted log rotation config: {e}") from None
    if not isinstance(doc, dict):
        raise LogSetupError("improperly formatted log rotation config")
    if doc.get("maxage", 0) and doc.get("maxage", 0) < 0:
        raise LogSetupError("invalid log rotation config: maxage must be >= 0")
    return doc


def setup(*, logger: str, log_format: str, level: str, outputs: list[str],
          rotate: bool, rotation_json: str) -> None:
    """Installs the handlers on the root logger; raises LogSetupError for bad settings."""
    if logger not in ("zap", "capnslog"):
        raise LogSetupError(f"unknown logger option {logger!r}")
    if log_format not in ("json", "console"):
        raise LogSetupError(f"unsupported log format: {log_format}")
    outs = outputs or ["default"]
    if rotate:
        files = [o for o in outs if o not in ("default", "stderr", "stdout")]
        if len(outs) != 1 or len(files) != 1:
            raise LogSetupError("--enable-log-rotation needs exactly one log output, a file")
    if logger == "capnslog":
        fmt: logging.Formatter = logging.Formatter(
            "%(asctime)s %(levelname)s %(name)s: %(message)s")
    elif log_format == "json":
        fmt = ZapJsonFormatter()
    else:
        fmt = ZapConsoleFormatter()
    handlers: list[logging.Handler] = []
    for out in outs:
        if out in ("default", "stderr"):
            handlers.append(logging.StreamHandler(sys.stderr))
        elif out == "stdout":
            handlers.append(logging.StreamHandler(sys.stdout))
        elif rotate:
            cfg = rotation_config(rotation_json)
            handlers.append(RotatingFile(out, int(cfg.get("maxsize", 100)),
                                         int(cfg.get("maxage", 0)),
                                         int(cfg.get("maxbackups", 0)),
                                         bool(cfg.get("localtime", False)),
                                         bool(cfg.get("compress", False))))
        else:
            handlers.append(logging.FileHandler(out))
    root = logging.getLogger()
    for h in handlers:
        h.setFormatter(fmt)
        root.addHandler(h)
    root.setLevel(LEVELS.get(level, logging.INFO))
