"""What COPY and ADD write into a step's rootfs.

The sources (files of the context, of another stage's or image's rootfs, a heredoc, a
download) are written as a tar with the owners, modes and times the instruction gives,
and the tar is unpacked beneath the destination directory by ``apply_layer`` (every
entry kept beneath it, nothing followed out). The destination itself is a path of the
Dockerfile, so hostile: it is resolved inside the rootfs (``open_in_root``), a symlink
on the way meaning what it would in the container.

Docker's directory rules: a directory source copies its contents, not itself; a
destination ending in ``/`` (or an existing directory) receives the sources under their
own names; otherwise a single file source becomes the destination file.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
import stat
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from dockyard.build.shell import glob_regex, has_wildcards
from dockyard.errors import InvalidArgument, NotFound, Unavailable
from dockyard.linux import syscalls as sc
from dockyard.runtime.rootfs import open_in_root
from dockyard.storage import layers

__all__ = ["Ownership", "Source", "copy_into", "download", "extract_into", "glob_in_root",
           "is_archive", "make_dir", "resolve_in_root"]

_TAR_FORMAT = tarfile.PAX_FORMAT


@dataclass(frozen=True)
class Source:
    """One source of a COPY or ADD: ``path`` on the host, copied as ``name`` into a
    destination directory, shown as ``shown`` in errors. For a directory, ``entries``
    are the paths below it to copy, parents first (what the context does not ignore);
    None copies all."""

    path: str
    name: str
    shown: str
    entries: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Ownership:
    """What the copied files get: ``--chown`` ids (None: 0:0, or the archive's own for
    an extracted ADD), ``--chmod`` (None: kept), times clamped to ``epoch``."""

    uid: int | None = None
    gid: int | None = None
    mode: int | None = None
    epoch: int | None = None


def _refuse_whiteout(name: str) -> None:
    if posixpath.basename(name.rstrip("/")).startswith(layers.WHITEOUT_PREFIX):
        raise InvalidArgument(f"cannot copy {name!r}: names starting with "
                              f"{layers.WHITEOUT_PREFIX} are reserved for layer whiteouts")


def _stamp(info: tarfile.TarInfo, owner: Ownership) -> tarfile.TarInfo:
    if owner.uid is not None:
        info.uid, info.gid = owner.uid, owner.gid if owner.gid is not None else owner.uid
    info.uname = info.gname = ""
    if owner.mode is not None and not info.issym():
        info.mode = owner.mode
    if owner.epoch is not None and info.mtime > owner.epoch:
        info.mtime = owner.epoch
    return info


def _add(tf: tarfile.TarFile, path: str, arcname: str, owner: Ownership) -> None:
    _refuse_whiteout(arcname)
    info = tf.gettarinfo(path, arcname)
    if info is None:
        return  # a socket: not something a layer carries
    if owner.uid is None:
        info.uid = info.gid = 0
    _stamp(info, owner)
    if info.isreg():
        with open(path, "rb") as data:
            tf.addfile(info, data)
    else:
        tf.addfile(info)


def _walk(path: str, rel: str = "") -> Iterator[str]:
    """Everything under the directory ``path``, sorted, parents first, as paths
    relative to it; symlinks are not followed."""
    for entry in sorted(os.scandir(path), key=lambda e: e.name):
        yield rel + entry.name
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(entry.path, f"{rel}{entry.name}/")


def make_dir(root_fd: int, dest: str, owner: Ownership) -> int:
    """An fd of the directory ``dest`` of the rootfs, made (with its parents) if missing;
    with ``owner.uid``, those made are the owner's, as BuildKit makes them for ``COPY
    --chown`` and ``WORKDIR`` after ``USER`` (the directories that were there keep
    theirs)."""
    parts = [p for p in dest.split("/") if p]
    made = [path for path in ("/" + "/".join(parts[:i]) for i in range(1, len(parts) + 1))
            if owner.uid is not None and not _exists_in_root(root_fd, path)]
    try:
        fd = open_in_root(root_fd, dest, create="dir")
    except NotADirectoryError:
        raise InvalidArgument(f"cannot make the directory {dest}: a part of it is a "
                              "file") from None
    if not stat.S_ISDIR(os.fstat(fd).st_mode):
        os.close(fd)
        raise InvalidArgument(f"cannot make the directory {dest}: it is a file")
    for path in made:
        dir_fd = sc.openat2(root_fd, path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC,
                            resolve=sc.RESOLVE_IN_ROOT | sc.RESOLVE_NO_MAGICLINKS)
        try:
            os.fchown(dir_fd, owner.uid, owner.gid if owner.gid is not None else owner.uid)
        finally:
            os.close(dir_fd)
    return fd


def _exists_in_root(root_fd: int, path: str) -> bool:
    try:
        os.close(open_in_root(root_fd, path))
    except (FileNotFoundError, NotADirectoryError):
        return False
    return True


def _is_dir_in_root(root_fd: int, path: str) -> bool:
    try:
        fd = open_in_root(root_fd, path)
    except OSError:
        return False
    try:
        return stat.S_ISDIR(os.fstat(fd).st_mode)
    finally:
        os.close(fd)


def _unpack_spool(spool: BinaryIO, dir_fd: int) -> None:
    spool.seek(0)
    layers.apply_layer(spool, sc.fd_path(dir_fd), whiteout_mode="vfs")


def copy_into(root_fd: int, sources: Sequence[Source], dest: str, owner: Ownership, *,
              work_dir: str) -> None:
    """Copy ``sources`` to ``dest`` (absolute in the rootfs) with Docker's rules."""
    into_dir = dest.endswith("/") or len(sources) > 1 or _is_dir_in_root(root_fd, dest)
    single = sources[0] if len(sources) == 1 else None
    if single is not None and os.path.isdir(single.path) and not os.path.islink(single.path):
        into_dir = True  # a directory's contents go into the destination directory
    base = dest if into_dir else posixpath.dirname(dest.rstrip("/")) or "/"
    with tempfile.TemporaryFile(dir=work_dir) as spool:
        with tarfile.open(fileobj=spool, mode="w|", format=_TAR_FORMAT,  # type: ignore[call-overload]
                          encoding="utf-8", errors="surrogateescape") as tf:
            for source in sources:
                if os.path.isdir(source.path) and not os.path.islink(source.path):
                    below = source.entries if source.entries is not None \
                        else _walk(source.path)
                    for rel in below:
                        _add(tf, os.path.join(source.path, rel), rel, owner)
                else:
                    name = source.name if into_dir else posixpath.basename(dest.rstrip("/"))
                    _add(tf, source.path, name, owner)
        dir_fd = make_dir(root_fd, base, owner)
        try:
            _unpack_spool(spool, dir_fd)
        finally:
            os.close(dir_fd)


