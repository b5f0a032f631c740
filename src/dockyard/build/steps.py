"""How a build step changes files: a snapshot over the parent image's layers, mounted
(``Workspace``); a RUN's process run in it by the in-process runtime
(``run_process``); what the step changed stored as a layer and committed as the
snapshot of its ChainID (``Workspace.commit``).

The snapshot's key starts with ``extract-<pid>-``, the prefix under which the image
service's garbage collection removes the active snapshots of dead processes: a build
killed at any point leaves nothing that the next ``image prune`` keeps.

The runtime makes the targets of its mounts (``/proc``, ``/dev``, ``/etc/hosts``...) in
the rootfs when the image lacks them; they are the engine's, not the step's (Docker
keeps them in an "init" layer below the container's): those it made are removed again
before the diff (``_MountStubs``).
"""

from __future__ import annotations

import contextlib
import gzip
import os
import posixpath
import shutil
import stat
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, BinaryIO, Protocol

from dockyard.errors import Conflict, DockyardError, NotFound
from dockyard.linux import syscalls as sc
from dockyard.oci.image import OCI_LAYER_GZIP, Descriptor, Digest
from dockyard.storage import layers
from dockyard.storage.snapshots import Mount, Snapshotter, mount_all, unmount

if TYPE_CHECKING:
    from dockyard.oci.runtime import Spec
    from dockyard.storage.content import ContentStore

__all__ = ["Layer", "Workspace", "chain_of", "clamp_times", "kill", "open_in", "owned",
           "run_process", "sweep"]

_IN_ROOT = sc.RESOLVE_IN_ROOT | sc.RESOLVE_NO_MAGICLINKS
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
# The prefix garbage collection knows for active snapshots of a (maybe dead) pid.
_SNAPSHOT_PREFIX = "extract-"
# One container created at a time by the stages' threads (they run at once after):
# the cgroup v1 driver fills a new cpuset parent (``/dockyard``) after making it, and a
# second create between the two copies its still empty CPUs (ENOSPC on attach).
_CREATING = threading.Lock()


@dataclass(frozen=True)
class Layer:
    """A layer a step made: its blob, its DiffID and the ChainID it is committed as."""

    descriptor: Descriptor
    diff_id: str
    chain_id: str


class Stores(Protocol):
    """What a workspace needs of the image service."""

    content: ContentStore
    snapshots: Snapshotter


def chain_of(parent_chain: str | None, diff_id: str) -> str:
    """The ChainID of a layer over the stack whose top ChainID is ``parent_chain``."""
    if parent_chain is None:
        return diff_id
    return str(Digest.of(f"{parent_chain} {diff_id}".encode()))


def open_in(root_fd: int, path: str) -> int:
    """An fd of the directory ``path``, resolved inside the root."""
    return sc.openat2(root_fd, path, _DIR_FLAGS, resolve=_IN_ROOT)


def clamp_times(directory: str, epoch: int) -> None:
    """No file under ``directory`` (itself included) newer than ``epoch``: the same
    context built again then makes the same layer bytes (``SOURCE_DATE_EPOCH``)."""
    ns = epoch * 1_000_000_000

    def clamp(name: str, dir_fd: int | None) -> None:
        if os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mtime_ns > ns:
            os.utime(name, ns=(ns, ns), dir_fd=dir_fd, follow_symlinks=False)

    for _, dirs, files, dir_fd in os.fwalk(directory):
        for name in dirs + files:
            clamp(name, dir_fd)
    clamp(directory, None)


