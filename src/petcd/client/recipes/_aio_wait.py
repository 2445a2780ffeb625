"""Waiting on watches with an optional deadline: the asyncio twin of _wait."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Container
from typing import TypeVar

from petcd.client.aio import AsyncClient
from petcd.client.errors import DeadlineExceededError
from petcd.client.ops import Bytes
from petcd.client.types import Event, EventType, Header

T = TypeVar("T")


async def within(aw: Awaitable[T], deadline: float | None) -> T:
    """`aw`, or DeadlineExceededError once the (time.monotonic) deadline passes."""
    if deadline is None:
        return await aw
    try:
        return await asyncio.wait_for(aw, max(0.0, deadline - time.monotonic()))
    except TimeoutError:
        raise DeadlineExceededError("timed out waiting for an event") from None


async def _first_event(client: AsyncClient, key: Bytes, start_revision: int,
                       types: Container[EventType], prefix: bool) -> Event:
    async with await client.watch(key, prefix=prefix, start_revision=start_revision) as w:
        async for batch in w:
            for e in batch.events:
                if e.type in types:
                    return e
    raise DeadlineExceededError("watch ended before the event")


async def wait_event(client: AsyncClient, key: Bytes, start_revision: int,
                     types: Container[EventType], deadline: float | None, *,
                     prefix: bool = False) -> Event:
    """The first event of one of `types` on `key` (or under it) from `start_revision`."""
    return await within(_first_event(client, key, start_revision, types, prefix), deadline)


async def wait_deletes(client: AsyncClient, prefix: Bytes, max_create_revision: int,
                       deadline: float | None) -> Header:
    """Until no key under `prefix` created at or before `max_create_revision` is left
    (newest first, as etcd's concurrency package waits)."""
    while True:
        r = await client.get(prefix, prefix=True, sort_target="create", sort_order="descend",
                             limit=1, max_create_revision=max_create_revision)
        if not r.kvs:
            return r.header
        await wait_event(client, r.kvs[0].key, r.header.revision, (EventType.DELETE,),
                         deadline)
