"""python-etcd3's `etcd3.watch`: `Watcher` (callbacks by watch id) and `WatchResponse`.

Each watch is a petcd.client watch of its own: it resumes on another member after a
failure without losing or repeating events (python-etcd3's watcher ended all of them)."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from typing import Any

from petcd.client.errors import EtcdError
from petcd.client.streams import Watch as _Watch
from petcd.client.sync import Client
from petcd.client.types import WatchResponse as _Response
from petcd.compat.etcd3 import events, exceptions, utils
from petcd.pb.etcdserverpb import rpc_pb2 as rpc


class WatchResponse:
    def __init__(self, header: Any, events: list[Any]) -> None:
        self.header = header
        self.events = events


class Watch:
    def __init__(self, watch_id: int, iterator: Any = None, etcd_client: Any = None) -> None:
        self.watch_id = watch_id
        self.etcd_client = etcd_client
        self.iterator = iterator

    def cancel(self) -> None:
        self.etcd_client.cancel_watch(self.watch_id)


def _safe_callback(callback: Callable[[Any], None], arg: Any) -> None:
    try:
        callback(arg)
    except Exception:  # a failing callback must not end the watch (as in python-etcd3)
        import logging
        logging.getLogger(__name__).exception("watch callback failed")


class Watcher:
    """Runs watches for one client; callbacks get `WatchResponse`s, or an exception
    (RevisionCompactedError, ...) that ended their watch."""

    def __init__(self, client: Client, timeout: float | None = None) -> None:
        self._client = client
        self.timeout = timeout
        self._lock = threading.Lock()
        self._watches: dict[int, _Watch] = {}
        self._ids = itertools.count(1)

    def add_callback(self, key: Any, callback: Callable[[Any], None], range_end: Any = None,
                     start_revision: int | None = None, progress_notify: bool = False,
                     filters: Any = None, prev_kv: bool = False) -> int:
        fl = set(filters or ())
        try:
            w = self._client.watch(
                utils.to_bytes(key),
                None if range_end is None else utils.to_bytes(range_end),
                start_revision=start_revision or 0, prev_kv=prev_kv,
                progress_notify=progress_notify,
                no_put=rpc.WatchCreateRequest.NOPUT in fl,
                no_delete=rpc.WatchCreateRequest.NODELETE in fl)
        except EtcdError as e:
            raise exceptions.translate(e) from None

        def deliver(r: _Response | EtcdError) -> None:
            if isinstance(r, EtcdError):
                _safe_callback(callback, exceptions.translate(r))
            else:
                _safe_callback(callback, WatchResponse(
                    r.header, [events.new_event(e) for e in r.events]))

        w.start_callbacks(deliver)
        with self._lock:
            watch_id = next(self._ids)
            self._watches[watch_id] = w
        return watch_id

    def cancel(self, watch_id: int) -> None:
        with self._lock:
            w = self._watches.pop(watch_id, None)
        if w is not None:
            w.cancel()

    def close(self) -> None:
        with self._lock:
            ws = list(self._watches.values())
            self._watches.clear()
        for w in ws:
            w.cancel()
