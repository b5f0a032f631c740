"""Layer tars: applying one to a directory, and making one from a change.

A layer is a tar (plain, gzip or zstd) whose entries are added over the layers below,
with two kinds of whiteout entries (the OCI image-spec's, from aufs)::

    dir/.wh.NAME        NAME was deleted
    dir/.wh..wh..opq    dir is opaque: what the layers below have in it is hidden

``apply_layer`` writes them in one of two forms. ``vfs``: the deletions are done, in a
directory that already holds the layers below (a vfs snapshot, or a mounted overlay).
``overlay``: the directory is an overlayfs upperdir of its own, and they become what
overlayfs reads: a 0:0 character device for a deleted name, ``trusted.overlay.opaque=y``
on an opaque directory.

Every entry name is hostile. Names are taken apart into components by hand (an
absolute name or a ``..`` is refused), and the directory an entry goes into is opened
with ``openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`` relative to the root: the
kernel follows a symlink of the tree only while it stays inside it, and fails with
EXDEV for an absolute symlink or a ``..`` that climbs out, and ELOOP for a loop. The
last component is then made with ``*at`` calls on that directory fd, never following
it. We use RESOLVE_BENEATH rather than RESOLVE_IN_ROOT on purpose: IN_ROOT would
silently reinterpret ``evil -> /`` as the root itself, and an image that writes
through such a link is malformed or malicious, so it is refused, named.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import os
import stat
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO, Literal

from dockyard.errors import InvalidArgument
from dockyard.linux import syscalls as sc
from dockyard.storage import tree
from dockyard.storage.streams import HashingReader, HashingWriter, decompressed

WhiteoutMode = Literal["overlay", "vfs"]

WHITEOUT_PREFIX = ".wh."
WHITEOUT_META_PREFIX = ".wh..wh."
WHITEOUT_OPAQUE = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
_XATTR_PAX = "SCHILY.xattr."
_CHUNK = 1 << 20
_BENEATH = sc.RESOLVE_BENEATH | sc.RESOLVE_NO_MAGICLINKS
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY


class LowerLayersNeeded(Exception):
    """``apply_layer_apart`` met an entry it cannot write without the layers below: a
    hard link whose target only they have, or the opaque marker of a directory the tar
    does not list. What it wrote is incomplete: apply the layer with them instead."""


@dataclass(frozen=True)
class Assumptions:
    """What ``apply_layer_apart`` took for granted about the layers below.

    A directory that an entry needs and the tar does not list is, in the overlay form,
    copied up from the layers below when they have it, else made 0755 by the applier.
    Apart from them it is made 0755, and ``directories`` names each (as a path in the
    root, with whether a later entry listed it after all, which then gave its owner and
    mode). Once the layers below are there, ``hold`` tells whether that made the same.
    """

    directories: dict[str, bool]

    def hold(self, root: str, lowers: Sequence[str]) -> bool:
        """Whether ``root``, unpacked apart, is what ``apply_layer`` would have made over
        ``lowers`` (topmost first): every assumed directory either is not a directory
        there or has the owner, mode (unless the tar listed it) and xattrs it has here.
        False for a lower symlink, which the overlay form refuses, and for a lower path
        it refuses: applied over them, the layer fails as it should."""
        if not self.directories:
            return True
        root_fd = os.open(root, _DIR_FLAGS | os.O_CLOEXEC)
        lower_fds = [os.open(p, _DIR_FLAGS | os.O_CLOEXEC) for p in lowers]
        lookup = Applier(root_fd, "overlay", lower_fds)
        try:
            return all(self._holds(lookup, rel, listed)
                       for rel, listed in self.directories.items())
        except InvalidArgument:
            return False
        finally:
            for fd in [root_fd, *lower_fds]:
                os.close(fd)

    @staticmethod
    def _holds(lookup: Applier, rel: str, listed: bool) -> bool:
        try:
            made = sc.openat2(lookup.root_fd, rel, _DIR_FLAGS | os.O_NOFOLLOW,
                              resolve=_BENEATH)
        except OSError:
            return True  # removed or replaced by a later entry: nothing of it is left
        try:
            made_st = os.fstat(made)
            made_xattrs = tree.read_xattrs(made, ".", tree.not_overlay_xattr)
        finally:
            os.close(made)
        below = lookup.lower_lookup(rel.split("/"), rel)
        if below is None:
            return True
        lower_dir, st = below
        try:
            if stat.S_ISLNK(st.st_mode):
                return False
            if not stat.S_ISDIR(st.st_mode):
                return True  # the applier makes a 0755 directory over it too
            xattrs = tree.read_xattrs(lower_dir, rel.rpartition("/")[2],
                                      tree.not_overlay_xattr)
        finally:
            os.close(lower_dir)
        # A copy-up's xattrs stay under those of a later entry listing it: each key of
        # the lower one must be here (the values are then the tar's either way).
        if not xattrs.keys() <= made_xattrs.keys():
            return False
        return listed or (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (
            stat.S_IMODE(made_st.st_mode), made_st.st_uid, made_st.st_gid)


def _split(name: str, what: str) -> list[str]:
    """The components of an entry name (or a hard link's target); hostile ones refused."""
    if name.startswith("/"):
        raise InvalidArgument(f"layer {what} {name!r} is an absolute path; the layer is "
                              "refused")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InvalidArgument(f"layer {what} {name!r} climbs out with '..'; the layer is "
                              "refused")
    return parts


def _refused(name: str, error: OSError) -> InvalidArgument:
    reasons = {
        errno.EXDEV: "resolves outside the root (an absolute symlink or '..' on its path)",
        errno.ELOOP: "goes through a symlink loop",
        errno.ENOTDIR: "goes through something that is not a directory",
        errno.EPERM: "is not allowed (a hard link to a directory?)",
    }
    why = reasons.get(error.errno or 0, os.strerror(error.errno or 0))
    return InvalidArgument(f"layer entry {name!r} {why}; the layer is refused")


def _is_whiteout_device(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


class Applier:
    """The state of one ``apply_layer``: the root fd, the paths this layer made, the
    directories whose mtimes wait for their children, a one-entry parent cache; apart
    from the layers below (``lower_fds`` None), the directories assumed of them."""

    def __init__(self, root_fd: int, mode: WhiteoutMode,
                 lower_fds: Sequence[int] | None) -> None:
        self.root_fd = root_fd
        self.mode = mode
        self.lower_fds = lower_fds
        self.assumed: dict[str, bool] = {}
        self.created: set[str] = set()
        self.dir_mtimes: list[tuple[str, int]] = []
        # Entries come grouped by directory: keep the last parent open. It is dropped as
        # soon as an entry replaces it or any directory above it.
        self._cached: tuple[str, int] | None = None

    def close(self) -> None:
        self._drop_cache()

    def _drop_cache(self) -> None:
        if self._cached is not None:
            os.close(self._cached[1])
            self._cached = None

    def _touches_cache(self, rel: str) -> None:
        if self._cached is not None and (self._cached[0] == rel or
                                         self._cached[0].startswith(rel + "/")):
            self._drop_cache()

    def parent(self, parts: list[str], entry: str, *, create: bool) -> int | None:
        """An fd of the directory ``parts`` (borrowed: do not close), made if asked and
        missing; None if it is missing and not to be made."""
        rel = "/".join(parts)
        if self._cached is not None and self._cached[0] == rel:
            return self._cached[1]
        try:
            fd = sc.openat2(self.root_fd, rel or ".", _DIR_FLAGS, resolve=_BENEATH)
        except FileNotFoundError:
            if not create:
                return None
            fd = self._make_dirs(parts, entry)
        except OSError as e:
            raise _refused(entry, e) from None
        self._drop_cache()
        self._cached = (rel, fd)
        return fd

    def _make_dirs(self, parts: list[str], entry: str) -> int:
        """Make the missing directories of ``parts``, one component at a time."""
        fd = os.dup(self.root_fd)
        try:
            for i, name in enumerate(parts):
                try:
                    nfd = sc.openat2(self.root_fd, "/".join(parts[: i + 1]), _DIR_FLAGS,
                                     resolve=_BENEATH)
                except FileNotFoundError:
                    self._make_dir(fd, parts[: i + 1], entry)
                    nfd = tree.open_dir(fd, name)
                except OSError as e:
                    raise _refused(entry, e) from None
                os.close(fd)
                fd = nfd
            return fd
        except BaseException:
            os.close(fd)
            raise

    def _make_dir(self, parent_fd: int, parts: list[str], entry: str) -> None:
        """A directory the tar did not list: as in the layers below when there is one (the
        overlay form must copy it up), else root's 0755."""
        name = parts[-1]
        if self.lower_fds is None:
            # Apart from the layers below: as if they did not have it, to be checked
            # (``Assumptions.hold``) once they are there. Its mtime is the same either
            # way: that of the child that made it needed, made next.
            self.assumed["/".join(parts)] = False
            os.mkdir(name, 0o755, dir_fd=parent_fd)
            return
        below = self.lower_lookup(parts, entry)
        if below is not None and stat.S_ISDIR(below[1].st_mode):
            lower_dir, st = below
            try:
                made = tree.copy_node(lower_dir, name, st, parent_fd, name,
                                      tree.not_overlay_xattr)
            finally:
                os.close(lower_dir)
            assert made is not None
            fd, meta = made
            try:
                tree.set_meta(parent_fd, name, fd, meta, symlink=False)
            finally:
                os.close(fd)
            return
        if below is not None:
            os.close(below[0])
            if stat.S_ISLNK(below[1].st_mode):
                raise InvalidArgument(
                    f"layer entry {entry!r} goes through a symlink of a lower layer, which "
                    "the overlay form cannot follow; apply it to a mounted snapshot instead")
        os.mkdir(name, 0o755, dir_fd=parent_fd)

    def lower_lookup(self, parts: list[str], entry: str) -> tuple[int, os.stat_result] | None:
        """The topmost lower layer that has ``parts``, as (an fd of its parent directory
        there, which the caller closes; its lstat); None if no layer shows it."""
        if self.lower_fds is None:
            raise LowerLayersNeeded(entry)  # only a copy-up gets here apart from them
        *above, name = parts
        for lower in self.lower_fds:
            try:
                pfd = sc.openat2(lower, "/".join(above) or ".", _DIR_FLAGS, resolve=_BENEATH)
            except FileNotFoundError:
                continue
            except OSError as e:
                raise _refused(entry, e) from None
            try:
                st = os.lstat(name, dir_fd=pfd)
            except FileNotFoundError:
                opaque = tree.read_xattrs(pfd, ".", lambda k: k == OPAQUE_XATTR)
                os.close(pfd)
                if opaque:
                    return None
                continue
            if _is_whiteout_device(st):
                os.close(pfd)
                return None
            return pfd, st
        return None

    def whiteout(self, parts: list[str], entry: str) -> None:
        """Apply ``.wh.NAME`` or ``.wh..wh..opq``, in the chosen form."""
        *above, marker = parts
        overlay = self.mode == "overlay"
        if marker.startswith(WHITEOUT_META_PREFIX):
            if marker != WHITEOUT_OPAQUE:
                return  # aufs bookkeeping (.wh..wh.plnk, .wh..wh.aufs): nothing to do
            # Apart from the layers below, an opaque directory the tar does not list would
            # keep the mtime of its making, where its copy-up has theirs: not guessed.
            apart = self.lower_fds is None
            pfd = self.parent(above, entry, create=overlay and not apart)
            if pfd is None:
                if overlay and apart:
                    raise LowerLayersNeeded(entry)
                return
            if overlay:
                os.setxattr(pfd, OPAQUE_XATTR, b"y")
                return
            prefix = "".join(p + "/" for p in above)
            for child in os.listdir(pfd):
                if prefix + child not in self.created:
                    self._touches_cache(prefix + child)
                    tree.remove(pfd, child)
            return
        name = marker[len(WHITEOUT_PREFIX):]
        if name in ("", ".", ".."):
            raise InvalidArgument(f"layer entry {entry!r} is not a valid whiteout; the "
                                  "layer is refused")
        self._touches_cache("/".join([*above, name]))
        pfd = self.parent(above, entry, create=overlay)
        if pfd is None:
            return
        tree.remove(pfd, name)
        if overlay:
            os.mknod(name, stat.S_IFCHR | 0o600, os.makedev(0, 0), dir_fd=pfd)

    def entry(self, tf: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        """Apply one entry of the tar."""
        parts = _split(member.name, "entry")
        if not parts:
            return  # the root itself: its metadata belongs to whoever made the root
        if parts[-1].startswith(WHITEOUT_PREFIX):
            self.whiteout(parts, member.name)
            return
        rel = "/".join(parts)
        name = parts[-1]
        self._touches_cache(rel)
        if rel in self.assumed:
            self.assumed[rel] = True  # listed after all: its owner and mode are the tar's
        link_target: list[str] = []
        if member.islnk():
            link_target = _split(member.linkname, f"hard link {member.name!r} to")
            if self.mode == "overlay":
                # Before this entry's parent is opened: a copy-up opens parents of its own,
                # and the parent fd below is only borrowed from the cache.
                self._copy_up(link_target, member.name)
        pfd = self.parent(parts[:-1], member.name, create=True)
        assert pfd is not None
        self._clear(pfd, name, keep_dir=member.isdir())
        self.created.add(rel)
        meta = tree.Meta(member.mode & 0o7777, member.uid, member.gid,
                         int(member.mtime * 1_000_000_000), _xattrs(member))
        fd: int | None = None
        try:
            if member.isdir():
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, 0o700, dir_fd=pfd)
                fd = tree.open_dir(pfd, name)
                self.dir_mtimes.append((rel, meta.mtime_ns))
            elif member.isreg():
                fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW |
                             os.O_CLOEXEC, 0o600, dir_fd=pfd)
                _write_data(tf, member, fd)
            elif member.issym():
                os.symlink(member.linkname, name, dir_fd=pfd)
            elif member.islnk():
                self._hardlink(member, link_target, pfd, name)
                return  # a hard link shares its target's metadata: nothing to set
            elif member.ischr() or member.isblk() or member.isfifo():
                kind = (stat.S_IFCHR if member.ischr() else
                        stat.S_IFBLK if member.isblk() else stat.S_IFIFO)
                os.mknod(name, kind | 0o600, os.makedev(member.devmajor, member.devminor),
                         dir_fd=pfd)
            else:
                raise InvalidArgument(f"layer entry {member.name!r} has an unsupported type "
                                      f"{member.type!r}; the layer is refused")
            tree.set_meta(pfd, name, fd, meta, symlink=member.issym())
        finally:
            if fd is not None:
                os.close(fd)

    def _clear(self, pfd: int, name: str, *, keep_dir: bool) -> None:
        """Make room for a new entry: an existing directory stays for a directory entry
        (its content merges), anything else goes."""
        try:
            st = os.lstat(name, dir_fd=pfd)
        except FileNotFoundError:
            return
        if not (keep_dir and stat.S_ISDIR(st.st_mode)):
            tree.remove(pfd, name)

    def _hardlink(self, member: tarfile.TarInfo, target: list[str], pfd: int,
                  name: str) -> None:
        if not target:
            raise InvalidArgument(f"layer entry {member.name!r} is a hard link to the root; "
                                  "the layer is refused")
        try:
            # O_PATH|O_NOFOLLOW: the target itself, even a symlink, resolved beneath the
            # root; linking its /proc magic link cannot be raced into pointing elsewhere.
            tfd = sc.openat2(self.root_fd, "/".join(target), os.O_PATH | os.O_NOFOLLOW,
                             resolve=_BENEATH)
        except FileNotFoundError:
            raise InvalidArgument(f"layer entry {member.name!r} is a hard link to "
                                  f"{member.linkname!r}, which does not exist; the layer is "
                                  "refused") from None
        except OSError as e:
            raise _refused(member.name, e) from None
        try:
            os.link(sc.fd_path(tfd), name, dst_dir_fd=pfd, follow_symlinks=True)
        except OSError as e:
            raise _refused(member.name, e) from None
        finally:
            os.close(tfd)

    def _copy_up(self, parts: list[str], entry: str) -> None:
        """In the overlay form a hard link's target may be in a lower layer only: copy it
        into this one first, as overlayfs's own copy-up would."""
        if not parts:
            return
        try:
            os.close(sc.openat2(self.root_fd, "/".join(parts), os.O_PATH | os.O_NOFOLLOW,
                                resolve=_BENEATH))
        except FileNotFoundError:
            pass
        except OSError as e:
            raise _refused(entry, e) from None
        else:
            return
        below = self.lower_lookup(parts, entry)
        if below is None:
            return
        lower_dir, st = below
        try:
            if stat.S_ISDIR(st.st_mode):
                raise InvalidArgument(f"layer entry {entry!r} is a hard link to a "
                                      "directory; the layer is refused")
            pfd = self.parent(parts[:-1], entry, create=True)
            assert pfd is not None
            tree.copy_node(lower_dir, parts[-1], st, pfd, parts[-1], tree.not_overlay_xattr)
        finally:
            os.close(lower_dir)

    def finish(self) -> None:
        """Set the directories' mtimes, now that their children are made."""
        self._drop_cache()
        for rel, mtime_ns in reversed(self.dir_mtimes):
            try:
                fd = sc.openat2(self.root_fd, rel, _DIR_FLAGS | os.O_NOFOLLOW,
                                resolve=_BENEATH)
            except OSError:
                continue  # replaced or removed by a later entry of the layer
            try:
                os.utime(fd, ns=(mtime_ns, mtime_ns))
            finally:
                os.close(fd)


def _xattrs(member: tarfile.TarInfo) -> dict[str, bytes]:
    # tarfile decodes PAX values with surrogateescape: encoding back restores the raw
    # bytes of a binary value such as security.capability. overlayfs's own attributes
    # are never taken from a layer: a redirect or metacopy could reach other layers.
    return {key[len(_XATTR_PAX):]: value.encode("utf-8", "surrogateescape")
            for key, value in member.pax_headers.items()
            if key.startswith(_XATTR_PAX)
            and not key[len(_XATTR_PAX):].startswith(tree.OVERLAY_XATTR_PREFIX)}


def _write_data(tf: tarfile.TarFile, member: tarfile.TarInfo, fd: int) -> None:
    source = tf.extractfile(member)
    assert source is not None
    while chunk := source.read(_CHUNK):
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view):]


