"""Waiting on watches with an optional deadline (shared by the recipes)."""

from __future__ import annotations

import threading
import time
from collections.abc import Container

from petcd.client.errors import DeadlineExceededError
from petcd.client.ops import Bytes
from petcd.client.sync import Client
from petcd.client.types import Event, EventType, Header


def deadline_of(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def wait_event(client: Client, key: Bytes, start_revision: int,
               types: Container[EventType], deadline: float | None, *,
               prefix: bool = False) -> Event:
    """The first event of one of `types` on `key` (or under it) from `start_revision`;
    DeadlineExceededError when the deadline passes first."""
    w = client.watch(key, prefix=prefix, start_revision=start_revision)
    timer = None
    if deadline is not None:
        timer = threading.Timer(max(0.0, deadline - time.monotonic()), w.close)
        timer.start()
    try:
        for e in w.events():
            if e.type in types:
                return e
    finally:
        if timer is not None:
            timer.cancel()
            timer.join()
        w.close()
    raise DeadlineExceededError("timed out waiting for an event")


def wait_deletes(client: Client, prefix: Bytes, max_create_revision: int,
                 deadline: float | None) -> Header:
    """Until no key under `prefix` created at or before `max_create_revision` is left
    (each waited for in turn, newest first, as etcd's concurrency package does)."""
    while True:
        r = client.get(prefix, prefix=True, sort_target="create", sort_order="descend",
                       limit=1, max_create_revision=max_create_revision)
        if not r.kvs:
            return r.header
        wait_event(client, r.kvs[0].key, r.header.revision, (EventType.DELETE,), deadline)