def is_archive(path: str) -> bool:
    """Whether ``path`` is a tar that ADD unpacks (plain, gzip, bzip2 or xz)."""
    try:
        with tarfile.open(path, mode="r:*") as tf:
            return tf.next() is not None
    except (tarfile.TarError, EOFError, OSError):
        return False


def extract_into(root_fd: int, archive: str, dest: str, owner: Ownership, *,
                 work_dir: str) -> None:
    """Unpack the tar ``archive`` (compressed or not) beneath ``dest``, as ADD does: its
    owners kept unless ``--chown``; no entry leaves ``dest``."""
    with tempfile.TemporaryFile(dir=work_dir) as spool:
        try:
            with tarfile.open(archive, mode="r:*") as source, \
                    tarfile.open(fileobj=spool, mode="w|", format=_TAR_FORMAT,  # type: ignore[call-overload]
                                 encoding="utf-8", errors="surrogateescape") as target:
                for member in source:
                    _refuse_whiteout(member.name)
                    target.addfile(_stamp(member, owner),
                                   source.extractfile(member) if member.isreg() else None)
        except (tarfile.TarError, EOFError) as e:
            raise InvalidArgument(f"cannot unpack {posixpath.basename(archive)}: {e}") from None
        dir_fd = make_dir(root_fd, dest, owner)
        try:
            _unpack_spool(spool, dir_fd)
        finally:
            os.close(dir_fd)


