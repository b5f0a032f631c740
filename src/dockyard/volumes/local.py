"""Docker's ``local`` volume driver: a directory, or a filesystem mounted on one.

Each volume is ``BASE/NAME/_data``. Without options it is a plain directory. With
Docker's options it is a mount made when a container uses the volume and undone when
none does: ``type`` is the filesystem type, ``device`` the source and ``o`` the
mount(8) options, so ``type=tmpfs device=tmpfs o=size=100m`` is a tmpfs,
``type=none device=/srv/data o=bind`` a bind of a host directory and
``type=ext4 device=/dev/sdb1`` a block device. The driver keeps no state of its own:
whether a volume is mounted is read from the kernel, who uses it is the caller's.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import stat
from collections.abc import Mapping

from dockyard.errors import InvalidArgument, SystemFailure
from dockyard.linux import syscalls as sc
from dockyard.linux.mountinfo import is_mountpoint
from dockyard.oci.runtime import Mount
from dockyard.runtime.rootfs import parse_mount

NAME = "local"
_DATA = "_data"
# Docker's options, and the ones each needs beside it (volume/local/local_unix.go).
_VALID = ("type", "o", "device", "size")
_REQUIRES = {"device": ("type",), "type": ("device",), "o": ("device", "type")}
# A volume being removed is renamed to this first, so that a crash half way leaves
# no directory a new volume of the same name would adopt; the next removal sweeps it.
_REMOVING = ".removing-"


class LocalDriver:
    """The volumes kept under ``base`` (``ROOT/volumes``)."""

    def __init__(self, base: str) -> None:
        self.base = os.path.abspath(base)

    def path(self, name: str) -> str:
        """Where the volume's content is: its mount point when it has one."""
        return os.path.join(self.base, name, _DATA)

    @staticmethod
    def validate(options: Mapping[str, str]) -> None:
        """Refuse options Docker's local driver refuses, with its messages."""
        for key in options:
            if key not in _VALID:
                raise InvalidArgument(f'invalid option: "{key}"')
        if options.get("size"):
            raise InvalidArgument("quota size requested but no quota support")
        for key, needed in _REQUIRES.items():
            for other in needed if key in options else ():
                if other not in options:
                    raise InvalidArgument(f'missing required option: "{other}"')

    @staticmethod
    def needs_mount(options: Mapping[str, str]) -> bool:
        """Whether the volume is a mount rather than a plain directory."""
        return bool(options.get("type") or options.get("device"))

    def create(self, name: str, options: Mapping[str, str]) -> str:
        """Make the volume's directory; return its path."""
        self.validate(options)
        path = self.path(name)
        os.makedirs(os.path.dirname(path), mode=0o701, exist_ok=True)
        # Docker's mode for _data: the container decides who may read its files.
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o755)
        return path

    def mount(self, name: str, options: Mapping[str, str]) -> str:
        """Make sure the volume is ready to be bound into a container; return its path.

        A volume whose options need a mount is mounted unless it is already.
        """
        path = self.create(name, options)
        if not self.needs_mount(options) or is_mountpoint(path):
            return path
        plan = parse_mount(Mount(destination=path, type=options["type"],
                                 source=options["device"],
                                 options=[o for o in options.get("o", "").split(",") if o]),
                          path)
        if plan.flags & sc.MS_BIND and not os.path.isabs(plan.source):
            raise InvalidArgument(f"failed to mount local volume {name}: the device of a "
                                  f"bind must be an absolute path, not {plan.source!r}")
        try:
            sc.mount(plan.source, path, plan.type, plan.flags, plan.data or None)
        except OSError as e:
            raise SystemFailure(f"failed to mount local volume {name}: mount "
                                f"{plan.source}:{path}, flags: {plan.flags:#x}, data: "
                                f"{plan.data}: {e.strerror}") from None
        return path

    def unmount(self, name: str) -> None:
        """Undo ``mount`` (nothing when the volume is not mounted)."""
        path = self.path(name)
        if is_mountpoint(path):
            # Detached: a process still inside keeps its view until it leaves, while
            # the directory is a plain one again at once (Docker's driver does the same).
            sc.umount2(path, sc.MNT_DETACH)

    def size(self, name: str) -> int:
        """The bytes of the volume's files (a hard-linked file once), not following
        links nor crossing into other filesystems."""
        path = self.path(name)
        try:
            device = os.lstat(path).st_dev
        except FileNotFoundError:
            return 0
        seen: set[int] = set()
        total = 0
        for directory, subdirs, files in os.walk(path):
            subdirs[:] = [d for d in subdirs
                          if os.lstat(os.path.join(directory, d)).st_dev == device]
            for file in files:
                st = os.lstat(os.path.join(directory, file))
                if stat.S_ISREG(st.st_mode) and st.st_ino not in seen:
                    seen.add(st.st_ino)
                    total += st.st_size
        return total

    def remove(self, name: str) -> None:
        """Unmount the volume and take its directory away at once; ``sweep`` deletes
        the content later, so that a caller holding a lock need not wait for it."""
        self.unmount(name)
        if is_mountpoint(self.path(name)):
            # Deleting now would delete the mounted filesystem's files: a bound host
            # directory or a device's content.
            raise SystemFailure(f"volume {name} is still mounted at {self.path(name)}")
        with contextlib.suppress(FileNotFoundError):
            os.rename(os.path.join(self.base, name),
                      os.path.join(self.base, _REMOVING + secrets.token_hex(8)))

    def sweep(self) -> None:
        """Delete the content of removed volumes (of a crashed removal too)."""
        try:
            entries = os.scandir(self.base)
        except FileNotFoundError:
            return
        with entries:
            leftovers = [e.path for e in entries if e.name.startswith(_REMOVING)]
        for leftover in leftovers:
            # Another command may be sweeping the same directory: what it deleted first
            # is no error, and what is left goes at the next sweep.
            with contextlib.suppress(FileNotFoundError):
                shutil.rmtree(leftover)
