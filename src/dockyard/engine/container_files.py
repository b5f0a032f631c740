"""A container's files: ``cp`` both ways, ``diff``, ``commit`` and ``export``.

Every function takes the ``ContainerService`` of the root. A running container's files
are its snapshot's mount point; a stopped one's snapshot is mounted on a temporary
directory for the length of the call and unmounted after (``_mounted``).

Paths a user gives are hostile (CVE-2018-15664): each is resolved inside the
container's root with ``openat2(RESOLVE_IN_ROOT)``, so ``..`` stops at the root and a
symlink pointing to ``/`` means the container's root, and the files are then read and
written through the fds that resolution gave, never through a path again. Nothing of
the container is loaded or run (CVE-2019-14271): the files are read as data only.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import posixpath
import stat
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, BinaryIO

from dockyard.errors import InvalidArgument, NotFound
from dockyard.linux import syscalls as sc
from dockyard.linux.mountinfo import is_mountpoint
from dockyard.storage import layers

if TYPE_CHECKING:
    from dockyard.engine.containers import ContainerService
    from dockyard.engine.images import ImageInfo

__all__ = ["Change", "PathStat", "changes", "commit", "copy_from", "copy_to", "export",
           "stat_path", "unpack"]

_IN_ROOT = sc.RESOLVE_IN_ROOT | sc.RESOLVE_NO_MAGICLINKS
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


@dataclass(frozen=True)
class PathStat:
    """A path in a container, as Docker's ``X-Docker-Container-Path-Stat`` shows it."""

    name: str
    size: int
    mode: int  # st_mode: the file type bits and the permissions
    mtime: float
    link_target: str  # the symlink's target, "" for anything else

    @property
    def is_dir(self) -> bool:
        """Whether the path is a directory."""
        return stat.S_ISDIR(self.mode)


@dataclass(frozen=True)
class Change:
    """One line of ``docker diff``: kind 0 modified (C), 1 added (A), 2 deleted (D)."""

    path: str
    kind: int

    def __str__(self) -> str:
        return f"{'CAD'[self.kind]} {self.path}"


# --- the container's files, mounted ---------------------------------------------------


@contextlib.contextmanager
def _mounted(containers: ContainerService, cid: str) -> Iterator[str]:
    """The container's root filesystem: its mount point while it is there, else its
    snapshot mounted on a temporary directory until the block ends."""
    from dockyard.storage.snapshots import mount_all, unmount

    rootfs = containers.inspect(cid)["GraphDriver"]["Data"]["MergedDir"]
    if is_mountpoint(rootfs):
        yield rootfs
        return
    target = tempfile.mkdtemp(prefix=f"cp-{cid[:12]}-", dir=containers.runroot)
    try:
        mount_all(containers.images.snapshots.mounts(cid), target)
        try:
            yield target
        finally:
            unmount(target)
    finally:
        os.rmdir(target)


def _not_found(path: str, container: str) -> NotFound:
    return NotFound(f"Could not find the file {path} in container {container}")


def _split_last(path: str) -> tuple[str, str]:
    """``path`` (absolute in the container) as its parent and its last name; "." for the
    root itself. ``..`` is resolved by the kernel, inside the root, not here."""
    trimmed = path.rstrip("/") or "/"
    parent, _, name = trimmed.rpartition("/")
    return parent or "/", name or "."


def _open_parent(root_fd: int, path: str, container: str) -> tuple[int, str]:
    """An fd of the directory holding ``path`` (resolved in the root) and the last name."""
    parent, name = _split_last(path)
    try:
        return sc.openat2(root_fd, parent, _DIR_FLAGS, resolve=_IN_ROOT), name
    except (FileNotFoundError, NotADirectoryError):
        raise _not_found(path, container) from None


