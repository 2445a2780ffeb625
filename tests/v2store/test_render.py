"""The v2 answers' JSON written directly (node.event_json + errors.go_text) is byte for
byte what the dict path (render_event + go_json) writes, for any node contents."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from petcd.v2store.errors import go_json, go_text
from petcd.v2store.node import SECOND, Event, event_json, render_event

PREFIX = "/1"
_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)) | st.sampled_from(
    "<>&\\\"\b\f\n\u2028\u2029\udc80\udcff/_"), max_size=12)


@st.composite
def _ext(draw: Any) -> dict[str, Any]:
    e: dict[str, Any] = {}
    e["key"] = draw(st.sampled_from(["", "/1", "/1/"]) | st.just("/1/") | st.just("")) + \
        draw(_TEXT)
    if draw(st.booleans()):
        e["value"] = draw(_TEXT)
    if draw(st.booleans()):
        e["dir"] = draw(st.booleans())
    if draw(st.booleans()):
        e["expiration"] = draw(st.integers(0, 4_000_000_000 * SECOND))
        e["ttl"] = draw(st.integers(-5, 10**6))
    for name in ("modifiedIndex", "createdIndex"):
        if draw(st.booleans()):
            e[name] = draw(st.integers(0, 2**63))
    return e


@settings(max_examples=400, deadline=None)
@given(action=st.sampled_from(["get", "set", "create", "expire", "compareAndSwap"]),
       node=_ext(), prev=st.none() | _ext(), no_value=st.booleans())
def test_direct_json_matches_the_dict_path(action: str, node: dict[str, Any],
                                           prev: dict[str, Any] | None,
                                           no_value: bool) -> None:
    ev = Event(action, node, 7, prev, 9)
    text = event_json(ev, PREFIX, no_value=no_value)
    assert text is not None
    assert go_text(text) == go_json(render_event(ev, PREFIX, no_value=no_value))


def test_listings_take_the_dict_path() -> None:
    ev = Event("get", {"key": "/1/d", "dir": True, "nodes": [{"key": "/1/d/a"}]}, 3)
    assert event_json(ev, PREFIX) is None
    assert event_json(Event("get", {"key": "/1/d", "dir": True, "nodes": []}, 3),
                      PREFIX) is not None  # (an empty listing is left out, as by render)
