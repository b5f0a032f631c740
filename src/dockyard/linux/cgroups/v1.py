"""The cgroup v1 driver: one directory per mounted hierarchy.

On v1 each controller (or group of co-mounted controllers, like ``cpu,cpuacct``) is its
own tree, so one cgroup is a set of directories with the same path, one per hierarchy,
and a process must be written into each. On a hybrid host the cgroup2 mount (which
carries no controller there, or only a few) is joined too, as runc and systemd do, so
that the ``0::`` line of ``/proc/PID/cgroup`` names the container's cgroup as well.
"""

from __future__ import annotations

import os
import time

from dockyard.errors import InvalidArgument, Timeout
from dockyard.linux.cgroups import (
    FREEZE_TIMEOUT,
    Cgroup,
    Mount,
    cgroup_mounts,
    make_dirs,
    own_cgroups,
    read_keyed,
    resolve,
    write_file,
)

# The key of the hybrid host's cgroup2 directory in paths().
UNIFIED = "unified"


class V1Cgroup(Cgroup):
    """A cgroup on a legacy or hybrid host: the same path in every v1 hierarchy."""

    version = "v1"

    def __init__(self, path: str, mounts: list[Mount] | None = None) -> None:
        """Locate ``path`` (an OCI ``cgroupsPath``) in each hierarchy of ``mounts``
        (default: the cgroup mounts of this mount namespace)."""
        own = own_cgroups()
        # (mount, directory) per hierarchy, for create/add; controller -> directory.
        self._trees: list[tuple[Mount, str]] = []
        self._dirs: dict[str, str] = {}
        for mount in cgroup_mounts() if mounts is None else mounts:
            if mount.fstype == "cgroup2":
                d = mount.dir_of(resolve(path, own.get("", "/")))
                self._dirs[UNIFIED] = d
            else:
                # Co-mounted controllers share one tree, hence one own path.
                d = mount.dir_of(resolve(path, own.get(mount.controllers[0], "/")))
                self._dirs.update(dict.fromkeys(mount.controllers, d))
            self._trees.append((mount, d))

    def paths(self) -> dict[str, str]:
        """Map each v1 controller (``name=systemd`` for the named hierarchy, ``unified``
        for the cgroup2 mount of a hybrid host) to this cgroup's directory."""
        return dict(self._dirs)

    def create(self) -> None:
        """mkdir -p the cgroup in every hierarchy; give empty cpusets their parent's CPUs.

        Every cpuset on the way down is filled, not only those made here: a parent that
        another process has just made may not be filled yet."""
        for mount, d in self._trees:
            make_dirs(mount.mountpoint, d)
            if "cpuset" in mount.controllers:
                rel = os.path.relpath(d, mount.mountpoint)
                current = mount.mountpoint
                for part in [] if rel == "." else rel.split("/"):
                    current = os.path.join(current, part)
                    _inherit_cpuset(current)

    def add(self, pid: int) -> None:
        """Write ``pid`` into ``cgroup.procs`` of every hierarchy."""
        for _mount, d in self._trees:
            write_file(os.path.join(d, "cgroup.procs"), str(pid))

    def freeze(self) -> None:
        """Set ``freezer.state`` to FROZEN and wait until the kernel reports FROZEN.

        The v1 freezer goes through FREEZING while it stops each task; a task forked
        meanwhile can leave it there, and writing FROZEN again picks such tasks up (runc
        loops the same way). If the cgroup cannot be frozen in time it is thawed again.
        """
        state = os.path.join(self._controller_dir("freezer", "freezer.state"), "freezer.state")
        deadline = time.monotonic() + FREEZE_TIMEOUT
        pause = 0.001
        while True:
            write_file(state, "FROZEN")
            if self.is_frozen():
                return
            if time.monotonic() > deadline:
                write_file(state, "THAWED")
                raise Timeout(f"cgroup {os.path.dirname(state)} did not freeze in time")
            time.sleep(pause)
            pause = min(pause * 2, 0.1)

    def thaw(self) -> None:
        """Set ``freezer.state`` to THAWED (immediate on v1)."""
        self.set({"freezer.state": "THAWED"})

    def is_frozen(self) -> bool:
        """Tell whether ``freezer.state`` reads FROZEN (FREEZING is not frozen yet)."""
        return self.read("freezer.state") == "FROZEN"

    def oom_kill_count(self) -> int:
        """Read ``oom_kill`` from ``memory.oom_control`` (0 without the memory controller)."""
        if "memory" not in self._dirs:
            return 0
        return read_keyed(os.path.join(self._dirs["memory"], "memory.oom_control")).get(
            "oom_kill", 0
        )

    def _controller_dir(self, controller: str, name: str) -> str:
        try:
            return self._dirs[controller]
        except KeyError:
            raise InvalidArgument(
                f"cgroup v1 controller {controller!r} is not mounted on this host"
                f" (needed for {name})"
            ) from None

    def _dir_for(self, name: str) -> str:
        controller = name.split(".", 1)[0]
        if controller in ("cgroup", "tasks", "notify_on_release"):
            return self._procs_dir()
        return self._controller_dir(controller, name)

    def _procs_dir(self) -> str:
        for preferred in ("pids", "freezer", "memory"):
            if preferred in self._dirs:
                return self._dirs[preferred]
        return self._trees[0][1]

    def _order(self, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
        # The kernel keeps memory.limit_in_bytes <= memory.memsw.limit_in_bytes at every
        # moment and refuses (EINVAL) a write that would break it. So when the memory
        # limit goes above the current memory+swap limit, memsw must be raised first;
        # otherwise the memory limit first (it may be lowering below the new memsw).
        names = [n for n, _ in pairs]
        if "memory.limit_in_bytes" not in names or "memory.memsw.limit_in_bytes" not in names:
            return pairs
        i, j = names.index("memory.limit_in_bytes"), names.index("memory.memsw.limit_in_bytes")
        limit = int(pairs[i][1])
        if j > i and (limit == -1 or limit > int(self.read("memory.memsw.limit_in_bytes"))):
            pairs = list(pairs)
            pairs.insert(i, pairs.pop(j))
        return pairs


def _inherit_cpuset(path: str) -> None:
    # A new v1 cpuset starts with empty cpuset.cpus and cpuset.mems, and the kernel
    # refuses to attach a task to a cpuset with no CPU or no memory node (ENOSPC).
    # Copy the parent's (which create() has made non-empty on the way down). Two
    # processes filling one cpuset at once write the same values.
    parent = os.path.dirname(path)
    for name in ("cpuset.cpus", "cpuset.mems"):
        with open(os.path.join(path, name)) as f:
            if f.read().strip():
                continue
        with open(os.path.join(parent, name)) as f:
            write_file(os.path.join(path, name), f.read().strip())
