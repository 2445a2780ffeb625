"""The rest of a unary call that started inline (call.Call.start) and then waited, run
without an asyncio task."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from petcd.api.h2.call import Call

_CancelledError = asyncio.CancelledError


class Resumed:
    """The rest of a call that started inline (Call.start) and then waited: what an
    asyncio task would do with it, without one (no task object made and registered,
    no loop hop before its first step). Its coroutine goes on when the future it waits
    for is done (a bare yield: on the next loop iteration); cancel() cancels that
    future, or throws CancelledError in at the next step, as Task.cancel does. Steps
    run with no current task: what `starts_inline` handlers promise to need."""

    __slots__ = ("_call", "_coro", "_must_cancel", "_waiting")

    def __init__(self, call: Call, coro: Coroutine[Any, Any, None], waiting: Any) -> None:
        """`waiting`: what the coroutine's first step yielded (see wait())."""
        self._call: Call | None = call
        self._coro: Coroutine[Any, Any, None] | None = coro
        self._waiting: asyncio.Future[Any] | None = None
        self._must_cancel = False
        if getattr(waiting, "_asyncio_future_blocking", None) is True:
            # (wait()'s common case, inlined: a call waiting for its proposal)
            waiting._asyncio_future_blocking = False
            self._waiting = waiting
            waiting.add_done_callback(self._step)
        else:
            self.wait(waiting)

    def done(self) -> bool:
        return self._coro is None

    def cancel(self) -> bool:
        if self._coro is None:
            return False
        waiting = self._waiting
        if waiting is None or not waiting.cancel():  # (a cancelled one wakes us)
            self._must_cancel = True
        return True

    def wait(self, waiting: Any) -> None:
        """The coroutine yielded `waiting`: go on when it is done."""
        if waiting is None:  # (asyncio.sleep(0))
            asyncio.get_running_loop().call_soon(self._step)
            return
        if getattr(waiting, "_asyncio_future_blocking", None) is not True:
            asyncio.get_running_loop().call_soon(
                self._step, RuntimeError(f"a handler yielded {waiting!r}"))
            return
        waiting._asyncio_future_blocking = False
        self._waiting = waiting
        # (the coroutine's await takes the future's result or exception)
        waiting.add_done_callback(self._step)
        if self._must_cancel and waiting.cancel():
            self._must_cancel = False

    def _step(self, arg: Any = None) -> None:
        """The next step: on the loop's turn (arg None), with an exception thrown in, or
        as the done callback of the future it waited for (arg that future)."""
        waiting = self._waiting
        self._waiting = None
        coro = self._coro
        if coro is None:
            return
        # (not isinstance: a failed one looks `__class__` up, a dict lookup or three)
        exc: BaseException | None = None if arg is None or arg is waiting else arg
        if self._must_cancel:
            self._must_cancel = False
            exc = _CancelledError()
        try:
            waiting = coro.send(None) if exc is None else coro.throw(exc)
        except StopIteration:
            # The call holds this object as its task: once done, let go of the call,
            # so the two are freed by reference counting, not left as a cycle for the
            # garbage collector (one per call that waited: its collections took ~6 ms
            # each under 64 put clients).
            self._coro = self._call = None
            return
        except BaseException as e:
            call = self._call
            self._coro = self._call = None
            if call is not None:
                call._escaped(e)
            return
        self.wait(waiting)
