"""The cgroup v2 driver: one directory in a cgroup2 mount.

Usable on any cgroup2 mount (``mountpoint``), the host's unified hierarchy at
/sys/fs/cgroup or the one of a hybrid host at /sys/fs/cgroup/unified.

A controller's files only appear in a cgroup when the controller is listed in its
parent's ``cgroup.subtree_control``, which needs it in the grandparent's, and so on up
to the root. ``set`` enables, down the ancestors, the controllers its files belong to,
and only those: enabling one in a cgroup that has processes of its own fails (EBUSY,
the "no internal processes" rule), so enabling everything would be needlessly fragile.
"""

from __future__ import annotations

import os
import select
import signal
import time
from collections.abc import Sequence

from dockyard.errors import InvalidArgument, Timeout
from dockyard.linux.cgroups import (
    FREEZE_TIMEOUT,
    Cgroup,
    Files,
    as_pairs,
    make_dirs,
    own_cgroups,
    read_keyed,
    resolve,
    write_file,
)
from dockyard.linux.cgroups.devices_bpf import DeviceRule, attach_device_filter

# Files named "cgroup.*" belong to the core, present in every cgroup.
_CORE = "cgroup"


class V2Cgroup(Cgroup):
    """A cgroup in the cgroup2 mount at ``mountpoint``."""

    version = "v2"

    def __init__(self, path: str, mountpoint: str = "/sys/fs/cgroup") -> None:
        """Locate ``path`` (an OCI ``cgroupsPath``; a relative one is taken from this
        process's own v2 cgroup) under ``mountpoint``."""
        own = own_cgroups().get("", "/") if not path.startswith("/") else "/"
        self._mountpoint = mountpoint.rstrip("/") or "/"
        self._dir = os.path.join(self._mountpoint, resolve(path, own).lstrip("/")).rstrip("/")
        self._enabled: set[str] = set()

    def paths(self) -> dict[str, str]:
        """Return ``{"unified": directory}``: v2 has a single hierarchy."""
        return {"unified": self._dir}

    def create(self) -> None:
        """mkdir -p the cgroup; controllers are enabled by ``set`` when first needed."""
        make_dirs(self._mountpoint, self._dir)

    def add(self, pid: int) -> None:
        """Write ``pid`` into ``cgroup.procs``."""
        write_file(os.path.join(self._dir, "cgroup.procs"), str(pid))

    def set(self, files: Files) -> None:
        """Enable the controllers the files belong to, then write them (see ``Cgroup.set``)."""
        pairs = as_pairs(files)
        for controller in dict.fromkeys(name.split(".", 1)[0] for name, _ in pairs):
            if controller != _CORE:
                self._enable(controller)
        super().set(pairs)

    def set_devices_v2(self, rules: Sequence[DeviceRule]) -> None:
        """Replace the cgroup's device access rules by an eBPF program made of ``rules``.

        cgroup v2 has no devices files: access to device nodes is decided by a
        BPF_PROG_TYPE_CGROUP_DEVICE program attached to the directory.
        """
        attach_device_filter(self._dir, rules)

    def freeze(self) -> None:
        """Write 1 to ``cgroup.freeze`` and wait until ``cgroup.events`` says frozen."""
        write_file(os.path.join(self._dir, "cgroup.freeze"), "1")
        try:
            self._wait_frozen(1)
        except Timeout:
            write_file(os.path.join(self._dir, "cgroup.freeze"), "0")
            raise

    def thaw(self) -> None:
        """Write 0 to ``cgroup.freeze`` and wait until ``cgroup.events`` says thawed."""
        write_file(os.path.join(self._dir, "cgroup.freeze"), "0")
        self._wait_frozen(0)

    def is_frozen(self) -> bool:
        """Tell whether ``cgroup.events`` reports the cgroup as frozen."""
        return self._events().get("frozen") == 1

    def kill(self, sig: int) -> None:
        """Send ``sig`` to every process; SIGKILL goes through ``cgroup.kill`` if present.

        Writing 1 to ``cgroup.kill`` (Linux 5.14) kills the whole subtree in the kernel,
        which also catches processes forking at that moment; otherwise each process is
        signalled from userspace.
        """
        kill_file = os.path.join(self._dir, "cgroup.kill")
        if sig == signal.SIGKILL and os.path.exists(kill_file):
            write_file(kill_file, "1")
        else:
            super().kill(sig)

    def oom_kill_count(self) -> int:
        """Read ``oom_kill`` from ``memory.events`` (0 without the memory controller)."""
        try:
            return read_keyed(os.path.join(self._dir, "memory.events")).get("oom_kill", 0)
        except FileNotFoundError:
            return 0

    def _events(self) -> dict[str, int]:
        return read_keyed(os.path.join(self._dir, "cgroup.events"))

    def _wait_frozen(self, want: int) -> None:
        # Freezing is asynchronous: cgroup.freeze is the request, the "frozen" key of
        # cgroup.events the outcome, which the kernel updates once every task has
        # stopped. Instead of sleeping, poll(2) the file: kernfs wakes pollers of
        # cgroup.events with POLLPRI (and POLLERR) each time its content changes, and a
        # read re-arms it. The read comes first, so a change before poll() is not missed.
        fd = os.open(os.path.join(self._dir, "cgroup.events"), os.O_RDONLY | os.O_CLOEXEC)
        try:
            poller = select.poll()
            poller.register(fd, select.POLLPRI)
            deadline = time.monotonic() + FREEZE_TIMEOUT
            while True:
                os.lseek(fd, 0, os.SEEK_SET)
                lines = os.read(fd, 4096).decode().splitlines()
                if f"frozen {want}" in lines:
                    return
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    state = "freeze" if want else "thaw"
                    raise Timeout(f"cgroup {self._dir} did not {state} in time")
                poller.poll(remaining * 1000)
        finally:
            os.close(fd)

    def _enable(self, controller: str) -> None:
        # Walk from the mount's root down to the parent, adding the controller to each
        # cgroup.subtree_control that lacks it. Each level can only enable what its own
        # cgroup.controllers lists (what its parent passed down).
        if controller in self._enabled:
            return
        rel = os.path.relpath(os.path.dirname(self._dir), self._mountpoint)
        level = self._mountpoint
        for part in [""] + ([] if rel == "." else rel.split("/")):
            level = os.path.join(level, part).rstrip("/")
            with open(os.path.join(level, "cgroup.subtree_control")) as f:
                if controller in f.read().split():
                    continue
            with open(os.path.join(level, "cgroup.controllers")) as f:
                if controller not in f.read().split():
                    raise InvalidArgument(
                        f"cgroup v2 controller {controller!r} is not available in {level}"
                    )
            write_file(os.path.join(level, "cgroup.subtree_control"), "+" + controller)
        self._enabled.add(controller)

    def _dir_for(self, name: str) -> str:
        return self._dir

    def _procs_dir(self) -> str:
        return self._dir