def _open_target(root_fd: int, path: str, container: str,
                 follow_link: bool) -> tuple[int, str, os.stat_result]:
    """``path`` as (an fd of its directory, its name there, its lstat). ``follow_link``
    (``cp -L``, or a ``/`` or ``/.`` at the end, as Docker) resolves a symlink at the
    end too, in the root: the fd is then of the directory the link leads to."""
    if follow_link or path.endswith(("/", "/.")) or _split_last(path)[1] in (".", ".."):
        try:
            fd = sc.openat2(root_fd, path, os.O_PATH | os.O_CLOEXEC, resolve=_IN_ROOT)
        except (FileNotFoundError, NotADirectoryError):
            raise _not_found(path, container) from None
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                # A directory is read from its own fd, as the child "." of itself.
                return os.open(sc.fd_path(fd), _DIR_FLAGS), ".", st
            # A file: its real place, as the kernel found it, gives the parent to open
            # (in the root again: a swap in between still cannot lead out).
            real = os.readlink(sc.fd_path(fd))
        finally:
            os.close(fd)
        path = real[len(os.readlink(sc.fd_path(root_fd))):] or "/"
    pfd, name = _open_parent(root_fd, path, container)
    try:
        return pfd, name, os.lstat(name, dir_fd=pfd)
    except FileNotFoundError:
        os.close(pfd)
        raise _not_found(path, container) from None


def _path_stat(pfd: int, name: str, shown: str, st: os.stat_result) -> PathStat:
    target = os.readlink(name, dir_fd=pfd) if stat.S_ISLNK(st.st_mode) else ""
    return PathStat(shown, st.st_size, st.st_mode, st.st_mtime, target)


def stat_path(containers: ContainerService, container: str, path: str, *,
              follow_link: bool = False) -> PathStat:
    """The file at ``path`` in the container (Docker's ``HEAD /containers/{id}/archive``),
    a symlink at the end followed (in the root) only with ``follow_link``; NotFound as
    Docker words it."""
    cid = containers.resolve(container)
    with _mounted(containers, cid) as rootfs:
        root_fd = os.open(rootfs, _DIR_FLAGS)
        try:
            pfd, name, st = _open_target(root_fd, path, container, follow_link)
            try:
                return _path_stat(pfd, name, posixpath.basename(path.rstrip("/")) or "/", st)
            finally:
                os.close(pfd)
        finally:
            os.close(root_fd)


def copy_from(containers: ContainerService, container: str, path: str, out: BinaryIO, *,
              follow_link: bool = False) -> PathStat:
    """Write the file or tree at ``path`` in the container to ``out`` as a tar (Docker's
    ``GET /containers/{id}/archive``); return what ``path`` is.

    The tar's entries are named after the last name of ``path`` (``hostname``,
    ``etc/passwd`` for ``/etc``); for a path ending in ``/.`` they are ``.`` and the
    directory's children under it (``./passwd``), Docker's "contents of". Owners,
    modes, mtimes, xattrs and hard links are kept. ``follow_link`` (``cp -L``) copies what a symlink
    at the end of ``path`` points to, resolved in the container.
    """
    cid = containers.resolve(container)
    with _mounted(containers, cid) as rootfs:
        root_fd = os.open(rootfs, _DIR_FLAGS)
        try:
            pfd, name, st = _open_target(root_fd, path, container, follow_link)
        finally:
            os.close(root_fd)
        try:
            base = "." if path.endswith("/.") else (
                posixpath.basename(path.rstrip("/")) or "/")
            if base in ("/", ".."):
                base = "."
            with tarfile.open(fileobj=out, mode="w|",  # type: ignore[call-overload]
                              format=tarfile.PAX_FORMAT, encoding="utf-8",
                              errors="surrogateescape") as tf:
                _write_tree(tf, pfd, name, base, st)
            containers.record("archive-path", cid)
            return _path_stat(pfd, name, base, st)
        finally:
            os.close(pfd)


def _write_tree(tf: tarfile.TarFile, pfd: int, name: str, base: str,
                st: os.stat_result) -> None:
    """``name`` in ``pfd`` and, for a directory, all below it, as entries under ``base``:
    ``diff_layer``'s writer, given no lower tree, writes every file it walks."""
    from dockyard.storage import tree

    differ = layers.Differ(tf, "vfs")
    differ.emit(pfd, name, base, st)
    if stat.S_ISDIR(st.st_mode):
        sub = tree.open_dir(pfd, name)
        try:
            differ.walk_compare(None, sub, base + "/")
        finally:
            os.close(sub)


