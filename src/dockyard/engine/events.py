"""Docker's events: what the engine's services did, recorded as they do it, and read
back (filtered, bounded in time, followed) for ``dockyard events``.

The services record through one ``EventLog`` of their root::

    events = EventLog(root)
    events.container("start", row)                  # image, name and labels added
    events.record("volume", "create", name, {"driver": "local"})

    for message in events.messages(since=t0, until=t1, filters={"type": ["container"]}):
        ...                                         # Docker's events.Message, as a dict

The file and its format are ``dockyard.runtime.eventlog``'s (the monitor writes the
``die``, ``oom`` and ``health_status`` events there itself). Reading takes the rotated
file (``events.log.1``) and then the current one; following keeps the current file
open and, when a writer rotates it, reads what is left of it before going on with the
new one, so no event is lost or read twice across a rotation.

Filters are Docker's (moby ``daemon/events/filter.go``): values of one key are
alternatives, keys must all hold; ``container``, ``volume`` and ``network`` match the
actor's ID or name or a prefix of either, ``image`` the image's ID or reference (with
or without its tag), ``event`` the action (``exec_start`` also matches
``exec_start: sh``), ``type`` the type and ``label`` the actor's attributes.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, BinaryIO

from dockyard.errors import InvalidArgument
from dockyard.runtime import eventlog

__all__ = ["FILTERS", "EventLog", "container_attributes", "log_path", "parse_time"]

#: The filters ``messages`` takes, as Docker's ``/events`` does.
FILTERS = ("container", "image", "event", "type", "label", "volume", "network", "daemon",
           "scope", "plugin", "node", "service", "secret", "config")
_TYPES = ("container", "image", "volume", "network", "daemon", "plugin", "node", "service",
          "secret", "config", "builder")
# Docker matches these actions on a prefix: their action carries the command or status.
_FUZZY_EVENTS = ("exec_create", "exec_start", "health_status")
_POLL = 0.05  # seconds between two looks at a followed log
_UNIX = re.compile(r"^(\d+)(?:\.(\d{1,9}))?$")
_DATE = re.compile(r"^(\d{4})-(\d\d)-(\d\d)(?:T(\d\d)(?::(\d\d)(?::(\d\d)(?:\.(\d{1,9}))?)?)?)?"
                   r"([zZ]|[+-]\d\d:\d\d)?$")


def log_path(root: str) -> str:
    """The event log of the engine whose state root is ``root``."""
    return os.path.join(root, "events.log")


def parse_time(text: str, now_ns: int | None = None) -> int:
    """A ``--since``/``--until`` value as unix nanoseconds, with Docker's formats
    (``GetTimestamp``): a duration before now (``10m``, ``1h30m``; whole seconds, as
    Docker truncates it), unix seconds (``1700000000.5``), or an RFC 3339 date or time,
    complete or cut after the day, hour or minute, in local time when it names no zone.
    """
    from dockyard.engine.options import parse_duration

    value = text.strip()
    now = time.time_ns() if now_ns is None else now_ns
    if value != "0":
        with contextlib.suppress(InvalidArgument):
            return (now - parse_duration(value)) // 1_000_000_000 * 1_000_000_000
    unix = _UNIX.match(value)
    if unix:
        return int(unix[1]) * 1_000_000_000 + int((unix[2] or "0").ljust(9, "0"))
    match = _DATE.match(value)
    if match is None:
        raise InvalidArgument(f'failed to parse value as time or duration: "{text}"')
    year, month, day, hour, minute, second = (int(part or 0) for part in match.groups()[:6])
    zone = match[8]
    try:
        when = datetime.datetime(year, month, day, hour, minute, second)
        if zone is None:
            when = when.astimezone()  # a naive time is the local one
        else:
            offset = 0 if zone in "zZ" else (int(zone[1:3]) * 60 + int(zone[4:])) * \
                (-1 if zone[0] == "-" else 1)
            when = when.replace(tzinfo=datetime.timezone(datetime.timedelta(minutes=offset)))
    except ValueError as e:
        raise InvalidArgument(f'cannot parse "{text}" as a time: {e}') from None
    return int(when.timestamp()) * 1_000_000_000 + int((match[7] or "0").ljust(9, "0"))


def container_attributes(row: Mapping[str, Any]) -> dict[str, str]:
    """What Docker gives every event of a container: its labels, its image and its name.
    ``row`` is the container's database row (``name``, ``image``, and ``config``: its
    stored config, JSON or dict)."""
    config = row["config"]
    if isinstance(config, (str, bytes)):
        config = json.loads(config)
    return {**(config.get("Labels") or {}), "image": row["image"], "name": row["name"]}


class EventLog:
    """The event log of one state root: recording, and reading it back."""

    def __init__(self, root: str) -> None:
        self.path = log_path(os.path.abspath(root))

    def record(self, type_: str, action: str, actor_id: str,
               attributes: Mapping[str, str] | None = None) -> None:
        """Append one event (an I/O failure loses the event, never the operation)."""
        eventlog.record(self.path, type_, action, actor_id, attributes)

    def container(self, action: str, row: Mapping[str, Any], **attributes: str) -> None:
        """A container's event with ``container_attributes(row)`` and ``attributes``."""
        self.record("container", action, row["id"], {**container_attributes(row),
                                                     **attributes})

    def image(self, action: str, actor_id: str, name: str) -> None:
        """An image's event: Docker's actor is the reference for ``pull`` and ``push``,
        the image ID otherwise, and ``name`` the reference the action was about."""
        self.record("image", action, actor_id, {"name": name})

    def messages(self, *, since: int | None = None, until: int | None = None,
                 filters: Mapping[str, Sequence[str]] | None = None,
                 follow: bool = False) -> Iterator[dict[str, Any]]:
        """The events between ``since`` and ``until`` (unix nanoseconds, both included)
        that ``filters`` select, oldest first.

        Without ``follow`` only what the log holds now; with it, new events too as they
        are written, until ``until`` has passed (forever when it is None).
        """
        wanted = _Filter(filters or {})

        def selected(batch: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
            for message in batch:
                stamp = int(message.get("timeNano") or 0)
                if (since is None or stamp >= since) and (until is None or stamp <= until) \
                        and wanted.includes(message):
                    yield message

        with _Tail(self.path) as tail:
            yield from selected(tail.backlog())
            while follow and (until is None or time.time_ns() <= until):
                time.sleep(_POLL)
                yield from selected(tail.more())


class _Filter:
    """Docker's event filters (moby ``daemon/events/filter.go``)."""

    def __init__(self, filters: Mapping[str, Sequence[str]]) -> None:
        for key in filters:
            if key not in FILTERS:
                raise InvalidArgument(f"invalid filter '{key}'")
        for kind in filters.get("type", ()):
            if kind not in _TYPES:
                raise InvalidArgument(f"invalid filter 'type={kind}': unknown event type")
        self.filters = {key: list(values) for key, values in filters.items() if values}

    def _exact(self, key: str, *values: str) -> bool:
        wanted = self.filters.get(key)
        return wanted is None or any(value in wanted for value in values)

    def _fuzzy(self, key: str, *values: str) -> bool:
        wanted = self.filters.get(key)
        return wanted is None or any(value and value.startswith(w)
                                     for value in values for w in wanted)

    def includes(self, message: Mapping[str, Any]) -> bool:
        """Whether ``message`` passes every filter."""
        kind = str(message.get("Type", ""))
        action = str(message.get("Action", ""))
        actor = message.get("Actor") or {}
        actor_id = str(actor.get("ID", ""))
        attributes: Mapping[str, str] = actor.get("Attributes") or {}
        name = attributes.get("name", "")
        if any(w in _FUZZY_EVENTS for w in self.filters.get("event", ())):
            event_ok = self._fuzzy("event", action)
        else:
            event_ok = self._exact("event", action)
        image = attributes.get("name" if kind == "image" else "image", "")
        return (event_ok and self._exact("type", kind)
                and self._exact("scope", str(message.get("scope", "")))
                and all(self._fuzzy(key, actor_id, name) if kind == key
                        else key not in self.filters
                        for key in ("container", "volume", "network", "plugin", "daemon",
                                    "node", "service", "secret", "config"))
                and self._exact("image", actor_id, image, _untagged(actor_id),
                                _untagged(image))
                and all(_label_holds(attributes, item) for item in self.filters.get("label", ())))


def _untagged(reference: str) -> str:
    """``busybox:latest`` without its tag (a registry's port is no tag)."""
    head, sep, tag = reference.rpartition(":")
    return head if sep and "/" not in tag else reference


def _label_holds(attributes: Mapping[str, str], item: str) -> bool:
    key, sep, value = item.partition("=")
    return key in attributes and (not sep or attributes[key] == value)


class _Tail:
    """The log's lines, the rotated file's first, then those written since."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.file: BinaryIO | None = None
        self.partial = b""

    def __enter__(self) -> _Tail:
        return self

    def __exit__(self, *_: object) -> None:
        if self.file is not None:
            self.file.close()

    def backlog(self) -> Iterator[dict[str, Any]]:
        """What the two files hold now, oldest first; the current one stays open."""
        while True:
            current = _open(self.path)
            rotated = _open(self.path + ".1")
            # A rotation between the two opens makes both the same file: once more.
            if current is None or rotated is None or \
                    os.fstat(current.fileno()).st_ino != os.fstat(rotated.fileno()).st_ino:
                break
            current.close()
            rotated.close()
        if rotated is not None:
            with rotated:
                yield from _parse(rotated.read())
        self.file = current
        yield from self.more()

    def more(self) -> Iterator[dict[str, Any]]:
        """The whole lines written since the last call, across a rotation."""
        while True:
            if self.file is None:
                self.file = _open(self.path)
                if self.file is None:
                    return
            # Whether it was rotated is asked before reading: the writers that append
            # to the old file opened it before the rename, so what it holds after the
            # rename was seen is (but for a write racing by microseconds) all it gets.
            try:
                replaced = os.stat(self.path).st_ino != os.fstat(self.file.fileno()).st_ino
            except FileNotFoundError:
                replaced = False
            data = self.partial + self.file.read()
            cut = data.rfind(b"\n") + 1
            self.partial = data[cut:]
            yield from _parse(data[:cut])
            if not replaced:
                return
            self.file.close()
            self.file = None
            self.partial = b""


def _open(path: str) -> BinaryIO | None:
    try:
        return open(path, "rb")  # kept open by the caller while following
    except FileNotFoundError:
        return None


def _parse(data: bytes) -> Iterator[dict[str, Any]]:
    for line in data.splitlines():
        with contextlib.suppress(ValueError):
            message = json.loads(line)
            if isinstance(message, dict):
                yield message
