"""The container's root filesystem: mounts, devices, pivot_root, masked paths.

Everything here runs in the container's init, after it unshared its mount namespace
and before it executes the user's program. Paths inside the rootfs are hostile (a
symlink in an image may point anywhere), so every destination is opened with
``openat2(RESOLVE_IN_ROOT)`` relative to the rootfs and mounted onto through its
``/proc/self/fd/N`` magic link: the kernel resolves it exactly once, inside the root,
and no race between checking a path and mounting onto it exists (CVE-2021-30465).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator, Sequence
from typing import NamedTuple

from dockyard.errors import InvalidArgument
from dockyard.linux import syscalls as sc
from dockyard.oci.runtime import LinuxDevice, Mount

# Mount options that are flags, with the bits they set and whether they clear them.
_FLAGS: dict[str, tuple[bool, int]] = {
    "ro": (False, sc.MS_RDONLY), "rw": (True, sc.MS_RDONLY),
    "nosuid": (False, sc.MS_NOSUID), "suid": (True, sc.MS_NOSUID),
    "nodev": (False, sc.MS_NODEV), "dev": (True, sc.MS_NODEV),
    "noexec": (False, sc.MS_NOEXEC), "exec": (True, sc.MS_NOEXEC),
    "sync": (False, sc.MS_SYNCHRONOUS), "async": (True, sc.MS_SYNCHRONOUS),
    "dirsync": (False, sc.MS_DIRSYNC), "remount": (False, sc.MS_REMOUNT),
    "mand": (False, sc.MS_MANDLOCK), "nomand": (True, sc.MS_MANDLOCK),
    "noatime": (False, sc.MS_NOATIME), "atime": (True, sc.MS_NOATIME),
    "nodiratime": (False, sc.MS_NODIRATIME), "diratime": (True, sc.MS_NODIRATIME),
    "relatime": (False, sc.MS_RELATIME), "norelatime": (True, sc.MS_RELATIME),
    "strictatime": (False, sc.MS_STRICTATIME), "nostrictatime": (True, sc.MS_STRICTATIME),
    "lazytime": (False, sc.MS_LAZYTIME), "nolazytime": (True, sc.MS_LAZYTIME),
    "nosymfollow": (False, sc.MS_NOSYMFOLLOW), "symfollow": (True, sc.MS_NOSYMFOLLOW),
    "bind": (False, sc.MS_BIND), "rbind": (False, sc.MS_BIND | sc.MS_REC),
    "defaults": (False, 0),
}

PROPAGATION: dict[str, int] = {
    "private": sc.MS_PRIVATE, "rprivate": sc.MS_PRIVATE | sc.MS_REC,
    "shared": sc.MS_SHARED, "rshared": sc.MS_SHARED | sc.MS_REC,
    "slave": sc.MS_SLAVE, "rslave": sc.MS_SLAVE | sc.MS_REC,
    "unbindable": sc.MS_UNBINDABLE, "runbindable": sc.MS_UNBINDABLE | sc.MS_REC,
}

# Options that are neither flags nor filesystem data, which the runtime handles
# itself or ignores, as runc does.
_IGNORED = {"tmpcopyup", "idmap", "ridmap", "copy-symlink", "z", "Z", "rro", "rrw"}


class MountPlan(NamedTuple):
    """One OCI mount, its options parsed."""

    destination: str
    type: str
    source: str
    flags: int
    propagation: tuple[int, ...]
    data: str

    @property
    def is_bind(self) -> bool:
        return bool(self.flags & sc.MS_BIND)


def parse_mount(mount: Mount, bundle: str) -> MountPlan:
    """Split a mount's options into mount(2) flags, propagation changes and data."""
    flags = 0
    propagation: list[int] = []
    data: list[str] = []
    for option in mount.options or ():
        if option in _FLAGS:
            clear, bit = _FLAGS[option]
            flags = flags & ~bit if clear else flags | bit
        elif option in PROPAGATION:
            propagation.append(PROPAGATION[option])
        elif option not in _IGNORED:
            data.append(option)
    mtype = mount.type or ""
    if mtype == "bind":
        flags |= sc.MS_BIND
    source = mount.source or mtype or "none"
    if flags & sc.MS_BIND and not os.path.isabs(source):
        source = os.path.join(bundle, source)
    if not mount.destination.startswith("/"):
        raise InvalidArgument(f"mount destination {mount.destination!r} is not absolute")
    return MountPlan(mount.destination, mtype, source, flags, tuple(propagation),
                     ",".join(data))


def root_propagation(value: str | None) -> int:
    """The propagation of ``/`` in the new mount namespace (rslave unless told)."""
    if not value:
        return sc.MS_SLAVE | sc.MS_REC
    try:
        return PROPAGATION[value]
    except KeyError:
        raise InvalidArgument(f"invalid rootfsPropagation {value!r}") from None