def copy_to(containers: ContainerService, container: str, path: str, stream: BinaryIO, *,
            keep_owner: bool = False) -> None:
    """Unpack the tar ``stream`` into the directory ``path`` of the container (Docker's
    ``PUT /containers/{id}/archive``); the directory must exist.

    ``path`` is resolved in the container's root; the entries are then written beneath
    that directory only (``unpack``). Without ``keep_owner`` (``cp -a``) every file
    belongs to the container's root (0:0), as with Docker.
    """
    cid = containers.resolve(container)
    with _mounted(containers, cid) as rootfs:
        root_fd = os.open(rootfs, _DIR_FLAGS)
        try:
            try:
                dir_fd = sc.openat2(root_fd, path, _DIR_FLAGS, resolve=_IN_ROOT)
            except FileNotFoundError:
                raise _not_found(path, container) from None
            except NotADirectoryError:
                raise InvalidArgument(f"extraction point is not a directory: {path}") from None
        finally:
            os.close(root_fd)
        try:
            # The magic link of the fd: the directory resolved once, above.
            unpack(stream, sc.fd_path(dir_fd), keep_owner=keep_owner)
        finally:
            os.close(dir_fd)
    containers.record("extract-to-dir", cid)


def unpack(stream: BinaryIO, directory: str, *, keep_owner: bool,
           rename: tuple[str, str] | None = None) -> None:
    """Unpack the tar ``stream`` of a copy into ``directory``, every entry beneath it
    (``apply_layer``'s rules: a name with ``..``, an absolute one or one through a
    symlink that leaves it is refused, nothing is written outside).

    The owners become 0:0 unless ``keep_owner``; ``rename`` (old, new) gives the first
    component of each name another one (``cp c:/etc/hostname ./name``). A name starting
    with ``.wh.`` is refused: a copy must never delete anything, as a layer's whiteout
    would.
    """
    with tempfile.TemporaryFile() as spool:
        _copy_entries(stream, spool, keep_owner, rename)
        spool.seek(0)
        layers.apply_layer(spool, directory, whiteout_mode="vfs")


def _renamed(name: str, rename: tuple[str, str] | None) -> str:
    if rename is None:
        return name
    first, sep, rest = name.partition("/")
    return rename[1] + sep + rest if first == rename[0] else name


def _copy_entries(stream: BinaryIO, out: BinaryIO, keep_owner: bool,
                  rename: tuple[str, str] | None) -> None:
    """The tar ``stream`` written again to ``out`` as ``unpack`` wants it."""
    try:
        with tarfile.open(fileobj=stream, mode="r|*",  # type: ignore[call-overload]
                          encoding="utf-8", errors="surrogateescape") as source, \
                tarfile.open(fileobj=out, mode="w|",  # type: ignore[call-overload]
                             format=tarfile.PAX_FORMAT, encoding="utf-8",
                             errors="surrogateescape") as target:
            for member in source:
                if posixpath.basename(member.name.rstrip("/")).startswith(
                        layers.WHITEOUT_PREFIX):
                    raise InvalidArgument(f"cannot copy {member.name!r}: names starting "
                                          f"with {layers.WHITEOUT_PREFIX} are reserved")
                member.name = _renamed(member.name, rename)
                if member.islnk():
                    member.linkname = _renamed(member.linkname, rename)
                if not keep_owner:
                    member.uid = member.gid = 0
                    member.uname = member.gname = ""
                target.addfile(member, source.extractfile(member) if member.isreg() else None)
    except (tarfile.TarError, EOFError, gzip.BadGzipFile) as e:
        raise InvalidArgument(f"the content to copy is not a valid tar: {e}") from None


# --- diff, export, commit -------------------------------------------------------------


