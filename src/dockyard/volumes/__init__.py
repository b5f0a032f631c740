"""Volumes: directories that outlive the containers using them.

This package holds what does not depend on the state database: the rules for a
volume's name, the local driver (``dockyard.volumes.local``) that keeps each volume at
``ROOT/volumes/NAME/_data`` and mounts it when its options say so, and Docker's
copy-up of an image's content into a new volume (``copy_up``). The engine's
``VolumeService`` records volumes and their users and calls these.
"""

from __future__ import annotations

import errno
import os
import re
import secrets

from dockyard.errors import InvalidArgument
from dockyard.linux import syscalls as sc
from dockyard.storage.tree import copy_tree

#: Docker's label on a volume made without a name (``-v /path``, ``VOLUME`` in an
#: image): ``volume prune`` removes only these unless told ``--all``.
ANONYMOUS_LABEL = "com.docker.volume.anonymous"

_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")


def check_name(name: str) -> None:
    """Refuse a name the local driver cannot use, with Docker's words."""
    if len(name) == 1:
        raise InvalidArgument(f"create {name}: volume name is too short, names should be "
                              "at least two alphanumeric characters")
    if not _NAME.match(name):
        raise InvalidArgument(f'create {name}: "{name}" includes invalid characters for a '
                              'local volume name, only "[a-zA-Z0-9][a-zA-Z0-9_.-]" are '
                              "allowed. If you intended to pass a host directory, use "
                              "absolute path")


def anonymous_name() -> str:
    """A fresh name for a volume the user did not name: 64 hex digits, as Docker's."""
    return secrets.token_hex(32)


def copy_up(rootfs: str, target: str, volume_path: str) -> bool:
    """Copy what the image has at ``target`` into the volume at ``volume_path``.

    Docker does this when a container mounts an empty volume over a directory of its
    image, so that a new volume starts with the image's files (owners, modes, xattrs
    and the directory's own owner and mode included). Nothing is copied into a volume
    that already holds something, or when the image has no directory there. Returns
    whether it copied.
    """
    if os.listdir(volume_path):
        return False
    root_fd = os.open(rootfs, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        # The image's paths are hostile: a symlink at (or above) the target must
        # resolve inside the rootfs, never to a host directory.
        source_fd = sc.openat2(root_fd, target.lstrip("/") or ".",
                               os.O_RDONLY | os.O_DIRECTORY, resolve=sc.RESOLVE_IN_ROOT)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            return False
        raise
    finally:
        os.close(root_fd)
    try:
        copy_tree(sc.fd_path(source_fd), volume_path)
    finally:
        os.close(source_fd)
    return True