@contextlib.contextmanager
def _opened(fd: int) -> Iterator[int]:
    try:
        yield fd
    finally:
        os.close(fd)


def open_in_root(root_fd: int, path: str, *, create: str | None = None) -> int:
    """An O_PATH fd of ``path`` resolved inside the root, creating it when asked.

    ``create`` is "dir" or "file": the missing components are made as directories,
    the last one as the given kind. A symlink anywhere in the path is followed but
    stays inside the root, as if the root were ``/``.
    """
    resolve = sc.RESOLVE_IN_ROOT | sc.RESOLVE_NO_MAGICLINKS
    try:
        return sc.openat2(root_fd, path, os.O_PATH, resolve=resolve)
    except FileNotFoundError:
        if create is None:
            raise
    # Walk the path a component at a time, as the kernel would with the rootfs as "/":
    # a symlink's target replaces it (an absolute one starts again at the root), ".."
    # stops at the root, and what is missing is made where the walk leads. The
    # directories walked through are opened with RESOLVE_NO_SYMLINKS, so the walk is
    # the only thing that follows links.
    resolved: list[str] = []
    todo = [p for p in reversed(path.split("/")) if p and p != "."]
    links = 0
    while todo:
        name = todo.pop()
        if name == "..":
            if resolved:
                resolved.pop()
            continue
        with _opened(sc.openat2(root_fd, "/".join(resolved) or ".", os.O_PATH | os.O_DIRECTORY,
                                resolve=resolve | sc.RESOLVE_NO_SYMLINKS)) as dfd:
            try:
                st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            except FileNotFoundError:
                if not todo and create == "file":
                    with contextlib.suppress(FileExistsError):
                        os.close(os.open(name, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644,
                                         dir_fd=dfd))
                else:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(name, 0o755, dir_fd=dfd)
                resolved.append(name)
                continue
            if stat.S_ISLNK(st.st_mode):
                links += 1
                if links > _MAX_SYMLINKS:
                    raise InvalidArgument(f"path {path!r}: too many levels of symbolic links")
                target = os.readlink(name, dir_fd=dfd)
                if target.startswith("/"):
                    resolved = []
                todo.extend(p for p in reversed(target.split("/")) if p and p != ".")
                continue
            resolved.append(name)
    return sc.openat2(root_fd, "/".join(resolved) or ".", os.O_PATH,
                      resolve=resolve | sc.RESOLVE_NO_SYMLINKS)


# What the kernel allows in one path walk (MAXSYMLINKS).
_MAX_SYMLINKS = 40


def _is_dir(path: str) -> bool:
    try:
        return stat.S_ISDIR(os.stat(path).st_mode)
    except FileNotFoundError:
        return True


class CgroupMount(NamedTuple):
    """One cgroup hierarchy of the host, as a container's ``cgroup`` mount shows it."""

    name: str  # where it goes under the mount's destination ("" for a unified host)
    options: str  # "cgroup2", or the v1 controllers like "cpu,cpuacct"
    host_dir: str  # the container's own cgroup in it, bind-mounted without a cgroupns


def mount_one(root_fd: int, plan: MountPlan, cgroup_mounts: Sequence[CgroupMount],
              cgroupns: bool) -> None:
    """Perform one planned mount inside the root opened as ``root_fd``."""
    if plan.type == "cgroup" and not plan.is_bind:
        _mount_cgroup(root_fd, plan, cgroup_mounts, cgroupns)
        return
    kind = "dir" if not plan.is_bind or _is_dir(plan.source) else "file"
    remount = 0
    with _opened(open_in_root(root_fd, plan.destination, create=kind)) as fd:
        target = sc.fd_path(fd)
        if plan.is_bind:
            sc.mount(plan.source, target, None, plan.flags & (sc.MS_BIND | sc.MS_REC))
            remount = plan.flags & ~(sc.MS_BIND | sc.MS_REC | sc.MS_REMOUNT)
        else:
            try:
                sc.mount(plan.source, target, plan.type, plan.flags & ~sc.MS_REMOUNT,
                         plan.data or None)
            except PermissionError:
                if plan.type != "sysfs":
                    raise
                # sysfs cannot be mounted without a network namespace of our own
                # (nor in a user namespace): show the host's, read-only, as runc does.
                sc.mount("/sys", target, None, sc.MS_BIND | sc.MS_REC)
                remount = sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC
    if not remount and not plan.propagation:
        return
    # The fd above names the directory under the new mount: open the destination again
    # to reach the mount itself, which is what a remount or a propagation change needs.
    with _opened(open_in_root(root_fd, plan.destination)) as fd:
        if remount:
            _remount_bind(sc.fd_path(fd), remount)
        for flag in plan.propagation:
            sc.mount(None, sc.fd_path(fd), None, flag)


