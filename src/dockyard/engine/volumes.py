"""The volume service: Docker's volumes, recorded in the state database.

A volume is a row of the ``volumes`` table and a directory of its driver (only
``local`` exists: ``ROOT/volumes/NAME/_data``). The service answers the ``docker
volume`` commands in Docker's shapes and gives the container service what it needs to
mount one:

    path = volumes.mount_path(name, container_id)   # mounted if its options say so
    volumes.populate(name, rootfs, "/data")         # Docker's copy-up, on first use
    ...                                             # the container runs
    volumes.release(name, container_id)             # unmounted once nobody uses it

Who has a volume mounted is in ``volume_refs``, so that the last of several
containers unmounts it and a command run after a crash still knows. Which containers
*refer* to a volume (running or not) is the container service's: it passes
``in_use(name) -> [container IDs]``, and a volume in use is neither removed nor pruned.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import time
from collections.abc import Callable, Mapping
from typing import Any

from dockyard.engine.db import Database
from dockyard.engine.events import EventLog
from dockyard.errors import Conflict, InvalidArgument, NotFound
from dockyard.volumes import ANONYMOUS_LABEL, anonymous_name, check_name, copy_up
from dockyard.volumes.local import NAME as LOCAL
from dockyard.volumes.local import LocalDriver

_FILTERS = ("dangling", "name", "label", "driver")
_TRUE, _FALSE = ("true", "1"), ("false", "0")


class VolumeService:
    """The volumes of one root.

    ``in_use(name)`` returns the IDs of the containers that use the volume ``name``
    (the container service provides it); without it, only the volume's current mounts
    count as uses.
    """

    def __init__(self, root: str, *,
                 in_use: Callable[[str], list[str]] | None = None) -> None:
        self.root = os.path.abspath(root)
        self.db = Database(self.root)
        self.driver = LocalDriver(os.path.join(self.root, "volumes"))
        self.in_use = in_use or (lambda name: [])
        self.events = EventLog(self.root)

    # --- create and look up ----------------------------------------------------------------

    def create(self, name: str | None = None, driver: str = LOCAL,
               options: Mapping[str, str] | None = None,
               labels: Mapping[str, str] | None = None) -> dict[str, Any]:
        """Create a volume and return it as ``inspect`` does.

        Without a name the volume is anonymous: a 64-hex name and Docker's anonymous
        label. Creating a name that exists returns the existing volume, as Docker does.
        """
        if driver != LOCAL:
            raise NotFound(f'error looking up volume plugin {driver}: plugin "{driver}" '
                           "not found")
        labels = dict(labels or {})
        if name is None:
            name = anonymous_name()
            labels[ANONYMOUS_LABEL] = ""
        check_name(name)
        options = dict(options or {})
        with self.db.transaction() as conn:
            existing = conn.execute("SELECT * FROM volumes WHERE name = ?", (name,)).fetchone()
            if existing is not None:
                return _inspect(existing, self.driver)
            # The directory first: a crash before the commit leaves an empty directory
            # that the next create of this name adopts, never a row without one.
            self.driver.create(name, options)
            conn.execute("INSERT INTO volumes VALUES (?, ?, ?, ?, ?)",
                         (name, driver, json.dumps(options), json.dumps(labels),
                          time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())))
        self.events.record("volume", "create", name, {"driver": driver})
        return self.inspect(name)

    def _row(self, name: str) -> sqlite3.Row:
        rows = self.db.query("SELECT * FROM volumes WHERE name = ?", (name,))
        if not rows:
            raise NotFound(f"get {name}: no such volume")
        return rows[0]

    def inspect(self, name: str) -> dict[str, Any]:
        """``docker volume inspect``'s object for one volume."""
        return _inspect(self._row(name), self.driver)

    def users(self, name: str) -> list[str]:
        """Who uses the volume: the containers referring to it, and any mount of it."""
        refs = [row["ref"] for row in self.db.query(
            "SELECT ref FROM volume_refs WHERE volume = ? ORDER BY ref", (name,))]
        return list(dict.fromkeys([*self.in_use(name), *refs]))

    def ls(self, filters: Mapping[str, list[str]] | None = None) -> list[dict[str, Any]]:
        """The volumes ``filters`` select, as ``inspect`` shows them, by name.

        ``dangling=true|false`` (used by no container), ``name=`` (a regular expression
        searched in the name), ``driver=`` and ``label=KEY`` or ``label=KEY=VALUE``. A
        volume must match every label filter and one value of each other filter.
        """
        filters = filters or {}
        for key in filters:
            if key not in _FILTERS:
                raise InvalidArgument(f"invalid filter '{key}'")
        dangling = None
        for value in filters.get("dangling", []):
            if value.lower() not in (*_TRUE, *_FALSE):
                raise InvalidArgument(f"invalid filter 'dangling={value}'")
            dangling = value.lower() in _TRUE
        found = []
        for row in self.db.query("SELECT * FROM volumes ORDER BY name"):
            volume = _inspect(row, self.driver)
            if not _matches(volume, filters):
                continue
            if dangling is not None and (not self.users(volume["Name"])) != dangling:
                continue
            found.append(volume)
        return found

    # --- remove ----------------------------------------------------------------------------

    def remove(self, name: str, force: bool = False) -> None:
        """Remove a volume and its content; one in use is refused, even with ``force``.

        ``force`` (Docker's ``volume rm -f``) makes a missing volume no error.
        """
        try:
            self._row(name)
        except NotFound:
            if force:
                return
            raise
        with self.db.transaction() as conn:
            users = self.users(name)
            if users:
                raise Conflict(f"remove {name}: volume is in use - [{', '.join(users)}]")
            # The directory goes before the row: a crash in between leaves a volume that
            # is empty, not a directory that a new volume of the same name would adopt.
            self.driver.remove(name)
            conn.execute("DELETE FROM volumes WHERE name = ?", (name,))
        self.events.record("volume", "destroy", name, {"driver": LOCAL})
        # Outside the transaction: deleting a large volume must not hold up others.
        self.driver.sweep()

    def prune(self, all: bool = False,
              filters: Mapping[str, list[str]] | None = None) -> tuple[list[str], int]:
        """Remove the volumes no container uses: anonymous ones only unless ``all``.

        ``filters`` takes ``label=`` as ``ls`` does. Returns the names removed and the
        bytes their content took.
        """
        filters = dict(filters or {})
        for key in filters:
            if key != "label":
                raise InvalidArgument(f"invalid filter '{key}'")
        if not all:
            filters["label"] = [*filters.get("label", []), ANONYMOUS_LABEL]
        removed, reclaimed = [], 0
        for volume in self.ls({**filters, "dangling": ["true"]}):
            size = self.driver.size(volume["Name"])
            try:
                self.remove(volume["Name"])
            except Conflict:  # a container started using it meanwhile
                continue
            removed.append(volume["Name"])
            reclaimed += size
        return removed, reclaimed

    # --- use by containers -----------------------------------------------------------------

    def mount_path(self, name: str, ref: str) -> str:
        """The host directory to bind into a container, mounting the volume first when
        its options ask for a mount.

        ``ref`` names the user (the container ID); each ``mount_path`` is undone by a
        ``release`` with the same ``ref``, and asking twice with one ``ref`` is one use.
        """
        with self.db.transaction() as conn:
            # Mounting inside the write transaction: two commands mounting the same
            # volume take turns, so it is mounted once.
            row = self._row(name)
            path = self.driver.mount(name, json.loads(row["options"]))
            conn.execute("INSERT OR IGNORE INTO volume_refs VALUES (?, ?)", (name, ref))
        return path

    def release(self, name: str, ref: str) -> bool:
        """``ref`` no longer uses the volume; the last user's release unmounts it.
        Returns whether ``ref`` was using it.

        Releasing what was not mounted, or a volume removed since, is no error, so a
        cleanup after a crash can release everything it may have mounted.
        """
        with self.db.transaction() as conn:
            held = conn.execute("DELETE FROM volume_refs WHERE volume = ? AND ref = ?",
                                (name, ref)).rowcount > 0
            if conn.execute("SELECT 1 FROM volume_refs WHERE volume = ?",
                            (name,)).fetchone() is None:
                self.driver.unmount(name)
        return held

    def populate(self, name: str, rootfs: str, target: str) -> bool:
        """Docker's copy-up: copy the image's content at ``target`` (a path inside the
        mounted ``rootfs``) into the volume if the volume is empty.

        Call it after ``mount_path``: a tmpfs volume populated while nobody has it
        mounted would lose the copy when this releases it. Returns whether it copied.
        """
        ref = f"populate-{os.urandom(8).hex()}"
        try:
            return copy_up(rootfs, target, self.mount_path(name, ref))
        finally:
            self.release(name, ref)


def _inspect(row: sqlite3.Row, driver: LocalDriver) -> dict[str, Any]:
    return {"CreatedAt": row["created"], "Driver": row["driver"],
            "Labels": json.loads(row["labels"]), "Mountpoint": driver.path(row["name"]),
            "Name": row["name"], "Options": json.loads(row["options"]), "Scope": "local"}


def _matches(volume: Mapping[str, Any], filters: Mapping[str, list[str]]) -> bool:
    names = filters.get("name")
    if names and not any(_search(pattern, volume["Name"]) for pattern in names):
        return False
    drivers = filters.get("driver")
    if drivers and volume["Driver"] not in drivers:
        return False
    labels = volume["Labels"]
    for wanted in filters.get("label", []):
        key, sep, value = wanted.partition("=")
        if key not in labels or (sep and labels[key] != value):
            return False
    return True


def _search(pattern: str, name: str) -> bool:
    # Docker matches the name filter as a regular expression; one that does not compile
    # is taken literally rather than refused.
    try:
        return re.search(pattern, name) is not None
    except re.error:
        return pattern in name
