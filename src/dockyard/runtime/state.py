"""What the runtime keeps on disk about a container, and its lifecycle.

Layout under the runtime root (``--root``, default ``/run/dockyard-runtime``)::

    ROOT/ID/state.json   the record below, replaced atomically (write, fsync, rename)
    ROOT/ID/exec.fifo    exists from create until start: the init blocks opening it

The status is never stored: it is read off the kernel each time, so that a runtime
killed at any point leaves nothing that lies. The record is written as soon as the ID
is claimed, marked ``creating``, so that what a killed ``create`` made (a cgroup, an
init) can always be found and removed by ``delete --force``.

    creating --create ok--> created --start--> running <--pause/resume--> paused
        |                      |                  |
        +----- any failure ----+---- init exits --+--> stopped --delete--> (gone)
"""

from __future__ import annotations

import contextlib
import enum
import json
import os
import re
import time

from dockyard.errors import Conflict, InvalidArgument, NotFound

STATE_VERSION = 1
_ID = re.compile(r"^[\w+\-.]+$", re.ASCII)


class Status(enum.StrEnum):
    """The OCI statuses of a container."""

    CREATING = "creating"
    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"


class ContainerRecord:
    """The durable record of one container (``state.json``).

    Read and written with the standard library's json: the commands that only read it
    (start, state, kill, delete) then need none of the OCI models' machinery.
    """

    __slots__ = ("annotations", "bundle", "cgroup_path", "config", "created", "creating",
                 "id", "owner", "pid", "pid_start", "rootfs", "version")

    def __init__(self, *, id: str, pid: int, pid_start: int, bundle: str, rootfs: str,
                 created: str, cgroup_path: str, config: bytes, creating: bool = False,
                 owner: str = "", annotations: dict[str, str] | None = None,
                 version: int = STATE_VERSION) -> None:
        self.version = version
        self.id = id
        # True until create finished: a record left so by a runtime killed half-way
        # tells `delete --force` which cgroup and which process to clean up.
        self.creating = creating
        self.pid = pid
        # The init's start time in clock ticks since boot (field 22 of /proc/PID/stat):
        # with the pid it names the process even after the pid is reused.
        self.pid_start = pid_start
        self.bundle = bundle
        self.rootfs = rootfs
        self.created = created
        self.cgroup_path = cgroup_path
        self.config = config  # the config.json the container was created from
        self.owner = owner
        self.annotations = annotations or {}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ContainerRecord) and self.to_dict() == other.to_dict()

    def to_dict(self) -> dict[str, object]:
        """The JSON form: every field, the config as text."""
        fields: dict[str, object] = {name: getattr(self, name) for name in self.__slots__}
        fields["config"] = self.config.decode()
        return fields

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> ContainerRecord:
        """Read the JSON form back; raises ValueError, KeyError or TypeError if damaged."""
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"unknown state version {data.get('version')!r}")
        config = data.pop("config")
        if not isinstance(config, str):
            raise TypeError("config is not text")
        return cls(config=config.encode(), **data)  # type: ignore[arg-type]


def check_id(container_id: str) -> None:
    """Refuse IDs that could escape the state root or confuse a shell."""
    if not container_id or len(container_id) > 1024 or not _ID.match(container_id) \
            or container_id.startswith("."):
        raise InvalidArgument(f"invalid container ID {container_id!r}: use letters, digits,"
                              " '_', '+', '-' and '.', not first")


def proc_start_time(pid: int) -> int | None:
    """The start time of ``pid``, or None when there is no such live process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # comm (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(b")") + 2:].split()
    if fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])


class StateDir:
    """The directory of one container under the runtime root."""

    # Plain strings and os.path, not pathlib: importing pathlib costs every runtime
    # command ~3 ms.
    def __init__(self, root: str | os.PathLike[str], container_id: str) -> None:
        check_id(container_id)
        self.id = container_id
        self.root = os.fspath(root)
        self.path = os.path.join(self.root, container_id)
        self.fifo = os.path.join(self.path, "exec.fifo")
        self.state_file = os.path.join(self.path, "state.json")

    def claim(self) -> None:
        """Create the directory; the atomic mkdir is what makes an ID unique."""
        os.makedirs(self.root, mode=0o711, exist_ok=True)
        try:
            os.mkdir(self.path, 0o711)
        except FileExistsError:
            raise Conflict(f"container with id {self.id!r} already exists") from None

    def exists(self) -> bool:
        return os.path.isdir(self.path)

    def write(self, record: ContainerRecord) -> None:
        """Replace the record atomically.

        No fsync: the record must survive the runtime being killed, which the page
        cache does, not the machine crashing, after which no container is left to
        describe (the root is on /run by default).
        """
        tmp = os.path.join(self.path, "state.json.tmp")
        with open(tmp, "w") as f:
            json.dump(record.to_dict(), f)
        os.rename(tmp, self.state_file)

    def read(self) -> ContainerRecord:
        try:
            with open(self.state_file, "rb") as f:
                data = f.read()
        except (FileNotFoundError, NotADirectoryError):
            if self.exists():
                # A create that was killed before it wrote its record: the caller can
                # still `delete --force` the directory.
                raise NotFound(f"container {self.id!r} was never fully created") from None
            raise NotFound(f"container {self.id!r} does not exist") from None
        try:
            return ContainerRecord.from_dict(json.loads(data))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise InvalidArgument(f"state of container {self.id!r} is corrupt: {e}") from None

    def remove(self) -> None:
        for name in ("exec.fifo", "state.json", "state.json.tmp"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.path, name))
        with contextlib.suppress(FileNotFoundError):
            os.rmdir(self.path)


def now_rfc3339() -> str:
    """The current time the way runc's state shows ``created``."""
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e9):09d}Z"