def _remount_bind(target: str, flags: int) -> None:
    # A bind mount takes its flags only through a remount. In a user namespace the
    # flags of the source mount that were locked (nosuid, nodev, noexec, atime) must be
    # repeated or the kernel refuses with EPERM.
    try:
        sc.mount(None, target, None, sc.MS_BIND | sc.MS_REMOUNT | flags)
    except PermissionError:
        locked = _statvfs_flags(target)
        sc.mount(None, target, None, sc.MS_BIND | sc.MS_REMOUNT | flags | locked)


def _statvfs_flags(path: str) -> int:
    st = os.statvfs(path)
    mapping = {os.ST_RDONLY: sc.MS_RDONLY, os.ST_NOSUID: sc.MS_NOSUID,
               os.ST_NODEV: sc.MS_NODEV, os.ST_NOEXEC: sc.MS_NOEXEC,
               os.ST_NOATIME: sc.MS_NOATIME, os.ST_NODIRATIME: sc.MS_NODIRATIME,
               os.ST_RELATIME: sc.MS_RELATIME}
    return sum(ms for st_flag, ms in mapping.items() if st.f_flag & st_flag)


def _mount_cgroup(root_fd: int, plan: MountPlan, cgroup_mounts: Sequence[CgroupMount],
                  cgroupns: bool) -> None:
    """A ``cgroup`` mount: cgroup2 on a unified host, else a tmpfs with one mount per v1
    hierarchy, as runc lays it out.

    In a cgroup namespace of its own the container mounts each hierarchy, and the kernel
    shows its own cgroup as the root; without one, the container's directory of each
    hierarchy is bind-mounted, so that it still sees only its own cgroup.
    """
    flags = plan.flags & ~(sc.MS_REMOUNT | sc.MS_BIND | sc.MS_REC)

    def one(dir_fd: int, name: str, cg: CgroupMount) -> None:
        with _opened(sc.openat2(dir_fd, name, os.O_PATH, resolve=sc.RESOLVE_IN_ROOT)) as fd:
            if not cgroupns:
                sc.mount(cg.host_dir, sc.fd_path(fd), None, sc.MS_BIND | sc.MS_REC)
            elif cg.options == "cgroup2":
                sc.mount("cgroup2", sc.fd_path(fd), "cgroup2", flags)
            else:
                sc.mount("cgroup", sc.fd_path(fd), "cgroup", flags, cg.options)
        if not cgroupns and flags:
            # Again through the name: the fd above is the directory under the mount.
            with _opened(sc.openat2(dir_fd, name, os.O_PATH,
                                    resolve=sc.RESOLVE_IN_ROOT)) as fd:
                _remount_bind(sc.fd_path(fd), flags)

    if len(cgroup_mounts) == 1 and cgroup_mounts[0].options == "cgroup2":
        os.close(open_in_root(root_fd, plan.destination, create="dir"))
        one(root_fd, plan.destination, cgroup_mounts[0])
        return
    with _opened(open_in_root(root_fd, plan.destination, create="dir")) as fd:
        sc.mount("tmpfs", sc.fd_path(fd), "tmpfs", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC,
                 "mode=755")
    with _opened(open_in_root(root_fd, plan.destination)) as pfd, \
            _opened(os.open(sc.fd_path(pfd), os.O_RDONLY | os.O_DIRECTORY)) as top:
        for cg in cgroup_mounts:
            os.mkdir(cg.name, 0o755, dir_fd=top)
            one(top, cg.name, cg)
            # Co-mounted controllers (cpu,cpuacct) are reachable by each name, as on
            # a host.
            for alias in cg.name.split(","):
                if alias != cg.name:
                    with contextlib.suppress(FileExistsError):
                        os.symlink(cg.name, alias, dir_fd=top)


DEFAULT_DEVICES: tuple[tuple[str, int, int], ...] = (
    ("/dev/null", 1, 3), ("/dev/zero", 1, 5), ("/dev/full", 1, 7),
    ("/dev/random", 1, 8), ("/dev/urandom", 1, 9), ("/dev/tty", 5, 0),
)

_DEV_SYMLINKS = (("/proc/self/fd", "fd"), ("/proc/self/fd/0", "stdin"),
                 ("/proc/self/fd/1", "stdout"), ("/proc/self/fd/2", "stderr"),
                 ("pts/ptmx", "ptmx"))

_DEVICE_TYPES = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}