def apply_layer(stream: BinaryIO, root: str, *, media_type: str | None = None,
                whiteout_mode: WhiteoutMode = "vfs",
                lowers: Sequence[str] = ()) -> tuple[str, int]:
    """Unpack a layer into ``root``; return the diff ID (sha256 of the uncompressed tar)
    and the uncompressed size.

    The stream is read once, never held whole. Compression is taken from ``media_type``
    when given, else from the magic bytes (gzip, zstd, else a plain tar). In the
    ``overlay`` form, ``lowers`` are the directories of the layers below, topmost first:
    directories and hard-link targets that the layer needs from them are copied up.
    A hostile entry raises ``InvalidArgument`` naming it, before anything is written
    outside ``root``; what the layer wrote inside ``root`` before it stays.
    """
    digest, size, _ = _apply(stream, root, media_type, whiteout_mode, lowers)
    return digest, size


def apply_layer_apart(stream: BinaryIO, root: str, *,
                      media_type: str | None = None) -> tuple[str, int, Assumptions]:
    """``apply_layer`` in the overlay form before the layers below are there, so that
    layers can be unpacked at once; return the diff ID, the size, and what was assumed
    of them, for ``Assumptions.hold`` to check once they are there.

    Only two things in a layer depend on the layers below: a directory the tar does
    not list (made as if they lacked it, and assumed) and a hard link to a file of
    theirs (``LowerLayersNeeded``, as is an unlisted opaque directory). Every other
    entry is written as ``apply_layer`` writes it.
    """
    return _apply(stream, root, media_type, "overlay", None)


