"""The vfs snapshotter: a full copy per active snapshot, for any filesystem.

A snapshot's directory holds ``fs``. Preparing over a parent copies the parent's whole
tree (owners, modes, xattrs, devices, mtimes and hard links kept); a view needs no
copy, since a committed snapshot never changes: it is a read-only bind mount of it.
"""

from __future__ import annotations

import os

from dockyard.storage import tree
from dockyard.storage.snapshots import Kind, Mount, Snapshotter


class VfsSnapshotter(Snapshotter):
    """Snapshots as plain directory copies."""

    driver = "vfs"

    def _populate(self, directory: str, kind: Kind, parents: list[str]) -> None:
        own = os.path.join(directory, "fs")
        os.mkdir(own, 0o755)
        if kind is Kind.ACTIVE and parents:
            tree.copy_tree(os.path.join(parents[0], "fs"), own)

    def _mounts(self, directory: str, kind: Kind, parents: list[str]) -> list[Mount]:
        if kind is Kind.VIEW:
            source = os.path.join(parents[0] if parents else directory, "fs")
            return [Mount("bind", source, ("rbind", "ro"))]
        return [Mount("bind", os.path.join(directory, "fs"), ("rbind", "rw"))]