def download(url: str, directory: str) -> tuple[str, str]:
    """Fetch ``url`` into a new file in ``directory``; return its path and the name ADD
    gives it (the last part of the URL's path). Its mtime is the Last-Modified header's,
    its mode 0600, as Docker's."""
    # Imported here: urllib costs some 80 ms, and only ADD of a URL needs it.
    import urllib.error
    import urllib.parse
    import urllib.request
    from email.utils import parsedate_to_datetime

    name = posixpath.basename(urllib.parse.urlsplit(url).path.rstrip("/"))
    fd, path = tempfile.mkstemp(dir=directory, prefix="download-")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            while chunk := response.read(1 << 20):
                out.write(chunk)
            modified = response.headers.get("Last-Modified")
        os.chmod(path, 0o600)
        if modified:
            with contextlib.suppress(TypeError, ValueError):
                when = parsedate_to_datetime(modified).timestamp()
                os.utime(path, (when, when))
    except urllib.error.HTTPError as e:
        os.unlink(path)
        raise NotFound(f"ADD {url}: the server answered {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        os.unlink(path)
        reason = getattr(e, "reason", e)
        raise Unavailable(f"ADD {url}: cannot download it: {reason}") from None
    return path, name or "download"


def resolve_in_root(root: str, path: str) -> str:
    """The host path of ``path`` in the rootfs mounted at ``root``, every symlink on the
    way (the last one too) followed inside the root: what a bind mount of it may take,
    since mount(2) would follow a link out of the root."""
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd = sc.openat2(root_fd, path, os.O_PATH | os.O_CLOEXEC,
                        resolve=sc.RESOLVE_IN_ROOT | sc.RESOLVE_NO_MAGICLINKS)
    except (FileNotFoundError, NotADirectoryError):
        raise NotFound(f"{path} not found") from None
    finally:
        os.close(root_fd)
    try:
        return os.readlink(sc.fd_path(fd))
    finally:
        os.close(fd)


def glob_in_root(root: str, pattern: str) -> list[str]:
    """The host paths of what ``pattern`` (absolute in the rootfs mounted at ``root``,
    ``filepath.Match`` wildcards per element, as ``shell.glob_regex`` reads them: ``[^x]``
    negates, ``[!x]`` does not) names, each resolved inside the root."""
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        found = [""]
        for part in [p for p in posixpath.normpath("/" + pattern).split("/") if p]:
            following: list[str] = []
            regex = re.compile(glob_regex(part), re.DOTALL) if has_wildcards(part) else None
            for parent in found:
                if regex is None:
                    literal = part.replace("\\", "")  # Match's escapes, not a name's
                    following.append(f"{parent}/{literal}")
                    continue
                with contextlib.suppress(OSError):
                    fd = sc.openat2(root_fd, parent or "/", os.O_RDONLY | os.O_DIRECTORY,
                                    resolve=sc.RESOLVE_IN_ROOT | sc.RESOLVE_NO_MAGICLINKS)
                    try:
                        following += [f"{parent}/{n}" for n in sorted(os.listdir(fd))
                                      if regex.fullmatch(n)]
                    finally:
                        os.close(fd)
            found = following
        paths = []
        for rel in found or []:
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                # The last element itself is not followed: a symlink is copied as one.
                parent, name = posixpath.split(rel)
                pfd = sc.openat2(root_fd, parent or "/", os.O_PATH | os.O_DIRECTORY,
                                 resolve=sc.RESOLVE_IN_ROOT | sc.RESOLVE_NO_MAGICLINKS)
                try:
                    os.stat(name, dir_fd=pfd, follow_symlinks=False)
                    paths.append(os.path.join(os.readlink(sc.fd_path(pfd)), name))
                finally:
                    os.close(pfd)
        return paths
    finally:
        os.close(root_fd)
