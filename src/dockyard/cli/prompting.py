"""Command-line input shared by the commands: ``--filter`` values and confirmations."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any, BinaryIO

from dockyard.errors import InvalidArgument


def parse_filters(values: list[str]) -> dict[str, list[str]]:
    """``--filter key=value`` flags, grouped by key as the engine takes them."""
    filters: dict[str, list[str]] = {}
    for value in values:
        key, sep, wanted = value.partition("=")
        if not sep:
            raise InvalidArgument(f"bad format of filter (expected name=value): {value}")
        filters.setdefault(key.strip().lower(), []).append(wanted)
    return filters


def registries() -> Any:
    """How registries are reached: ``$DOCKYARD_INSECURE_REGISTRIES`` lists the hosts
    spoken to over plain HTTP besides loopback ones."""
    from dockyard.engine.config import RegistryOptions

    insecure = frozenset(filter(None, os.environ.get("DOCKYARD_INSECURE_REGISTRIES",
                                                     "").split(",")))
    return RegistryOptions(insecure=insecure)


def confirm(warning: str) -> bool:
    """Docker's ``[y/N]`` question before a prune; anything but yes is no."""
    print(f"{warning}\nAre you sure you want to continue? [y/N] ", end="", flush=True)
    answer = sys.stdin.readline().strip().lower()
    return answer in ("y", "yes")


def parse_bool(text: str) -> bool:
    """A flag value like docker's booleans: ``true``/``false``/``1``/``0``."""
    if text.lower() not in ("true", "false", "1", "0"):
        raise argparse.ArgumentTypeError(f"invalid boolean {text!r}")
    return text.lower() in ("true", "1")


def write_archive(path: str | None, write: Callable[[BinaryIO], None]) -> None:
    """``save``/``export``: to ``-o FILE`` (complete or absent, never half written) or to
    a redirected stdout; a terminal is refused, as docker does."""
    if path:
        tmp = f"{path}.tmp-{os.getpid()}"
        try:
            with open(tmp, "wb") as f:
                write(f)
            os.rename(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return
    if sys.stdout.isatty():
        raise InvalidArgument("cowardly refusing to save to a terminal. Use the -o flag or "
                              "redirect")
    write(sys.stdout.buffer)
