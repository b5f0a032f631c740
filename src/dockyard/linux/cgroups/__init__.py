"""cgroup v1 and v2 drivers behind one interface.

The drivers know hierarchies and files, not OCI: ``dockyard.runtime.resources`` turns a
container's ``linux.resources`` into the file names and values written here.

    open_cgroup(path)        pick the driver for this host (``detect_mode``)
    ├── V1Cgroup (v1.py)     one directory per mounted v1 hierarchy, plus the cgroup2
    │                        mount at /sys/fs/cgroup/unified on a hybrid host
    └── V2Cgroup (v2.py)     one directory in a cgroup2 mount

``path`` is an OCI ``cgroupsPath``: absolute paths are taken from the root of each
hierarchy, relative ones from the cgroup the calling process is in (read per hierarchy
from ``/proc/self/cgroup``), as runc does.

Failures become ``dockyard.errors``: a value the kernel rejects (EINVAL, ERANGE...) or a
file the cgroup does not have is ``InvalidArgument``; anything else is ``SystemFailure``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from typing import Literal, NamedTuple

from dockyard.errors import InvalidArgument, SystemFailure

Mode = Literal["unified", "hybrid", "legacy"]
Files = Mapping[str, str] | Iterable[tuple[str, str]]

# How long freeze() waits for every task to stop before it gives up and thaws again.
FREEZE_TIMEOUT = 5.0

# How long destroy() keeps retrying rmdir on EBUSY: a cgroup stays busy until its last
# task has been reaped, which happens asynchronously after SIGKILL.
_RMDIR_GRACE = 2.0

# The errnos with which cgroupfs rejects a value (rather than failing the operation):
# a malformed or out-of-range number, or an option the controller does not support.
_BAD_VALUE = frozenset({errno.EINVAL, errno.ERANGE, errno.EOVERFLOW, errno.ENOENT})


class Cgroup(ABC):
    """One cgroup, present in every hierarchy the driver manages."""

    version: str
    """``"v1"`` or ``"v2"``: tells callers which file names ``set`` expects."""

    @abstractmethod
    def paths(self) -> dict[str, str]:
        """Map each controller (or hierarchy name) to this cgroup's absolute directory."""

    @abstractmethod
    def create(self) -> None:
        """Create the cgroup's directory (and missing parents) in every hierarchy."""

    @abstractmethod
    def add(self, pid: int) -> None:
        """Move process ``pid`` (all its threads) into this cgroup."""

    @abstractmethod
    def freeze(self) -> None:
        """Freeze every process of the cgroup, returning once they are all frozen."""

    @abstractmethod
    def thaw(self) -> None:
        """Let the processes of a frozen cgroup run again."""

    @abstractmethod
    def is_frozen(self) -> bool:
        """Tell whether the cgroup is (completely) frozen."""

    @abstractmethod
    def oom_kill_count(self) -> int:
        """Return how many processes the OOM killer has killed in this cgroup (0 if unknown)."""

    @abstractmethod
    def _dir_for(self, name: str) -> str:
        """Return the directory holding file ``name``; InvalidArgument if unavailable."""

    @abstractmethod
    def _procs_dir(self) -> str:
        """Return the directory whose ``cgroup.procs`` files list the cgroup's processes."""

    def exists(self) -> bool:
        """Tell whether the cgroup's directory exists in any hierarchy."""
        return any(os.path.isdir(d) for d in self.paths().values())

    def read(self, name: str) -> str:
        """Return the content of control file ``name`` (e.g. ``memory.max``), stripped."""
        path = os.path.join(self._dir_for(name), name)
        try:
            with open(path) as f:
                return f.read().strip()
        except FileNotFoundError:
            raise InvalidArgument(f"cgroup file {path} does not exist") from None
        except OSError as e:
            raise SystemFailure(f"cannot read {path}: {e.strerror}") from None

    def set(self, files: Files) -> None:
        """Write control files, in order; a value of several lines is written a line at a time.

        ``files`` maps (or lists pairs of) file names, such as ``memory.max`` or
        ``devices.allow``, to values. The controller is the part of the name before the
        first dot. Files that take one entry per write (``devices.allow``, ``io.max``,
        ``blkio.throttle.*``) get one ``write(2)`` per line.
        """
        for name, value in self._order(as_pairs(files)):
            path = os.path.join(self._dir_for(name), name)
            for line in value.split("\n"):
                write_file(path, line)

    def _order(self, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """Reorder writes whose order the kernel cares about (hook for the v1 driver)."""
        return pairs

    def pids(self) -> list[int]:
        """Return the processes in the cgroup and in its descendants, sorted."""
        found: set[int] = set()
        for dirpath, _dirs, _files in os.walk(self._procs_dir()):
            try:
                with open(os.path.join(dirpath, "cgroup.procs")) as f:
                    found.update(int(line) for line in f if line.strip())
            except FileNotFoundError:
                continue  # removed while walking
        return sorted(found)

    def kill(self, sig: int) -> None:
        """Send ``sig`` to every process of the cgroup, including ones forked meanwhile.

        The list of processes is read again after each round: a process can fork between
        the read and the signal, and its child is only seen on the next read. The loop
        ends when a read shows no process that was not signalled yet.
        """
        signalled: set[int] = set()
        while new := [p for p in self.pids() if p not in signalled]:
            for pid in new:
                # A process may have exited since it was listed.
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            signalled.update(new)

    def destroy(self) -> None:
        """Remove the cgroup (and its sub-cgroups) from every hierarchy; fine if gone.

        Directories are removed leaf first. rmdir fails with EBUSY while a task is
        still attached, which lasts until a killed process has been reaped: that is
        retried for a short while, then reported.
        """
        for top in self.paths().values():
            remove_tree(top)


class Mount(NamedTuple):
    """A cgroup filesystem mount read from ``/proc/self/mountinfo``."""

    mountpoint: str
    root: str
    """The cgroup path (in this cgroup namespace) of the mount's top directory."""
    fstype: str
    """``cgroup`` (v1) or ``cgroup2``."""
    controllers: tuple[str, ...]
    """v1 only: the controllers bound to the hierarchy, and ``name=...`` if named."""

    def dir_of(self, cgroup_path: str) -> str:
        """Return the directory of the absolute ``cgroup_path`` under this mount."""
        # A mount of a sub-tree (a container's bind mount of its own cgroup) shows the
        # cgroup at root R as its top directory: strip R from paths below it.
        rel = cgroup_path
        if self.root != "/" and (rel == self.root or rel.startswith(self.root + "/")):
            rel = rel[len(self.root) :]
        return os.path.join(self.mountpoint, rel.lstrip("/")).rstrip("/")


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal (\040...).
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), field)


