"""Files with all their metadata, handled through directory fds.

Everything works on ``(parent directory fd, single name)`` pairs and never follows a
symlink in the last component, so a tree that holds hostile symlinks can be copied,
changed and removed without touching anything outside it. The directory fds themselves
come from ``openat2`` in the callers, which is where the resolution rules are chosen.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass, field

from dockyard.linux import syscalls as sc

_CHUNK = 1 << 20
# overlayfs keeps its own state in these (opaque dirs, copy-up origins): they describe
# one particular layer stack and must not travel with a file copied out of it.
OVERLAY_XATTR_PREFIX = "trusted.overlay."


@dataclass(frozen=True)
class Meta:
    """What a file carries besides its content."""

    mode: int  # permission bits, setuid / setgid / sticky included
    uid: int
    gid: int
    mtime_ns: int
    xattrs: dict[str, bytes] = field(default_factory=dict)


def proc_path(dir_fd: int, name: str) -> str:
    """A path reaching ``name`` in the directory ``dir_fd`` without resolving anything again:
    for the calls that take no dir_fd (the xattr ones)."""
    return f"{sc.fd_path(dir_fd)}/{name}"


def read_xattrs(dir_fd: int, name: str,
                keep: Callable[[str], bool] = lambda key: True) -> dict[str, bytes]:
    """The extended attributes of ``name`` (not followed), those ``keep`` accepts."""
    path = proc_path(dir_fd, name)
    try:
        keys = os.listxattr(path, follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EPERM):
            return {}
        raise
    values = {}
    for key in sorted(keys):
        if keep(key):
            with contextlib.suppress(OSError):
                values[key] = os.getxattr(path, key, follow_symlinks=False)
    return values


def not_overlay_xattr(key: str) -> bool:
    """Filter for ``read_xattrs``: everything but overlayfs's own attributes."""
    return not key.startswith(OVERLAY_XATTR_PREFIX)


def set_meta(dir_fd: int, name: str, fd: int | None, meta: Meta, *, symlink: bool) -> None:
    """Give ``name`` (or its open ``fd``) the owner, xattrs, mode and mtime of ``meta``.

    The order matters: chown(2) clears setuid/setgid and ``security.capability``, so it
    comes first; the mtime comes last because setting xattrs or modes changes nothing
    of it but writing would.
    """
    if fd is not None:
        os.fchown(fd, meta.uid, meta.gid)
        for key, value in meta.xattrs.items():
            os.setxattr(fd, key, value)
        os.fchmod(fd, meta.mode)
        os.utime(fd, ns=(meta.mtime_ns, meta.mtime_ns))
        return
    os.chown(name, meta.uid, meta.gid, dir_fd=dir_fd, follow_symlinks=False)
    for key, value in meta.xattrs.items():
        os.setxattr(proc_path(dir_fd, name), key, value, follow_symlinks=False)
    if not symlink:
        # Not a symlink (the caller just made this node), so following is the same as not,
        # and fchmodat(AT_SYMLINK_NOFOLLOW) is not supported by every libc.
        os.chmod(name, meta.mode, dir_fd=dir_fd)
    os.utime(name, ns=(meta.mtime_ns, meta.mtime_ns), dir_fd=dir_fd, follow_symlinks=False)


def meta_of(st: os.stat_result, xattrs: dict[str, bytes]) -> Meta:
    """``Meta`` from an lstat result."""
    return Meta(stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns, xattrs)


def open_dir(dir_fd: int, name: str) -> int:
    """Open the directory ``name`` in ``dir_fd``, refusing to follow a symlink there."""
    return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                   dir_fd=dir_fd)


def copy_data(src_fd: int, dst_fd: int) -> None:
    """Copy a whole file's content, in the kernel where the filesystems allow it."""
    try:
        while os.copy_file_range(src_fd, dst_fd, _CHUNK * 64):
            pass
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            raise
        while chunk := os.read(src_fd, _CHUNK):
            os.write(dst_fd, chunk)


def remove(dir_fd: int, name: str) -> None:
    """Remove ``name`` whatever it is, a whole directory tree included; never follows."""
    try:
        st = os.lstat(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(name, dir_fd=dir_fd)
    else:
        os.unlink(name, dir_fd=dir_fd)


def copy_node(src_dir: int, name: str, st: os.stat_result, dst_dir: int, dst_name: str,
              keep_xattr: Callable[[str], bool] = lambda key: True) -> tuple[int, Meta] | None:
    """Make a copy of one node (a directory without its children) as ``dst_name``.

    Returns the new directory's fd and the metadata to give it, which the caller passes to
    ``set_meta`` once it has filled the directory (its mtime must be set after its
    children are made); every other kind of node is complete when this returns, and
    gives None.
    """
    meta = meta_of(st, read_xattrs(src_dir, name, keep_xattr))
    mode = st.st_mode
    fd: int | None = None
    if stat.S_ISDIR(mode):
        os.mkdir(dst_name, 0o700, dir_fd=dst_dir)
        return open_dir(dst_dir, dst_name), meta
    if stat.S_ISREG(mode):
        src = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=src_dir)
        try:
            fd = os.open(dst_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW |
                         os.O_CLOEXEC, 0o600, dir_fd=dst_dir)
            copy_data(src, fd)
        finally:
            os.close(src)
    elif stat.S_ISLNK(mode):
        os.symlink(os.readlink(name, dir_fd=src_dir), dst_name, dir_fd=dst_dir)
    else:  # devices, fifos, sockets
        os.mknod(dst_name, stat.S_IFMT(mode) | 0o600, st.st_rdev, dir_fd=dst_dir)
    try:
        set_meta(dst_dir, dst_name, fd, meta, symlink=stat.S_ISLNK(mode))
    finally:
        if fd is not None:
            os.close(fd)
    return None


def copy_tree(src: str, dst: str) -> None:
    """Copy everything in the directory ``src`` into the empty directory ``dst``.

    Owners, modes, xattrs, mtimes, devices and hard links (within ``src``) are kept.
    """
    src_fd = os.open(src, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    dst_fd = os.open(dst, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _copy_children(src_fd, dst_fd, "", dst_fd, {})
        set_meta(dst_fd, ".", dst_fd, meta_of(os.fstat(src_fd), read_xattrs(src_fd, ".")),
                 symlink=False)
    finally:
        os.close(src_fd)
        os.close(dst_fd)


def _copy_children(src_dir: int, dst_dir: int, prefix: str, dst_root: int,
                   links: dict[tuple[int, int], str]) -> None:
    for entry in sorted(os.scandir(src_dir), key=lambda e: e.name):
        st = entry.stat(follow_symlinks=False)
        if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
            first = links.setdefault((st.st_dev, st.st_ino), prefix + entry.name)
            if first != prefix + entry.name:
                os.link(first, entry.name, src_dir_fd=dst_root, dst_dir_fd=dst_dir,
                        follow_symlinks=False)
                continue
        made = copy_node(src_dir, entry.name, st, dst_dir, entry.name)
        if made is None:
            continue
        child, meta = made
        try:
            sub = open_dir(src_dir, entry.name)
            try:
                _copy_children(sub, child, f"{prefix}{entry.name}/", dst_root, links)
            finally:
                os.close(sub)
            set_meta(dst_dir, entry.name, child, meta, symlink=False)
        finally:
            os.close(child)
