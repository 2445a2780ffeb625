"""Fixtures for petcd.client tests: the same test runs against petcd and real etcd 3.4
(`backend`), through `Client` and through `AsyncClient` (`flavour`).

`connect(endpoints, **kw)` gives a client with the blocking API for either flavour: for
"async" it is `AsyncBridge`, which runs a real `AsyncClient` on an event loop in a
helper thread and waits for each coroutine, so one test body checks both flavours.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from petcd import testing
from petcd.client import AsyncClient, Client
from petcd.testing import MemberProcess, have_etcd

FAST = list(testing.FAST_ELECTIONS)
BACKENDS = ["petcd", pytest.param("etcd", marks=pytest.mark.skipif(
    not have_etcd(), reason="etcd 3.4 not installed"))]


class _AsyncIter:
    def __init__(self, bridge: AsyncBridge, target: Any) -> None:
        self._bridge, self._target = bridge, target

    def __iter__(self) -> _AsyncIter:
        return self

    def __next__(self) -> Any:
        try:
            return self._bridge.run(self._target.__anext__())
        except StopAsyncIteration:
            raise StopIteration from None

    def events(self) -> Iterator[Any]:
        for batch in self:
            yield from batch.events

    def __getattr__(self, name: str) -> Any:
        return self._bridge.wrap(getattr(self._target, name))

    def __enter__(self) -> _AsyncIter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncBridge:
    """Blocking calls into a real AsyncClient running on its own loop thread."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

        async def make() -> AsyncClient:
            return AsyncClient(*args, **kw)
        self.client = self.run(make())

    def run(self, coro: Any, timeout: float = 120) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def wrap(self, attr: Any) -> Any:
        if not callable(attr):
            return attr

        def call(*a: Any, **kw: Any) -> Any:
            async def inner() -> Any:
                out = attr(*a, **kw)
                if asyncio.iscoroutine(out):
                    out = await out
                return out
            out = self.run(inner())
            if hasattr(out, "__anext__") or hasattr(out, "wait_lost"):
                return _AsyncIter(self, out)
            return out
        return call

    def __getattr__(self, name: str) -> Any:
        return self.wrap(getattr(self.client, name))

    def close(self) -> None:
        if self.loop.is_closed():
            return
        self.run(self.client.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()

    def __enter__(self) -> AsyncBridge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


Connect = Callable[..., Any]


@pytest.fixture(params=["sync", "async"])
def flavour(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def connect(flavour: str) -> Iterator[Connect]:
    made: list[Any] = []

    def make(endpoints: str | Sequence[str], **kw: Any) -> Any:
        c = Client(endpoints, **kw) if flavour == "sync" else AsyncBridge(endpoints, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def start_members(kind: str, base: Path, size: int, args: Sequence[str] = ()
                  ) -> list[MemberProcess]:
    """`size` members of petcd or etcd forming one cluster (FAST elections)."""
    return testing.start_members(kind, base, size, [*FAST, *args], token=f"client-{kind}")


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[MemberProcess]:
    """One member of petcd or etcd, shared by a module (use distinct keys per test)."""
    kind = str(request.param)
    failed = request.session.testsfailed
    (m,) = start_members(kind, tmp_path_factory.mktemp(kind), 1)
    try:
        yield m
    finally:
        if request.session.testsfailed > failed:
            sys.stderr.write(m.log_tail())
        m.kill()


@pytest.fixture
def members_factory(request: pytest.FixtureRequest, tmp_path: Path
                    ) -> Iterator[Callable[..., list[MemberProcess]]]:
    made: list[MemberProcess] = []
    failed = request.session.testsfailed

    def make(kind: str, size: int = 3, args: Sequence[str] = ()) -> list[MemberProcess]:
        ms = start_members(kind, tmp_path / f"c{len(made)}", size, args)
        made.extend(ms)
        return ms

    try:
        yield make
    finally:
        if request.session.testsfailed > failed:
            for m in made:
                sys.stderr.write(f"\n=== {m.name} ===\n{m.log_tail(4000)}")
        for m in made:
            m.kill()


def key_prefix(request: pytest.FixtureRequest) -> str:
    return request.node.name.replace("[", "/").replace("]", "") + "/"


@pytest.fixture
def pfx(request: pytest.FixtureRequest) -> str:
    """A key prefix unique to this test (the module's member is shared)."""
    return key_prefix(request)