def cgroup_mounts() -> list[Mount]:
    """List the cgroup and cgroup2 mounts of this mount namespace (first of each hierarchy)."""
    with open("/proc/cgroups") as f:
        # The v1 subsystems this kernel has, to tell them apart from mount options.
        known = {line.split()[0] for line in f if not line.startswith("#")}
    mounts: list[Mount] = []
    seen: set[tuple[str, ...]] = set()
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            fstype, superopts = fields[sep + 1], fields[sep + 3]
            if fstype not in ("cgroup", "cgroup2"):
                continue
            controllers: tuple[str, ...] = ()
            if fstype == "cgroup":
                controllers = tuple(
                    o for o in superopts.split(",") if o in known or o.startswith("name=")
                )
            key = controllers or (fstype,)
            if key in seen:
                continue  # a bind mount of a hierarchy already listed
            seen.add(key)
            mounts.append(Mount(_unescape(fields[4]), _unescape(fields[3]), fstype, controllers))
    return mounts


def detect_mode(mounts: list[Mount] | None = None) -> Mode:
    """Tell how cgroups are mounted: ``unified`` (v2 only), ``hybrid`` or ``legacy`` (v1)."""
    mounts = cgroup_mounts() if mounts is None else mounts
    if any(m.fstype == "cgroup2" and m.mountpoint == "/sys/fs/cgroup" for m in mounts):
        return "unified"
    if any(m.fstype == "cgroup" for m in mounts):
        return "hybrid" if any(m.fstype == "cgroup2" for m in mounts) else "legacy"
    # No v1 hierarchy: a cgroup2 mount elsewhere still makes this a unified host.
    return "unified"


def own_cgroups() -> dict[str, str]:
    """Map each controller (``name=...`` for named hierarchies, ``""`` for cgroup2) to
    the cgroup this process is in, from ``/proc/self/cgroup``."""
    own: dict[str, str] = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _hid, controllers, path = line.rstrip("\n").split(":", 2)
            for c in controllers.split(",") if controllers else [""]:
                own[c] = path
    return own