class _MountStubs:
    """The mount targets a container's runtime will make in the rootfs: noted before
    the run (those missing then), removed after it, deepest first, when still empty.
    The directories they were made in get their times back, so that an overlay's
    copied-up directory is the same as below and ``drop_copied_up`` can take it out
    of the layer again."""

    def __init__(self, root_fd: int, targets: Sequence[str]) -> None:
        self._root_fd = root_fd
        self.missing: list[str] = []
        self.holders: dict[str, tuple[int, int]] = {}  # directory -> (atime, mtime) ns
        for target in sorted({posixpath.normpath(t) for t in targets}):
            if self._times(target) is None:
                self.missing.append(target)
                holder = posixpath.dirname(target)
                while (times := self._times(holder)) is None and holder != "/":
                    holder = posixpath.dirname(holder)
                if times is not None:
                    self.holders.setdefault(holder, times)

    def _times(self, path: str) -> tuple[int, int] | None:
        try:
            fd = sc.openat2(self._root_fd, path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC,
                            resolve=_IN_ROOT)
        except OSError:
            return None
        try:
            st = os.fstat(fd)
            return st.st_atime_ns, st.st_mtime_ns
        finally:
            os.close(fd)

    def remove(self) -> None:
        for target in sorted(self.missing, key=lambda t: (-t.count("/"), t)):
            parent, name = posixpath.split(target)
            with contextlib.suppress(OSError):
                pfd = open_in(self._root_fd, parent)
                try:
                    st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
                    if stat.S_ISDIR(st.st_mode):
                        os.rmdir(name, dir_fd=pfd)  # fails, as wanted, when not empty
                    elif stat.S_ISREG(st.st_mode) and st.st_size == 0:
                        os.unlink(name, dir_fd=pfd)
                finally:
                    os.close(pfd)
        for holder, times in sorted(self.holders.items(), key=lambda h: -h[0].count("/")):
            with contextlib.suppress(OSError):
                fd = open_in(self._root_fd, holder)
                try:
                    os.utime(fd, ns=times)
                finally:
                    os.close(fd)

    def drop_copied_up(self, upper: str, lowers: Sequence[str]) -> None:
        """Take out of an overlay ``upper`` the directories that only the stubs brought
        there: empty, not opaque, and the same as in the topmost of ``lowers`` that has
        them (their parents too, on the same terms)."""
        candidates = {p for holder in self.holders for p in _ancestry(holder)}
        for rel in sorted(candidates, key=lambda p: -p.count("/")):
            path = os.path.join(upper, rel)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            if not stat.S_ISDIR(st.st_mode) or os.listdir(path) or _opaque(path):
                continue
            below = next((os.lstat(p) for lower in lowers
                          if os.path.lexists(p := os.path.join(lower, rel))), None)
            if below is not None and (below.st_mode, below.st_uid, below.st_gid,
                                      below.st_mtime_ns) == (st.st_mode, st.st_uid,
                                                             st.st_gid, st.st_mtime_ns):
                with contextlib.suppress(OSError):
                    os.rmdir(path)


def _opaque(path: str) -> bool:
    try:
        return bool(os.getxattr(path, layers.OPAQUE_XATTR, follow_symlinks=False))
    except OSError:
        return False  # ENODATA: not opaque


def _ancestry(path: str) -> list[str]:
    """``/a/b`` -> ``a/b``, ``a``: the path and its parents, relative, root excluded."""
    parts = [p for p in path.split("/") if p]
    return ["/".join(parts[:i]) for i in range(len(parts), 0, -1)]


def owned(kind: str) -> str:
    """The prefix of what this process makes under the build directory: ``kind-PID-``,
    so that ``sweep`` knows it for a leftover once the process is gone."""
    return f"{kind}-{os.getpid()}-"


def sweep(work_dir: str, runtime_root: str, snapshots: Snapshotter) -> None:
    """Remove what builds killed before their end left: in ``work_dir`` the entries
    whose process is gone (rootfs mounts, bundles and their containers, scratch
    directories), then their snapshots."""
    from dockyard.linux.mountinfo import mount_points
    from dockyard.runtime.container import Runtime
    from dockyard.storage.durable import pid_alive

    try:
        names = os.listdir(work_dir)
    except FileNotFoundError:
        return
    for name in names:
        kind, _, rest = name.partition("-")
        pid, _, ident = rest.partition("-")
        if not pid.isdigit() or pid_alive(int(pid)):
            continue
        path = os.path.join(work_dir, name)
        if kind == "bundle":
            with contextlib.suppress(DockyardError, OSError):
                Runtime(runtime_root).delete(ident, force=True)
        for point in reversed(mount_points()):
            if point == path or point.startswith(path + "/"):
                with contextlib.suppress(OSError):
                    unmount(point)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.unlink(path)
    for info in list(snapshots.walk()):
        pid, _, rest = info.name.removeprefix(_SNAPSHOT_PREFIX).partition("-")
        if (info.name.startswith(_SNAPSHOT_PREFIX) and rest.startswith("build-")
                and pid.isdigit() and not pid_alive(int(pid))):
            with contextlib.suppress(DockyardError):
                snapshots.remove(info.name)


