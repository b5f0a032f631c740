"""The event log: what happened to containers, images, volumes and networks, as Docker's
event messages, one JSON object per line in one file under the engine's root.

No daemon keeps events in memory, so every process that makes an event (a CLI
command, a container's monitor when the container dies or its health changes) appends
it to the file itself, and ``dockyard events`` reads and follows the file. A line is
Docker's ``events.Message``::

    {"status":"die","id":"ID","from":"busybox","Type":"container","Action":"die",
     "Actor":{"ID":"ID","Attributes":{"exitCode":"0","image":"busybox","name":"x"}},
     "scope":"local","time":1700000000,"timeNano":1700000000123456789}

One ``write`` of one line on a descriptor opened with ``O_APPEND`` never interleaves
with another writer's line (a regular file on a local filesystem), so writers need no
lock. The file is bounded: a writer that finds it past ``MAX_SIZE`` renames it to
``PATH.1`` (the previous ``PATH.1`` is dropped) before appending; readers read
``PATH.1`` then ``PATH``.

This module is in ``dockyard.runtime`` because the monitor writes events too and must
not import the engine.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Mapping

__all__ = ["MAX_SIZE", "record"]

#: The size past which the log is rotated (two files of it are kept).
MAX_SIZE = 4 << 20


def record(path: str, type_: str, action: str, actor_id: str,
           attributes: Mapping[str, str] | None = None) -> None:
    """Append one event to the log at ``path``; never raises for an I/O failure (an
    event lost is better than an operation failed for it)."""
    now = time.time_ns()
    message: dict[str, object] = {}
    if type_ == "container":
        # The pre-1.22 members that the docker CLI still reads for containers.
        message.update(status=action, id=actor_id,
                       **({"from": attributes["image"]}
                          if attributes and "image" in attributes else {}))
    message.update(Type=type_, Action=action,
                   Actor={"ID": actor_id, "Attributes": dict(attributes or {})},
                   scope="local", time=now // 1_000_000_000, timeNano=now)
    line = (json.dumps(message, separators=(",", ":")) + "\n").encode()
    with contextlib.suppress(OSError):
        with contextlib.suppress(FileNotFoundError):
            if os.stat(path).st_size >= MAX_SIZE:
                os.replace(path, path + ".1")
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