class _Lister(layers.Differ):
    """``diff_layer``'s walker, noting each change instead of writing it: a file of the
    container's tree is added (A) or changed (C) as the image has it or not, a whiteout
    (or, compared, a file gone) is a deletion (D).

    ``lower_fds``: the image's layers, topmost first, for the overlay walk of the upper
    layer; ``lower_root``: the image's whole tree, for the vfs comparison.
    """

    def __init__(self, lower_fds: Sequence[int] = (), lower_root: int | None = None) -> None:
        super().__init__(None, "vfs")  # type: ignore[arg-type]  # nothing is written
        self.found: list[Change] = []
        self._layers = layers.Applier(-1, "overlay", lower_fds)
        self._lower_root = lower_root

    def emit(self, dir_fd: int, name: str, rel: str, st: os.stat_result) -> None:
        self.pending = []  # the unchanged parents the tar writer would list first
        self.found.append(Change("/" + rel, 0 if self._in_image(rel) else 1))

    def marker(self, rel: str) -> None:
        self.pending = []
        parent, _, name = rel.rpartition("/")
        if name == layers.WHITEOUT_OPAQUE:
            return  # the directory itself is listed, as changed
        self.found.append(Change(posixpath.join("/", parent,
                                                name[len(layers.WHITEOUT_PREFIX):]), 2))

    def _in_image(self, rel: str) -> bool:
        if self._lower_root is not None:
            # No symlink followed: where the image had one, the container's directory
            # replaced it, and what is under it is new.
            try:
                os.close(sc.openat2(self._lower_root, rel, os.O_PATH | os.O_NOFOLLOW,
                                    resolve=sc.RESOLVE_BENEATH | sc.RESOLVE_NO_SYMLINKS))
            except OSError:
                return False
            return True
        if not self._layers.lower_fds:
            return False
        below = self._layers.lower_lookup(rel.split("/"), rel)
        if below is None:
            return False
        os.close(below[0])
        return True


def _own_tree(containers: ContainerService, cid: str) -> str:
    """The directory of the container's own files: the overlay upperdir, or the vfs
    snapshot's whole tree (a bind mount's source)."""
    for mount in containers.images.snapshots.mounts(cid):
        for option in mount.options:
            if option.startswith("upperdir="):
                return option.partition("=")[2]
        if mount.type == "bind":
            return mount.source
    raise NotFound(f"the snapshot of container {cid} has no directory of its own")


def _image_layers(containers: ContainerService, cid: str) -> list[str]:
    """The directories of the image's layers, topmost first (one whole tree for vfs)."""
    snapshots = containers.images.snapshots
    parent = snapshots.stat(cid).parent
    return snapshots.layers(parent) if parent is not None else []


def changes(containers: ContainerService, container: str) -> list[Change]:
    """What the container changed in its image's files (``docker diff``), sorted by path:
    overlay reads its upper layer, vfs compares its tree with the image's."""
    cid = containers.resolve(container)
    lowers = _image_layers(containers, cid)
    overlay = containers.images.snapshots.driver == "overlay"
    lower_fds = [os.open(p, _DIR_FLAGS) for p in (lowers if overlay else lowers[:1])]
    upper_fd = os.open(_own_tree(containers, cid), _DIR_FLAGS)
    try:
        if overlay:
            lister = _Lister(lower_fds)
            lister.walk_upper(upper_fd, "")
        else:
            image_root = lower_fds[0] if lower_fds else None
            lister = _Lister(lower_root=image_root)
            lister.walk_compare(image_root, upper_fd, "")
    finally:
        for fd in [upper_fd, *lower_fds]:
            os.close(fd)
    # The runtime makes the targets of the container's mounts (/etc/hosts, /dev...) in
    # its layer; they are the engine's, not changes of the container (Docker keeps them
    # in an init layer of their own).
    points = _mount_points(containers, cid)
    return sorted((c for c in lister.found if not (c.kind == 1 and c.path in points)),
                  key=lambda c: c.path)


def _mount_points(containers: ContainerService, cid: str) -> set[str]:
    """The destinations of the mounts in the container's OCI spec."""
    from dockyard.oci.runtime import load_spec

    bundle = os.path.dirname(containers.inspect(cid)["GraphDriver"]["Data"]["MergedDir"])
    try:
        with open(os.path.join(bundle, "config.json"), "rb") as f:
            spec = load_spec(f.read())
    except FileNotFoundError:
        return set()
    return {posixpath.normpath(m.destination) for m in spec.mounts or ()}