class Workspace:
    """A writable snapshot over ``parent_chain`` (None: empty), mounted on a temporary
    directory under ``work_dir`` while the block runs; ``commit()`` stores what changed.
    Leaving the block unmounts it and removes what was not committed."""

    def __init__(self, stores: Stores, work_dir: str, parent_chain: str | None) -> None:
        self._stores = stores
        self._work_dir = work_dir
        self.parent_chain = parent_chain
        self.key = f"{_SNAPSHOT_PREFIX}{os.getpid()}-build-{os.urandom(6).hex()}"
        self.rootfs = ""
        self._mounts: list[Mount] = []
        self._mounted = False
        self._prepared = False
        self._stubs: _MountStubs | None = None
        self.root_fd = -1

    def __enter__(self) -> Workspace:
        os.makedirs(self._work_dir, exist_ok=True)
        self.rootfs = tempfile.mkdtemp(prefix=owned("rootfs"), dir=self._work_dir)
        try:
            self._mounts = self._stores.snapshots.prepare(self.key, self.parent_chain)
            self._prepared = True
            mount_all(self._mounts, self.rootfs)
            self._mounted = True
            self.root_fd = os.open(self.rootfs, _DIR_FLAGS)
        except BaseException:
            self._close()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._close()

    def _close(self) -> None:
        if self.root_fd >= 0:
            os.close(self.root_fd)
            self.root_fd = -1
        if self._mounted:
            unmount(self.rootfs)
            self._mounted = False
        if self._prepared:
            with contextlib.suppress(DockyardError, OSError):
                self._stores.snapshots.remove(self.key)
            self._prepared = False
        with contextlib.suppress(OSError):
            os.rmdir(self.rootfs)

    def stubs(self, targets: Sequence[str]) -> _MountStubs:
        """Note which of the mount ``targets`` the image lacks (see ``_MountStubs``)."""
        self._stubs = _MountStubs(self.root_fd, targets)
        return self._stubs

    def _trees(self) -> tuple[str | None, str, layers.WhiteoutMode]:
        """(the lower whole tree or None, the snapshot's own tree, the diff's kind); on
        overlay, the directories only the mount stubs copied up are taken out first."""
        mount = self._mounts[0]
        if mount.type == "overlay":
            options = dict(o.split("=", 1) for o in mount.options if "=" in o)
            if self._stubs is not None:
                lowers = options["lowerdir"].split(":") if "lowerdir" in options else []
                self._stubs.drop_copied_up(options["upperdir"], lowers)
            return None, options["upperdir"], "overlay"
        if mount.type == "bind" and len(self._mounts) == 1:
            lower = (self._stores.snapshots.layers(self.parent_chain)[0]
                     if self.parent_chain is not None else None)
            return lower, mount.source, "vfs"
        raise NotFound(f"cannot diff a snapshot mounted by {mount.type}")

    def commit(self, epoch: int | None) -> Layer | None:
        """Store what the step changed as a gzip layer and commit the snapshot as its
        ChainID; None when nothing changed. Unmounts the workspace first: nothing may
        write while the diff reads."""
        if self.root_fd >= 0:
            os.close(self.root_fd)
            self.root_fd = -1
        unmount(self.rootfs)
        self._mounted = False
        lower, upper, kind = self._trees()
        if epoch is not None:
            clamp_times(upper, epoch)
        with tempfile.TemporaryFile(dir=self._work_dir) as spool:
            diff_id, _ = layers.diff_layer(lower, upper, spool, kind=kind)
            spool.seek(0)
            if spool.read(512) == bytes(512):
                return None  # no entry: the step changed no file
            spool.seek(0)
            descriptor = _store_gzip(self._stores.content, spool)
        chain = chain_of(self.parent_chain, diff_id)
        try:
            self._stores.snapshots.commit(chain, self.key)
        except Conflict:
            pass  # the same layer was made before: keep that one, ours goes on exit
        else:
            self._prepared = False
        return Layer(descriptor, diff_id, chain)


def _store_gzip(content: ContentStore, tar: BinaryIO) -> Descriptor:
    with content.writer() as writer:
        # mtime 0 and no name: the same tar gives the same blob.
        with gzip.GzipFile(fileobj=writer, mode="wb", mtime=0,  # type: ignore[arg-type]
                           compresslevel=6) as packed:
            shutil.copyfileobj(tar, packed, 1 << 20)
        return Descriptor(media_type=OCI_LAYER_GZIP, size=writer.offset,
                          digest=writer.commit())


def run_process(spec: Spec, runtime_root: str, bundle: str, container_id: str,
                output_fd: int, *, admit: Callable[[str], None]) -> int:
    """Run the container of ``spec`` (its rootfs mounted already) to its end with its
    stdout and stderr on ``output_fd`` and stdin empty; return its exit status.
    ``admit(container_id)`` is called once it is created, before it starts: raising
    there, it never starts. The container is deleted after, whatever happened."""
    from dockyard.oci.runtime import dump
    from dockyard.runtime.container import Runtime, Stdio

    os.makedirs(bundle, exist_ok=True)
    with open(os.path.join(bundle, "config.json"), "wb") as f:
        f.write(dump(spec))
    runtime = Runtime(runtime_root)
    null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with _CREATING:
            runtime.create(container_id, bundle, stdio=Stdio(null, output_fd, output_fd),
                           reap=True)
        admit(container_id)
        runtime.start(container_id)
        return runtime.wait(container_id)
    finally:
        os.close(null)
        with contextlib.suppress(NotFound):
            runtime.delete(container_id, force=True)
        shutil.rmtree(bundle, ignore_errors=True)


def kill(runtime_root: str, container_id: str) -> None:
    """SIGKILL the container ``container_id`` if it still runs (its ``run_process``
    then returns, and deletes it)."""
    import signal

    from dockyard.runtime.container import Runtime

    with contextlib.suppress(DockyardError, OSError):
        Runtime(runtime_root).kill(container_id, signal.SIGKILL, all=True)
