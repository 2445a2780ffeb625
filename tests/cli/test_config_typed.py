"""The one typed way to read a flag (Config.text/number/seconds/on/items): every flag of
the table reads back as its kind, from its default and from ETCD_* and command-line text;
asking for another kind fails loudly."""

from __future__ import annotations

import pytest

from petcd.cli import config
from petcd.cli.flags import BY_NAME, Kind

GETTER = {Kind.STRING: "text", Kind.CHOICE: "text", Kind.INT: "number", Kind.UINT: "number",
          Kind.DURATION: "seconds", Kind.BOOL: "on", Kind.URLS: "items", Kind.STRINGS: "items"}
TYPE = {"text": str, "number": int, "seconds": float, "on": bool, "items": list}


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_every_default_reads_as_its_kind(name: str) -> None:
    cfg = config.Config()
    getter = GETTER[BY_NAME[name].kind]
    value = getattr(cfg, getter)(name)
    assert type(value) is TYPE[getter]
    wrong = "on" if getter != "on" else "text"
    with pytest.raises(TypeError, match=f"--{name} is a"):
        getattr(cfg, wrong)(name)


def test_command_line_and_env_values_are_typed() -> None:
    cfg, _, _ = config.load(["--heartbeat-interval", "50", "--election-timeout", "500",
                       "--experimental-corrupt-check-time", "90s", "--pre-vote=false",
                       "--cors", "http://a.example:1,*"],
                            {"ETCD_SNAPSHOT_COUNT": "1234"})
    assert cfg.number("snapshot-count") == 1234
    assert cfg.number("heartbeat-interval") == 50
    assert cfg.seconds("experimental-corrupt-check-time") == 90.0
    assert cfg.on("pre-vote") is False
    assert cfg.items("cors") == ["http://a.example:1", "*"]
