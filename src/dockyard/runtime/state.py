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
import os
import re
import time
from pathlib import Path

import msgspec

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


class ContainerRecord(msgspec.Struct, kw_only=True):
    """The durable record of one container (``state.json``)."""

    version: int = STATE_VERSION
    id: str
    # True until create finished: a record left so by a runtime killed half-way tells
    # `delete --force` which cgroup and which process to clean up.
    creating: bool = False
    pid: int
    # The init's start time in clock ticks since boot (field 22 of /proc/PID/stat):
    # with the pid it names the process even after the pid is reused.
    pid_start: int
    bundle: str
    rootfs: str
    created: str
    cgroup_path: str
    config: bytes  # the config.json the container was created from, as given
    owner: str = ""
    annotations: dict[str, str] = {}


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(ContainerRecord)


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

    def __init__(self, root: Path, container_id: str) -> None:
        check_id(container_id)
        self.id = container_id
        self.path = root / container_id

    @property
    def fifo(self) -> Path:
        return self.path / "exec.fifo"

    @property
    def state_file(self) -> Path:
        return self.path / "state.json"

    def claim(self) -> None:
        """Create the directory; the atomic mkdir is what makes an ID unique."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o711)
        try:
            self.path.mkdir(mode=0o711)
        except FileExistsError:
            raise Conflict(f"container with id {self.id!r} already exists") from None

    def exists(self) -> bool:
        return self.path.is_dir()

    def write(self, record: ContainerRecord) -> None:
        """Replace the record atomically.

        No fsync: the record must survive the runtime being killed, which the page
        cache does, not the machine crashing, after which no container is left to
        describe (the root is on /run by default).
        """
        tmp = self.path / "state.json.tmp"
        with open(tmp, "wb") as f:
            f.write(_encoder.encode(record))
        os.rename(tmp, self.state_file)

    def read(self) -> ContainerRecord:
        try:
            data = self.state_file.read_bytes()
        except FileNotFoundError:
            if self.exists():
                # A create that was killed before it wrote its record: the caller can
                # still `delete --force` the directory.
                raise NotFound(f"container {self.id!r} was never fully created") from None
            raise NotFound(f"container {self.id!r} does not exist") from None
        try:
            return _decoder.decode(data)
        except msgspec.DecodeError as e:
            raise InvalidArgument(f"state of container {self.id!r} is corrupt: {e}") from None

    def remove(self) -> None:
        for name in ("exec.fifo", "state.json", "state.json.tmp", "console.sock"):
            with contextlib.suppress(FileNotFoundError):
                (self.path / name).unlink()
        with contextlib.suppress(FileNotFoundError):
            self.path.rmdir()


def now_rfc3339() -> str:
    """The current time the way runc's state shows ``created``."""
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e9):09d}Z"