def resolve(path: str, own: str) -> str:
    """Make an OCI ``cgroupsPath`` absolute: a relative one is taken from ``own``."""
    if not path or path.startswith("/"):
        return "/" + path.strip("/")
    return os.path.join(own, path).rstrip("/")


def as_pairs(files: Files) -> list[tuple[str, str]]:
    """Return the (name, value) writes of ``files`` as a list, in order."""
    return list(files.items()) if isinstance(files, Mapping) else list(files)


def write_file(path: str, value: str) -> None:
    """Write ``value`` to the control file ``path`` in a single ``write(2)``.

    cgroupfs parses each write on its own, so the value must not be split; a file that
    does not exist is never created (the controller is missing, or the name is wrong).
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
    except FileNotFoundError:
        raise InvalidArgument(
            f"cgroup file {path} does not exist: is the controller enabled?"
        ) from None
    except OSError as e:
        raise SystemFailure(f"cannot open {path}: {e.strerror}") from None
    try:
        os.write(fd, value.encode())
    except OSError as e:
        kind = InvalidArgument if e.errno in _BAD_VALUE else SystemFailure
        raise kind(f"cannot write {value!r} to {path}: {e.strerror}") from None
    finally:
        os.close(fd)


def read_keyed(path: str) -> dict[str, int]:
    """Parse a flat keyed file (``key value`` lines, e.g. ``memory.events``)."""
    with open(path) as f:
        pairs = (line.split() for line in f)
        return {p[0]: int(p[1]) for p in pairs if len(p) == 2 and p[1].lstrip("-").isdigit()}


def make_dirs(top: str, path: str) -> list[str]:
    """Create ``path`` and its missing parents below ``top``; return those created, top down."""
    rel = os.path.relpath(path, top)
    created: list[str] = []
    # A parent that another process removes (the last container under it going away)
    # between our mkdirs makes the next one fail with ENOENT: start over, a few times.
    for _attempt in range(5):
        current = top
        try:
            for part in [] if rel == "." else rel.split("/"):
                current = os.path.join(current, part)
                try:
                    os.mkdir(current, 0o755)
                except FileExistsError:
                    continue
                created.append(current)
            return created
        except FileNotFoundError:
            continue
        except OSError as e:
            raise SystemFailure(f"cannot create cgroup {current}: {e.strerror}") from None
    raise SystemFailure(f"cannot create cgroup {path}: its parent keeps disappearing")


def remove_tree(top: str) -> None:
    """rmdir ``top`` and every cgroup below it, leaf first; see ``Cgroup.destroy``."""
    if not os.path.isdir(top):
        return
    # Only directories are removed: the control files inside a cgroup directory are
    # not real files, and rmdir of the directory takes them along.
    for dirpath, _dirs, _files in os.walk(top, topdown=False):
        deadline = time.monotonic() + _RMDIR_GRACE
        while True:
            try:
                os.rmdir(dirpath)
                break
            except FileNotFoundError:
                break
            except OSError as e:
                if e.errno != errno.EBUSY or time.monotonic() > deadline:
                    raise SystemFailure(f"cannot remove cgroup {dirpath}: {e.strerror}") from None
                time.sleep(0.01)


def open_cgroup(path: str, *, version: str | None = None) -> Cgroup:
    """Return the driver for cgroup ``path`` (an OCI ``cgroupsPath``) on this host.

    ``version`` (``"v1"``/``"v2"``) overrides the choice made from ``detect_mode``:
    v2 on a unified host, v1 (with the cgroup2 mount joined too) on a hybrid or legacy one.
    Nothing is created until ``create()``.
    """
    from dockyard.linux.cgroups.v1 import V1Cgroup
    from dockyard.linux.cgroups.v2 import V2Cgroup

    mounts = cgroup_mounts()
    mode = detect_mode(mounts)
    if version is None:
        version = "v2" if mode == "unified" else "v1"
    if version == "v2":
        unified = [m for m in mounts if m.fstype == "cgroup2"]
        if not unified:
            raise InvalidArgument("cgroup v2 is not mounted on this host; use cgroup v1")
        return V2Cgroup(path, unified[0].mountpoint)
    if version != "v1":
        raise InvalidArgument(f"unknown cgroup version {version!r}: use v1 or v2")
    if mode == "unified":
        raise InvalidArgument("cgroup v1 is not mounted on this host; use cgroup v2")
    return V1Cgroup(path, mounts)
