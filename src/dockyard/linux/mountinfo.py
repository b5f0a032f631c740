"""The mount table of this mount namespace, from ``/proc/self/mountinfo``.

``os.path.ismount`` compares the device of a path with its parent's, so it misses a
bind mount from the same filesystem (a vfs snapshot, a bind volume); the mount table
does not.
"""

from __future__ import annotations

import os
import re

_OCTAL = re.compile(rb"\\([0-7]{3})")


def mount_points() -> list[str]:
    """Every mount point, in mount order (a path may appear more than once)."""
    with open("/proc/self/mountinfo", "rb") as mountinfo:
        # The mount point is field 5, with space, tab, newline and \\ octal-escaped.
        return [os.fsdecode(_OCTAL.sub(lambda m: bytes([int(m[1], 8)]), line.split()[4]))
                for line in mountinfo]


def is_mountpoint(path: str) -> bool:
    """Whether something is mounted on ``path`` (given absolute and normalised)."""
    return path in mount_points()
