"""python-etcd3's `etcd3.events`: PutEvent / DeleteEvent wrappers whose attributes are
the key-value's (key, value, mod_revision, ... and prev_value, prev_...)."""

from __future__ import annotations

from typing import Any

from petcd.client.types import Event as _TypedEvent
from petcd.client.types import EventType


class Event:
    def __init__(self, event: Any) -> None:
        self.key = event.kv.key
        self._event = event

    def __getattr__(self, name: str) -> Any:
        if name.startswith("prev_"):
            return getattr(self._event.prev_kv, name[5:])
        kv = self._event.kv
        if name == "lease" or hasattr(kv, name):
            return getattr(kv, name)
        raise AttributeError(name)

    def __str__(self) -> str:
        return f"{self.__class__} key={self.key!r} value={self.value!r}"


class PutEvent(Event):
    pass


class DeleteEvent(Event):
    pass


def new_event(event: Any) -> Event:
    """Wrap an event (petcd.client's, or a raw mvccpb.Event) in PutEvent/DeleteEvent."""
    is_put = event.type is EventType.PUT if isinstance(event, _TypedEvent) else event.type == 0
    return (PutEvent if is_put else DeleteEvent)(event)