def _apply(stream: BinaryIO, root: str, media_type: str | None, whiteout_mode: WhiteoutMode,
           lowers: Sequence[str] | None) -> tuple[str, int, Assumptions]:
    if whiteout_mode not in ("overlay", "vfs"):
        raise InvalidArgument(f"unknown whiteout mode {whiteout_mode!r}: use overlay or vfs")
    reader = HashingReader(decompressed(stream, media_type))
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    lower_fds = [os.open(p, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                 for p in lowers or ()]
    applier = Applier(root_fd, whiteout_mode, None if lowers is None else lower_fds)
    try:
        with tarfile.open(fileobj=reader, mode="r|",  # type: ignore[call-overload]
                          encoding="utf-8", errors="surrogateescape") as tf:
            for member in tf:
                applier.entry(tf, member)
        applier.finish()
        reader.drain()
    except (tarfile.TarError, EOFError, gzip.BadGzipFile) as e:
        raise InvalidArgument(f"layer is not a valid tar: {e}") from None
    finally:
        applier.close()
        for fd in [root_fd, *lower_fds]:
            os.close(fd)
    return reader.digest, reader.size, Assumptions(applier.assumed)


class Differ:
    """The state of one ``diff_layer``: the tar, and the files written so far by inode
    (the second name of a file becomes a hard link)."""

    def __init__(self, tf: tarfile.TarFile, kind: WhiteoutMode) -> None:
        self.tf = tf
        self.kind = kind
        self.links: dict[tuple[int, int], str] = {}
        # Unchanged directories on the path to the current one, written only if something
        # below them is: a tar must list a file's parents for its modes to be kept.
        # Each is (its parent's fd, its name, its path in the tar, its lstat).
        self.pending: list[tuple[int, str, str, os.stat_result]] = []

    def emit(self, dir_fd: int, name: str, rel: str, st: os.stat_result) -> None:
        """Write one file of the tree as a tar entry."""
        self._flush_pending()
        info = tarfile.TarInfo(rel)
        info.mode = stat.S_IMODE(st.st_mode)
        info.uid, info.gid = st.st_uid, st.st_gid
        info.uname = info.gname = ""
        info.mtime = st.st_mtime_ns // 1_000_000_000
        info.pax_headers = {
            _XATTR_PAX + key: value.decode("utf-8", "surrogateescape")
            for key, value in tree.read_xattrs(dir_fd, name, tree.not_overlay_xattr).items()}
        kind = stat.S_IFMT(st.st_mode)
        if kind == stat.S_IFREG and st.st_nlink > 1:
            first = self.links.setdefault((st.st_dev, st.st_ino), rel)
            if first != rel:
                info.type, info.linkname = tarfile.LNKTYPE, first
                self.tf.addfile(info)
                return
        if kind == stat.S_IFREG:
            info.size = st.st_size
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
            with os.fdopen(fd, "rb") as data:
                self.tf.addfile(info, data)
            return
        if kind == stat.S_IFDIR:
            info.type = tarfile.DIRTYPE
        elif kind == stat.S_IFLNK:
            info.type, info.linkname = tarfile.SYMTYPE, os.readlink(name, dir_fd=dir_fd)
        elif kind in (stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO):
            info.type = {stat.S_IFCHR: tarfile.CHRTYPE, stat.S_IFBLK: tarfile.BLKTYPE,
                         stat.S_IFIFO: tarfile.FIFOTYPE}[kind]
            info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
        else:
            return  # sockets are not carried by layers
        self.tf.addfile(info)

    def marker(self, rel: str) -> None:
        """Write a whiteout entry."""
        self._flush_pending()
        info = tarfile.TarInfo(rel)
        info.mtime = 0
        info.uname = info.gname = ""
        self.tf.addfile(info)

    def _flush_pending(self) -> None:
        pending, self.pending = self.pending, []
        for dir_fd, name, rel, st in pending:
            self.emit(dir_fd, name, rel, st)

    def walk_upper(self, dir_fd: int, prefix: str) -> None:
        """The overlay form: everything in an upperdir is a change."""
        for entry in sorted(os.scandir(dir_fd), key=lambda e: e.name):
            rel = prefix + entry.name
            st = entry.stat(follow_symlinks=False)
            if _is_whiteout_device(st):
                self.marker(prefix + WHITEOUT_PREFIX + entry.name)
                continue
            self.emit(dir_fd, entry.name, rel, st)
            if stat.S_ISDIR(st.st_mode):
                sub = tree.open_dir(dir_fd, entry.name)
                try:
                    if tree.read_xattrs(sub, ".", lambda k: k == OPAQUE_XATTR):
                        self.marker(f"{rel}/{WHITEOUT_OPAQUE}")
                    self.walk_upper(sub, rel + "/")
                finally:
                    os.close(sub)

    def walk_compare(self, lower_fd: int | None, upper_fd: int, prefix: str) -> None:
        """The vfs form: compare two whole trees; emit what changed and whiteouts for
        what went away."""
        uppers = {e.name: e.stat(follow_symlinks=False) for e in os.scandir(upper_fd)}
        lowers = ({e.name: e.stat(follow_symlinks=False) for e in os.scandir(lower_fd)}
                  if lower_fd is not None else {})
        for name in sorted(uppers.keys() | lowers.keys()):
            rel = prefix + name
            st = uppers.get(name)
            old = lowers.get(name)
            if st is None:
                self.marker(prefix + WHITEOUT_PREFIX + name)
                continue
            changed = old is None or _differs(lower_fd, upper_fd, name, old, st)
            if changed:
                self.emit(upper_fd, name, rel, st)
            if not stat.S_ISDIR(st.st_mode):
                continue
            if not changed:
                self.pending.append((upper_fd, name, rel, st))
            sub = tree.open_dir(upper_fd, name)
            lower_sub = (tree.open_dir(lower_fd, name)
                         if lower_fd is not None and old is not None
                         and stat.S_ISDIR(old.st_mode) else None)
            try:
                self.walk_compare(lower_sub, sub, rel + "/")
            finally:
                os.close(sub)
                if lower_sub is not None:
                    os.close(lower_sub)
            if self.pending and self.pending[-1][3] is st:
                self.pending.pop()


def _differs(lower_fd: int | None, upper_fd: int, name: str, old: os.stat_result,
             new: os.stat_result) -> bool:
    if (old.st_mode, old.st_uid, old.st_gid, old.st_mtime_ns) != \
            (new.st_mode, new.st_uid, new.st_gid, new.st_mtime_ns):
        return True
    kind = stat.S_IFMT(new.st_mode)
    if kind == stat.S_IFREG and (old.st_size, old.st_nlink) != (new.st_size, new.st_nlink):
        return True
    if kind in (stat.S_IFCHR, stat.S_IFBLK) and old.st_rdev != new.st_rdev:
        return True
    assert lower_fd is not None
    if kind == stat.S_IFLNK and \
            os.readlink(name, dir_fd=lower_fd) != os.readlink(name, dir_fd=upper_fd):
        return True
    return tree.read_xattrs(lower_fd, name) != tree.read_xattrs(upper_fd, name)


def diff_layer(lower: str | None, upper: str, out: BinaryIO, *,
               kind: WhiteoutMode = "vfs") -> tuple[str, int]:
    """Write the change from ``lower`` to ``upper`` as an uncompressed layer tar; return its
    diff ID and size.

    ``overlay``: ``upper`` is an overlayfs upperdir, whose every file is a change (its
    0:0 devices become ``.wh.`` entries, its opaque directories ``.wh..wh..opq``) and
    ``lower`` is not read. ``vfs``: ``upper`` is a whole tree compared with the whole
    tree ``lower`` (None: empty) by type, mode, owner, mtime, size, link target, device
    and xattrs. The order is sorted by name, parents first; xattrs go in PAX headers.
    """
    writer = HashingWriter(out)
    upper_fd = os.open(upper, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    lower_fd = (os.open(lower, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                if lower is not None and kind == "vfs" else None)
    try:
        with tarfile.open(fileobj=writer, mode="w|",  # type: ignore[call-overload]
                          format=tarfile.PAX_FORMAT, encoding="utf-8",
                          errors="surrogateescape") as tf:
            differ = Differ(tf, kind)
            if kind == "overlay":
                differ.walk_upper(upper_fd, "")
            else:
                differ.walk_compare(lower_fd, upper_fd, "")
    finally:
        os.close(upper_fd)
        if lower_fd is not None:
            os.close(lower_fd)
    return writer.digest, writer.size
