"""Registry credentials kept in Docker's ``config.json``, so ``docker login`` and
``dockyard login`` share them.

The file is ``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``; its
``auths`` object maps a registry key to ``{"auth": base64("user:password")}`` and, for
registries that issued one, ``"identitytoken"`` (an OAuth2 refresh token). Docker Hub's
key is historical: ``https://index.docker.io/v1/``. Every other key of the file
(``credsStore``, ``proxies``, ...) is kept as it is when we write.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dockyard.errors import InvalidArgument, SystemFailure
from dockyard.storage.durable import replace_file

DOCKER_HUB_KEY = "https://index.docker.io/v1/"
DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})


@dataclass(frozen=True)
class Credentials:
    """A user name and password for a registry, or the identity token a login returned."""

    username: str = ""
    password: str = ""
    identity_token: str | None = None

    def __repr__(self) -> str:
        # Never let a secret reach a log line or a traceback.
        return f"Credentials(username={self.username!r}, password=***)"


def config_path(path: str | os.PathLike[str] | None = None) -> Path:
    """The ``config.json`` to use: ``path``, else ``$DOCKER_CONFIG``'s, else ``~/.docker``'s."""
    if path is not None:
        return Path(path)
    directory = os.environ.get("DOCKER_CONFIG")
    if directory:
        return Path(directory) / "config.json"
    return Path.home() / ".docker" / "config.json"


def credentials_key(host: str) -> str:
    """The key of ``host`` in ``auths``: the host itself, or Docker Hub's historical URL."""
    return DOCKER_HUB_KEY if _hostname(host) in DOCKER_HUB_ALIASES else host


def _hostname(key: str) -> str:
    """``host[:port]`` of an ``auths`` key, which Docker also writes as a URL."""
    if "://" in key:
        return urlsplit(key).netloc
    return key.split("/", 1)[0]


def _read_config(path: Path) -> dict[str, Any]:
    """The parsed file, ``{}`` when it does not exist."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as error:
        raise SystemFailure(f"cannot read {path}: {error.strerror}") from error
    try:
        config = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as error:
        raise InvalidArgument(f"{path} is not valid JSON ({error}): fix or remove it") from error
    if not isinstance(config, dict) or not isinstance(config.get("auths", {}), dict):
        raise InvalidArgument(f"{path} is not a Docker config file: fix or remove it")
    return config


def _matching_keys(auths: dict[str, Any], host: str) -> list[str]:
    """Keys of ``auths`` naming ``host``: the exact key first, then URL spellings of it."""
    wanted = credentials_key(host)
    target = _hostname(wanted)
    keys = [wanted] if wanted in auths else []
    keys += [k for k in auths if k != wanted and _hostname(k) == target]
    return keys


def load_credentials(host: str, path: str | os.PathLike[str] | None = None) -> Credentials | None:
    """The credentials stored for ``host``, or ``None`` when there are none."""
    file = config_path(path)
    auths = _read_config(file).get("auths", {})
    for key in _matching_keys(auths, host):
        entry = auths[key]
        if not isinstance(entry, dict):
            continue
        username = entry.get("username", "")
        password = entry.get("password", "")
        if entry.get("auth"):
            try:
                decoded = base64.b64decode(entry["auth"], validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError, TypeError) as error:
                raise InvalidArgument(
                    f"{file}: the auth of {key!r} is not base64 of user:password;"
                    f" log in to {host} again"
                ) from error
            username, sep, password = decoded.partition(":")
            if not sep:
                raise InvalidArgument(
                    f"{file}: the auth of {key!r} has no ':'; log in to {host} again"
                )
        token = entry.get("identitytoken") or None
        if username or password or token:
            return Credentials(username, password, token)
    return None


def _write_config(file: Path, config: dict[str, Any]) -> None:
    """Replace ``file`` atomically with ``config``, readable by its owner only."""
    try:
        file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Written as mode 0600 from the start, so the secret is never world-readable.
        replace_file(file, (json.dumps(config, indent="\t") + "\n").encode())
    except OSError as error:
        raise SystemFailure(f"cannot write {file}: {error.strerror}") from error


def store_credentials(
    host: str, username: str, password: str, path: str | os.PathLike[str] | None = None
) -> Path:
    """Save ``username``/``password`` for ``host`` (replacing older entries); return the file."""
    if ":" in username:
        raise InvalidArgument(f"user name {username!r} must not contain ':'")
    file = config_path(path)
    config = _read_config(file)
    auths = config.setdefault("auths", {})
    for key in _matching_keys(auths, host):
        del auths[key]
    secret = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    auths[credentials_key(host)] = {"auth": secret}
    _write_config(file, config)
    return file


def erase_credentials(host: str, path: str | os.PathLike[str] | None = None) -> bool:
    """Forget the credentials of ``host``; ``False`` when none were stored."""
    file = config_path(path)
    config = _read_config(file)
    auths = config.get("auths", {})
    keys = _matching_keys(auths, host)
    if not keys:
        return False
    for key in keys:
        del auths[key]
    _write_config(file, config)
    return True
