"""--auth-token, --auth-token-ttl and --bcrypt-cost reach the member, are listed as used,
and a token option petcd cannot use fails the start with a message naming the problem."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from petcd.cli.config import ConfigError, load
from petcd.cli.server import help_text, options_from

from .clients import jwt_keys


def test_flags_are_used_and_reach_the_options(tmp_path: Path) -> None:
    text = help_text()
    for name in ("auth-token", "bcrypt-cost", "auth-token-ttl"):
        line = next(ln for ln in text.splitlines() if ln.startswith(f"  --{name} "))
        assert "[not yet used]" not in line
    opts = options_from(load(["--auth-token-ttl", "7", "--bcrypt-cost", "5"], {})[0])
    assert (opts.auth_token, opts.auth_token_ttl, opts.bcrypt_cost) == ("simple", 7.0, 5)
    priv, pub = jwt_keys(tmp_path)
    option = f"jwt,pub-key={pub},priv-key={priv},sign-method=RS256,ttl=10m"
    assert options_from(load(["--auth-token", option], {})[0]).auth_token == option


@pytest.mark.parametrize("option, words", [
    ("bogus", "unknown token type"),
    ("jwt,sign-method=RS256", "missing key data"),
    ("jwt,sign-method=XX999,priv-key=/nonexistent", "invalid auth signature method"),
    ("jwt,sign-method=RS256,priv-key=/nonexistent/key.pem", "/nonexistent/key.pem"),
    ("simple,ttl", "invalid auth options"),
])
def test_unusable_token_options_are_refused(option: str, words: str) -> None:
    with pytest.raises(ConfigError) as e:
        options_from(load(["--auth-token", option], {})[0])
    assert words in str(e.value)


def test_a_bad_token_option_fails_the_start(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "petcd", "--data-dir", str(tmp_path / "d"),
                        "--auth-token", "jwt,sign-method=RS256"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "--auth-token" in r.stderr and "missing key data" in r.stderr
