"""The pieces of registry authentication that need no network: challenges, scopes, tokens.

A registry that wants credentials answers 401 with ``WWW-Authenticate``. ``Basic`` means
send the user and password on every request; ``Bearer realm=...,service=...,scope=...``
means ask the token server at ``realm`` for a token granting ``scope`` (Distribution's
auth/token.md) and send that instead. Tokens are cached per set of scopes until they
expire, so a pull of many layers asks once.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from dockyard.errors import InvalidArgument

from .credentials import Credentials
from .transport import describe_body

# RFC 9110 token characters; auth-param values are a token or a quoted string.
_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_SCHEME_RE = re.compile(rf"[\s,]*({_TOKEN})(?=\s|$)")
_PARAM_RE = re.compile(rf'\s*({_TOKEN})\s*=\s*(?:"((?:[^"\\]|\\.)*)"|({_TOKEN}))\s*(?:,|$)')
_ESCAPE_RE = re.compile(r"\\(.)")

# Distribution's default when a token response carries no expires_in (auth/token.md).
DEFAULT_TOKEN_LIFETIME = 60.0


@dataclass(frozen=True)
class Challenge:
    """One challenge of a ``WWW-Authenticate`` header: scheme (lower case) and parameters."""

    scheme: str
    params: dict[str, str] = field(default_factory=dict)

    @property
    def scopes(self) -> tuple[str, ...]:
        """The scopes the registry asked for (space-separated in one ``scope`` parameter)."""
        return tuple(self.params.get("scope", "").split())


def parse_challenges(header: str) -> list[Challenge]:
    """All challenges of a ``WWW-Authenticate`` value, in order.

    Quoted values may hold commas and spaces (``scope="repository:a:pull,push"``), so the
    value is scanned rather than split; a challenge ends where a bare token starts the
    next one.
    """
    challenges: list[Challenge] = []
    pos = 0
    while True:
        scheme = _SCHEME_RE.match(header, pos)
        if scheme is None:
            return challenges
        pos = scheme.end()
        params: dict[str, str] = {}
        while (param := _PARAM_RE.match(header, pos)) is not None:
            name, quoted, bare = param.groups()
            params[name.lower()] = _ESCAPE_RE.sub(r"\1", quoted) if bare is None else bare
            pos = param.end()
        challenges.append(Challenge(scheme.group(1).lower(), params))


def choose_challenge(challenges: Iterable[Challenge]) -> Challenge | None:
    """The challenge to answer: Bearer when offered (tokens are scoped), else Basic."""
    by_scheme = {c.scheme: c for c in challenges}
    bearer = by_scheme.get("bearer")
    if bearer is not None and bearer.params.get("realm"):
        return bearer
    return by_scheme.get("basic")


def repository_scope(name: str, *actions: str) -> str:
    """A resource scope such as ``repository:library/busybox:pull,push``."""
    return f"repository:{name}:{','.join(actions)}"


def basic_authorization(credentials: Credentials) -> str:
    """The ``Authorization`` value of HTTP Basic for ``credentials``."""
    pair = f"{credentials.username}:{credentials.password}".encode()
    return "Basic " + base64.b64encode(pair).decode("ascii")


@dataclass(frozen=True)
class Token:
    """A bearer token and the monotonic time after which it must not be used."""

    value: str
    expires_at: float


def parse_token_response(body: bytes, peer: str) -> Token:
    """The token in the answer of ``peer``, a token server (``token`` or OAuth2's
    ``access_token``)."""
    try:
        answer = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        answer = None
    if not isinstance(answer, dict):
        raise InvalidArgument(f"{peer} answered with {describe_body(body)}, not a JSON token")
    value = answer.get("token") or answer.get("access_token")
    if not isinstance(value, str) or not value:
        raise InvalidArgument(f"{peer} answered without a token")
    lifetime = answer.get("expires_in")
    if not isinstance(lifetime, int | float) or lifetime <= 0:
        lifetime = DEFAULT_TOKEN_LIFETIME
    # Stop using a token a little before it expires: the clocks and the request's own
    # latency are not exact, and a 401 mid-push costs more than one token request.
    return Token(value, time.monotonic() + lifetime * 0.9)


class TokenCache:
    """Bearer tokens by set of scopes, shared by the threads of one client."""

    def __init__(self) -> None:
        self._tokens: dict[frozenset[str], Token] = {}
        self._lock = threading.Lock()

    def get(self, scopes: Iterable[str]) -> str | None:
        """A token for exactly ``scopes`` that has not expired, if one is cached."""
        key = frozenset(scopes)
        with self._lock:
            token = self._tokens.get(key)
            if token is None:
                return None
            if token.expires_at <= time.monotonic():
                del self._tokens[key]
                return None
            return token.value

    def put(self, scopes: Iterable[str], token: Token) -> None:
        """Remember ``token`` for ``scopes``."""
        with self._lock:
            self._tokens[frozenset(scopes)] = token

    def discard(self, scopes: Iterable[str]) -> None:
        """Forget the token of ``scopes`` (the registry refused it)."""
        with self._lock:
            self._tokens.pop(frozenset(scopes), None)