def export(containers: ContainerService, container: str, out: BinaryIO) -> None:
    """Write the container's whole filesystem to ``out`` as a tar (``docker export``)."""
    cid = containers.resolve(container)
    with _mounted(containers, cid) as rootfs:
        layers.diff_layer(None, rootfs, out, kind="vfs")
    containers.record("export", cid)


@contextlib.contextmanager
def _paused(containers: ContainerService, cid: str, pause: bool) -> Iterator[None]:
    """The container frozen for the block, when asked and running (``commit -p``)."""
    if not pause or containers.state(cid) != "running":
        yield
        return
    runtime = containers.runtime_of(cid)
    runtime.pause(cid)
    try:
        yield
    finally:
        runtime.resume(cid)


def commit(containers: ContainerService, container: str, reference: str | None = None, *,
           changes: Sequence[str] = (), message: str | None = None,
           author: str | None = None, pause: bool = True) -> ImageInfo:
    """A new image of the container (``docker commit``): its image's layers and one more
    with what it changed (gzip), its config with Dockerfile-style ``changes`` over it,
    and a history entry; tagged ``reference`` when given. ``pause`` freezes a running
    container while its changes are read."""
    import msgspec

    from dockyard.images.building import image_config, store_image
    from dockyard.images.reference import parse as parse_reference
    from dockyard.images.rootfs_tar import apply_changes
    from dockyard.oci.image import (
        OCI_LAYER_GZIP,
        ContainerConfig,
        Descriptor,
        History,
        Platform,
        load_config,
        load_manifest,
    )

    cid = containers.resolve(container)
    info = containers.inspect(cid)
    images = containers.images
    shown = info["Config"]
    run_config = msgspec.convert(
        {key: shown.get(key) for key in ("User", "ExposedPorts", "Env", "Entrypoint", "Cmd",
                                         "Volumes", "WorkingDir", "Labels", "StopSignal")
         if shown.get(key)}, ContainerConfig)
    # Checked before anything is written, so a bad change stores nothing.
    new_config = apply_changes(run_config, changes)
    with images.content.open(info["Image"]) as blob:
        base = load_config(blob.read())
    row = containers.db.query("SELECT manifest_digest FROM images WHERE id = ?",
                              (info["Image"],))
    with images.content.open(row[0]["manifest_digest"]) as blob:
        base_layers = list(load_manifest(blob.read()).layers)
    lowers = _image_layers(containers, cid)
    driver = images.snapshots.driver
    with _paused(containers, cid, pause), images.content.writer() as writer:
        # mtime 0: the same change gives the same blob.
        with gzip.GzipFile(fileobj=writer, mode="wb", mtime=0) as packed:  # type: ignore[arg-type]
            diff_id, _ = layers.diff_layer(lowers[0] if lowers and driver == "vfs" else None,
                                           _own_tree(containers, cid), packed, kind=driver)
        layer = Descriptor(media_type=OCI_LAYER_GZIP, size=writer.offset,
                           digest=writer.commit())
    created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    history = [*(base.history or []), History(
        created=created, author=author or None, comment=message or None,
        created_by=" ".join(shown.get("Cmd") or []) or None)]
    config = image_config(Platform(architecture=base.architecture, os=base.os,
                                   variant=base.variant), created, new_config,
                          [*base.rootfs.diff_ids, diff_id], history)
    config.author = author or None
    descriptor, config_digest = store_image(images.content, config, [*base_layers, layer])
    with images.content.open(descriptor.digest) as blob:
        manifest_data = blob.read()
    with images.content.open(config_digest) as blob:
        config_data = blob.read()
    image = images.add_image(manifest_data, config_data, [reference] if reference else [])
    containers.record("commit", cid, comment=message or "", imageID=image.id,
                      imageRef=parse_reference(reference).familiar() if reference else "")
    return image

