"""Auth tokens (--auth-token): `simple` and `jwt,pub-key=...,priv-key=...,sign-method=...,ttl=...`.

- simple: 16 random letters chosen by the member that checked the password, then
  ".<index>" of the Authenticate log entry. Every member applies that entry and so
  knows the token (as in etcd 3.4: a simple token works on any member; a member that
  has not applied the entry yet waits for it). Each member keeps its own expiry:
  --auth-token-ttl seconds after the last use *on that member*. Deleting a user,
  changing its password or disabling auth drops its tokens. Tokens live in memory
  only: a restarted member no longer knows tokens issued before.
- jwt: signed with PyJWT, claims {username, revision, exp}; any member with the key
  verifies it. A token whose revision is older than the auth store's is refused with
  "revision of auth store is old" (clients then log in again).
"""

from __future__ import annotations

import re
import secrets
import string
import threading
import time
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization

DEFAULT_SIMPLE_TTL = 300.0
_LETTERS = string.ascii_letters


class TokenOptionError(ValueError):
    """--auth-token cannot be used (message says why)."""


@dataclass(frozen=True, slots=True)
class TokenInfo:
    user: str
    revision: int  # 0: use the store's current revision (simple tokens)
    index: int = 0  # the log index a member must have applied to know the token


class SimpleTokens:
    kind = "simple"

    def __init__(self, ttl: float = DEFAULT_SIMPLE_TTL) -> None:
        self.ttl = ttl if ttl > 0 else DEFAULT_SIMPLE_TTL
        self._lock = threading.Lock()
        self._tokens: dict[str, list[Any]] = {}  # token -> [user, expiry]
        self._next_sweep = 0.0

    @staticmethod
    def new_prefix() -> str:
        return "".join(secrets.choice(_LETTERS) for _ in range(16))

    def assign(self, token: str, user: str) -> None:
        """Apply thread: the Authenticate entry carrying this token was applied."""
        now = time.monotonic()
        with self._lock:
            self._tokens[token] = [user, now + self.ttl]
            if now >= self._next_sweep:  # expired tokens go at most one TTL late
                self._next_sweep = now + 1.0
                # (list() copies in one step: lookups on the loop thread may pop meanwhile)
                for t, v in list(self._tokens.items()):
                    if v[1] < now:
                        self._tokens.pop(t, None)

    def parse(self, token: str) -> TokenInfo | None:
        """The token's shape: None if it can never be valid."""
        _prefix, dot, index = token.partition(".")
        if not dot or not index.isdigit() or len(index) > 20:
            return None
        return TokenInfo("", 0, int(index))

    def lookup(self, token: str) -> str | None:
        """The user of a live token, and the token kept alive; None if unknown/expired."""
        # Lock-free (the hot path with auth on): single dict operations are atomic, and
        # a lookup racing an invalidation is caught by the auth revision check after it.
        entry = self._tokens.get(token)
        if entry is None:
            return None
        now = time.monotonic()
        if entry[1] < now:
            self._tokens.pop(token, None)
            return None
        entry[1] = now + self.ttl
        user: str = entry[0]
        return user

    def invalidate(self, user: str | None) -> None:
        with self._lock:
            if user is None:
                self._tokens.clear()
            else:
                for t, v in list(self._tokens.items()):
                    if v[0] == user:
                        self._tokens.pop(t, None)

    def __len__(self) -> int:
        return len(self._tokens)


_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
               "ES256", "ES384", "ES512", "HS256", "HS384", "HS512")


_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def _go_duration(text: str) -> float:
    """Go's time.ParseDuration (positive durations), in seconds."""
    pos, total = 0, 0.0
    while pos < len(text):
        m = _DURATION.match(text, pos)
        if m is None:
            raise ValueError(text)
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if total <= 0:
        raise ValueError(text)
    return total


def _spki(key: Any) -> bytes:
    out: bytes = key.public_bytes(serialization.Encoding.DER,
                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    return out


class JwtTokens:
    kind = "jwt"

    def __init__(self, sign_method: str, *, private_key: bytes = b"", public_key: bytes = b"",
                 ttl: float = 300.0) -> None:
        if sign_method not in _ALGORITHMS:
            raise TokenOptionError(f"auth: invalid auth signature method {sign_method!r}")
        self.algorithm = sign_method
        self.ttl = ttl
        self._sign_key: Any = None
        self._verify_key: Any = None
        if sign_method.startswith("HS"):
            if not private_key:
                raise TokenOptionError("auth: missing key data (priv-key)")
            self._sign_key = self._verify_key = private_key
            return
        try:
            if private_key:
                self._sign_key = serialization.load_pem_private_key(private_key, None)
                self._verify_key = self._sign_key.public_key()
            if public_key:
                pub = serialization.load_pem_public_key(public_key)
                if private_key and _spki(pub) != _spki(self._verify_key):
                    raise TokenOptionError("auth: public and private keys don't match")
                self._verify_key = pub
        except (ValueError, TypeError) as e:
            raise TokenOptionError(f"auth: cannot load the JWT key: {e}") from None
        if not private_key and not public_key:
            raise TokenOptionError("auth: missing key data (pub-key or priv-key)")

    @property
    def can_sign(self) -> bool:
        return self._sign_key is not None

    def sign(self, user: str, revision: int) -> str:
        claims = {"username": user, "revision": revision, "exp": int(time.time() + self.ttl)}
        return jwt.encode(claims, self._sign_key, algorithm=self.algorithm)

    def parse(self, token: str) -> TokenInfo | None:
        try:
            claims = jwt.decode(token, self._verify_key, algorithms=[self.algorithm],
                                options={"require": ["exp"]})
        except jwt.PyJWTError:
            return None
        user, rev = claims.get("username"), claims.get("revision")
        if not isinstance(user, str) or not isinstance(rev, (int, float)) or rev < 0:
            return None
        return TokenInfo(user, int(rev))


TokenProvider = SimpleTokens | JwtTokens


def from_option(option: str, simple_ttl: float) -> TokenProvider:
    """--auth-token's value, as etcd parses it: a type, then name=value options."""
    parts = option.split(",")
    kind, opts = parts[0], {}
    for part in parts[1:]:
        name, eq, value = part.partition("=")
        if not eq or "=" in value or name in opts:
            raise TokenOptionError(f"auth: invalid auth options ({part!r})")
        opts[name] = value
    if kind == "simple":
        return SimpleTokens(simple_ttl)
    if kind != "jwt":
        raise TokenOptionError(f"auth: invalid auth options (unknown token type {kind!r})")

    def read(name: str) -> bytes:
        path = opts.get(name, "")
        if not path:
            return b""
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError as e:
            raise TokenOptionError(f"auth: cannot read {name} {path}: {e.strerror}") from None

    if opts.get("sign-method", "") not in _ALGORITHMS:  # etcd checks it before the keys
        raise TokenOptionError(
            f"auth: invalid auth signature method {opts.get('sign-method', '')!r}")
    ttl = 300.0
    if opts.get("ttl"):
        try:
            ttl = _go_duration(opts["ttl"])
        except ValueError:
            raise TokenOptionError(f"auth: invalid JWT ttl {opts['ttl']!r}") from None
    return JwtTokens(opts.get("sign-method", ""), private_key=read("priv-key"),
                     public_key=read("pub-key"), ttl=ttl)
