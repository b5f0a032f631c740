"""The overlay snapshotter: kernel overlayfs, each committed layer stored once and shared.

A snapshot's directory holds ``fs`` (its own files: the upperdir while active, a lower
layer once committed) and ``work`` (overlayfs's workdir, same filesystem as ``fs``).
An active snapshot mounts as ``overlay`` with its parents' ``fs`` as the lowerdir chain,
nearest first; with no parent it is a plain bind mount of ``fs``, and a view of one
layer a read-only bind mount of it, as containerd does (overlayfs needs a lower layer,
and two when it has no upper one).

A layer's ``fs`` holds only its own changes, so it can be unpacked before its parent is
there and ``adopt``ed: a committed snapshot made so has no ``work``, which only an
active snapshot's mount uses.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from dockyard.storage.snapshots import Kind, Mount, Snapshotter, unmount


class OverlaySnapshotter(Snapshotter):
    """Snapshots as overlayfs layers."""

    driver = "overlay"
    stores_diffs = True

    def _populate(self, directory: str, kind: Kind, parents: list[str]) -> None:
        os.mkdir(os.path.join(directory, "fs"), 0o755)
        if kind is Kind.ACTIVE:
            os.mkdir(os.path.join(directory, "work"), 0o700)

    def _mounts(self, directory: str, kind: Kind, parents: list[str]) -> list[Mount]:
        lowers = [os.path.join(p, "fs") for p in parents]
        own = os.path.join(directory, "fs")
        if kind is Kind.VIEW:
            if len(lowers) < 2:
                return [Mount("bind", lowers[0] if lowers else own, ("rbind", "ro"))]
            return [Mount("overlay", "overlay", ("ro", "lowerdir=" + ":".join(lowers)))]
        if not lowers:
            return [Mount("bind", own, ("rbind", "rw"))]
        # index=off: the inode index would tie the layers to this one upperdir and refuse
        # a later mount of the same lowers with another one.
        return [Mount("overlay", "overlay", (
            "index=off", "lowerdir=" + ":".join(lowers), "upperdir=" + own,
            "workdir=" + os.path.join(directory, "work")))]


def overlay_supported(root: str) -> bool:
    """Whether the kernel mounts an overlay whose layers are on ``root``'s filesystem, tried
    for real: a kernel may have overlayfs and still refuse a filesystem (or nest it)."""
    probe = tempfile.mkdtemp(prefix=".overlay-probe-", dir=root)
    try:
        for name in ("lower", "upper", "work", "merged"):
            os.mkdir(os.path.join(probe, name))
        with open(os.path.join(probe, "lower", "file"), "w"):
            pass
        merged = os.path.join(probe, "merged")
        try:
            Mount("overlay", "overlay", (
                f"lowerdir={probe}/lower", f"upperdir={probe}/upper",
                f"workdir={probe}/work")).mount(merged)
        except OSError:
            return False
        try:
            # Deleting a lower file makes the kernel write a whiteout in the upper layer.
            os.unlink(os.path.join(merged, "file"))
            return os.path.lexists(os.path.join(probe, "upper", "file"))
        finally:
            unmount(merged)
    finally:
        shutil.rmtree(probe, ignore_errors=True)
