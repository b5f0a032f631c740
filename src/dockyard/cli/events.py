"""``dockyard events`` (and ``system events``): the engine's events, as ``docker events``
prints them.

Without ``--since`` and ``--until`` it prints the events made from now on, until
interrupted; ``--since`` adds those recorded before; ``--until`` ends the output once
that time has passed. The default line is docker's::

    2024-05-01T10:00:00.123456789Z container start ID (image=busybox, name=x)

``--format`` takes a Go template over docker's ``events.Message`` (``{{.Type}}``,
``{{.Action}}``, ``{{.Actor.ID}}``, ``{{json .}}``...) or ``json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

# Go's names of events.Message's members whose JSON keys differ.
_GO_NAMES = {"Status": "status", "ID": "id", "From": "from", "Scope": "scope",
             "Time": "time", "TimeNano": "timeNano"}


class _Message(dict[str, Any]):
    """A message that templates may also address by its Go member names
    (``{{.Status}}``, ``{{.TimeNano}}``) while ``{{json .}}`` shows its JSON keys."""

    go_struct = "*events.Message"

    def __contains__(self, key: object) -> bool:
        return super().__contains__(_GO_NAMES.get(str(key), key))

    def __getitem__(self, key: str) -> Any:
        return super().__getitem__(_GO_NAMES.get(key, key))


def timestamp(nanoseconds: int) -> str:
    """Go's RFC3339NanoFixed in local time, as docker prints an event's time."""
    when = datetime.datetime.fromtimestamp(nanoseconds // 1_000_000_000).astimezone()
    zone = when.strftime("%z")
    zone = "Z" if zone == "+0000" else f"{zone[:3]}:{zone[3:]}"
    return f"{when:%Y-%m-%dT%H:%M:%S}.{nanoseconds % 1_000_000_000:09d}{zone}"


def line(message: Mapping[str, Any]) -> str:
    """docker's human line for one event: time, type, action, actor, sorted attributes."""
    nanoseconds = int(message.get("timeNano") or 0) or int(message.get("time") or 0) * 10**9
    actor = message.get("Actor") or {}
    text = (f"{timestamp(nanoseconds)} {message.get('Type', '')} {message.get('Action', '')} "
            f"{actor.get('ID', '')}")
    attributes = actor.get("Attributes") or {}
    if attributes:
        text += " (" + ", ".join(f"{k}={attributes[k]}" for k in sorted(attributes)) + ")"
    return text


def events(options: argparse.Namespace, args: argparse.Namespace) -> int:
    """``docker events``."""
    from dockyard.cli.formatting import check, render
    from dockyard.cli.prompting import parse_filters
    from dockyard.engine.events import EventLog, parse_time

    now = time.time_ns()
    since = parse_time(args.since, now) if args.since is not None else None
    until = parse_time(args.until, now) if args.until is not None else None
    if since is None and until is None:
        since = now  # only what happens from now on, as docker
    show: Callable[[Mapping[str, Any]], str]
    if args.format == "json":
        def show(message: Mapping[str, Any]) -> str:
            return json.dumps(message, separators=(",", ":"))
    elif args.format:
        check(args.format)

        def show(message: Mapping[str, Any]) -> str:
            return render(args.format, _Message(message))
    else:
        show = line
    log = EventLog(options.root)
    for message in log.messages(since=since, until=until, filters=parse_filters(args.filter),
                                follow=until is None or until > now):
        sys.stdout.write(show(message) + "\n")
        sys.stdout.flush()
    return 0


def _events_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--since", help="show events created since a timestamp or duration")
    p.add_argument("--until", help="stream events until this timestamp or duration")
    p.add_argument("-f", "--filter", action="append", default=[],
                   help="filter output based on conditions provided")
    p.add_argument("--format", help="format the output using a Go template, or json")


ARGUMENTS: dict[str, Callable[[argparse.ArgumentParser], None]] = {"events": _events_args}