def create_devices(root_fd: int, devices: Sequence[LinuxDevice], *, bind: bool) -> None:
    """Make the default devices and ``linux.devices`` under the root's /dev.

    In a user namespace mknod is refused, so the host's device nodes are bind-mounted
    instead (``bind=True``), as runc does.
    """
    wanted: dict[str, LinuxDevice] = {
        path: LinuxDevice(path=path, type="c", major=major, minor=minor, file_mode=0o666,
                          uid=0, gid=0)
        for path, major, minor in DEFAULT_DEVICES
    }
    for dev in devices:
        wanted[dev.path] = dev
    for dev in wanted.values():
        _make_device(root_fd, dev, bind)
    with _opened(open_in_root(root_fd, "/dev")) as pfd, \
            _opened(os.open(sc.fd_path(pfd), os.O_RDONLY | os.O_DIRECTORY)) as dfd:
        for target, name in _DEV_SYMLINKS:
            with contextlib.suppress(FileExistsError):
                os.symlink(target, name, dir_fd=dfd)


def _make_device(root_fd: int, dev: LinuxDevice, bind: bool) -> None:
    if dev.type not in _DEVICE_TYPES:
        raise InvalidArgument(f"device {dev.path}: unknown type {dev.type!r}")
    parent, name = os.path.split(dev.path)
    if bind:
        with _opened(open_in_root(root_fd, dev.path, create="file")) as fd:
            sc.mount(dev.path, sc.fd_path(fd), None, sc.MS_BIND)
        return
    with _opened(open_in_root(root_fd, parent or "/", create="dir")) as pfd, \
            _opened(os.open(sc.fd_path(pfd), os.O_RDONLY | os.O_DIRECTORY)) as dfd:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=dfd)
        mode = (dev.file_mode if dev.file_mode is not None else 0o666) & 0o7777
        rdev = os.makedev(dev.major or 0, dev.minor or 0)
        os.mknod(name, mode | _DEVICE_TYPES[dev.type], rdev, dir_fd=dfd)
        # mknod's mode is filtered by the umask; the spec's fileMode is not.
        os.chmod(name, mode, dir_fd=dfd, follow_symlinks=False)
        os.chown(name, dev.uid or 0, dev.gid or 0, dir_fd=dfd, follow_symlinks=False)


def pivot(rootfs: str) -> None:
    """Make ``rootfs`` the root and detach the old one.

    pivot_root(".", ".") stacks the old root on top of the new one at "/"; making it a
    slave first keeps the unmount from propagating to the host, and the lazy unmount
    then drops it without needing a directory for it inside the rootfs.
    """
    old = os.open("/", os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    new = os.open(rootfs, os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fchdir(new)
        sc.pivot_root(".", ".")
        os.fchdir(old)
        sc.mount(None, ".", None, sc.MS_SLAVE | sc.MS_REC)
        sc.umount2(".", sc.MNT_DETACH)
        os.chdir("/")
    finally:
        os.close(old)
        os.close(new)


def make_private(rootfs: str) -> None:
    """Make the rootfs mount and the mount it sits on private (what pivot_root needs)."""
    sc.mount(None, rootfs, None, sc.MS_PRIVATE)
    parent = "/"
    with open("/proc/self/mountinfo") as f:
        for line in f:
            # Field 5 is the mount point, with spaces and the like octal-escaped.
            point = line.split()[4].encode().decode("unicode_escape")
            if point != rootfs and (rootfs.startswith(point.rstrip("/") + "/")) and \
                    len(point) > len(parent):
                parent = point
    sc.mount(None, parent, None, sc.MS_PRIVATE)


def move_root(rootfs: str) -> None:
    """The ``--no-pivot`` way: move the rootfs mount over / and chroot into it."""
    os.chdir(rootfs)
    sc.mount(rootfs, "/", None, sc.MS_MOVE)
    os.chroot(".")
    os.chdir("/")


def mask_paths(paths: Sequence[str]) -> None:
    """Hide each path: /dev/null over a file, an empty read-only tmpfs over a directory."""
    for path in paths:
        try:
            is_dir = stat.S_ISDIR(os.stat(path).st_mode)
        except (FileNotFoundError, NotADirectoryError):
            continue
        if is_dir:
            sc.mount("tmpfs", path, "tmpfs", sc.MS_RDONLY, "size=0k")
        else:
            sc.mount("/dev/null", path, None, sc.MS_BIND)


def readonly_paths(paths: Sequence[str]) -> None:
    """Make each existing path a read-only bind mount of itself."""
    for path in paths:
        try:
            sc.mount(path, path, None, sc.MS_BIND | sc.MS_REC)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ENOTDIR):
                continue
            raise
        flags = sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY
        try:
            sc.mount(None, path, None, flags | sc.MS_REC)
        except PermissionError:
            sc.mount(None, path, None, flags | sc.MS_REC | _statvfs_flags(path))


def readonly_root() -> None:
    """Remount / read-only, keeping the flags it has."""
    sc.mount(None, "/", None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | _statvfs_flags("/"))


def mount_option_names() -> set[str]:
    """The mount options this runtime understands as flags."""
    return set(_FLAGS)
