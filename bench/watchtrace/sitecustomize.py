"""Imported at start-up by a petcd server that bench/watch_path.py launches (this directory
is put on its PYTHONPATH): bench/stagetrace's put stages plus the watch path's (the hub
told of a batch, an event handed to the watcher's HTTP/2 stream). Not part of petcd."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

_spec = importlib.util.spec_from_file_location(
    "petcd_stagetrace", Path(__file__).resolve().parents[1] / "stagetrace" / "sitecustomize.py")
assert _spec is not None and _spec.loader is not None
_base = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_base)  # (its PETCD_SRC switch and put stages first)


def _is_watch(self: Any, stream: Any, *a: Any, **k: Any) -> bool:
    call = getattr(stream, "call", None)
    return call is not None and call.method.path.endswith("/Watch")


def _install() -> None:
    from petcd.api.h2.connection import H2Protocol
    from petcd.api.h2.outbound import Outbound
    from petcd.server.watch.hub import WatchHub

    _base._wrap(WatchHub, "notify", "notify", None)
    # (around the stage trace's own wrapper, which records "sent" as a write starts)
    _base._wrap(H2Protocol, "_flush", None, "flushed", lambda self: bool(self.h2.out))
    _base._wrap(Outbound, "send_message", "ev_h2", None, _is_watch)
    try:  # (the hub's direct write; the first of the two is the stage's time)
        from petcd.api.h2.call import Call
        _base._wrap(Call, "offer", "ev_h2", None)
    except AttributeError:
        pass  # (before it)


if os.environ.get("PETCD_STAGES_OUT"):
    _install()
