"""The build context: the files a build may COPY or ADD, and its Dockerfile.

A context is a directory, or a tar on stdin (plain, gzip, bzip2, xz or zstd), or a
Dockerfile alone on stdin (then the context is empty). A tar is unpacked into a
temporary directory by the layer applier, which refuses any entry that would land
outside it; the directory goes when the ``BuildContext`` is closed. (Being a layer
applier, it reads an entry named ``.wh.NAME`` as the deletion of NAME: a context tar
cannot carry such a file.)

Sources are resolved the way Docker's builder does:

- A source path is relative to the context root, even when it starts with ``/``; one
  that climbs out of it (``../x``) is refused.
- A path with ``*``, ``?`` or ``[`` is a pattern matched per path element (Go's
  ``filepath.Match``); a directory it matches is taken whole, not searched further.
- What ``.dockerignore`` excludes is not there at all: a named file that is excluded
  is "not found".
- A symlink inside a path is followed but kept inside the context (an absolute target
  or a ``..`` stops at the root, like ``openat2(RESOLVE_IN_ROOT)``). A named symlink
  whose target stays in the context is followed, as Docker does; one whose target
  leaves it is taken as the symlink itself, never followed. Symlinks below a copied
  directory are always kept as symlinks.

``checksum`` is the cache key of a COPY's sources: their paths, types, permission bits,
symlink targets and file contents; not owners or times, so that touching a file (or a
fresh checkout) keeps the cache.
"""

from __future__ import annotations

import bz2
import contextlib
import hashlib
import lzma
import os
import re
import shutil
import stat
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import BinaryIO, Literal

from dockyard.build.dockerfile import DockerfileError
from dockyard.build.dockerignore import IgnoreRules, clean_path, load_ignore
from dockyard.build.shell import glob_regex, has_wildcards
from dockyard.errors import InvalidArgument, SystemFailure

__all__ = ["BuildContext", "Entry", "Source", "open_context"]

Kind = Literal["file", "dir", "symlink"]

_BZIP2_MAGIC = b"BZh"
_XZ_MAGIC = b"\xfd7zXZ\x00"
_COMPRESSED_MAGIC = (b"\x1f\x8b", b"\x28\xb5\x2f\xfd", _BZIP2_MAGIC, _XZ_MAGIC)
_DECOMPRESSORS: tuple[tuple[bytes, Callable[[BinaryIO], BinaryIO]], ...] = (
    (_BZIP2_MAGIC, bz2.BZ2File), (_XZ_MAGIC, lzma.LZMAFile))  # type: ignore[list-item]
_MAX_LINKS = 40        # the kernel's limit on symlinks in one lookup


@dataclass(frozen=True)
class Entry:
    """A file below a directory source."""

    path: str              # relative to the source directory, "/"-separated
    kind: Kind
    mode: int              # permission bits, setuid / setgid / sticky included
    size: int
    target: str | None     # a symlink's target, as written


@dataclass(frozen=True)
class Source:
    """One resolved COPY/ADD source."""

    path: str              # as named or matched, cleaned, relative to the context root
    host_path: str         # where its content is (a followed symlink's target)
    kind: Kind
    mode: int
    size: int
    target: str | None     # for a symlink taken as itself: its target
    entries: tuple[Entry, ...] = ()   # for a directory: what is below it, parents first


class BuildContext:
    """An opened build context; close it (or use ``with``) to remove what it unpacked."""

    def __init__(self, root: str, dockerfile_text: str, dockerfile_name: str,
                 ignore: IgnoreRules, *, temporary: bool = False) -> None:
        self.root = root
        self.dockerfile_text = dockerfile_text
        self.dockerfile_name = dockerfile_name
        self.ignore = ignore
        self._temporary = temporary
        self._digests: dict[tuple[int, int, int, int], str] = {}

    def close(self) -> None:
        if self._temporary:
            self._temporary = False
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> BuildContext:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- sources -------------------------------------------------------------------------

    def sources(self, patterns: list[str], *, allow_wildcards: bool = True,
                instruction: str = "COPY", line: int | None = None) -> list[Source]:
        """The sources named by ``patterns``, in order; ``instruction`` and ``line`` go
        into the errors."""
        found: list[Source] = []
        try:
            for pattern in patterns:
                path = self._inside(pattern)
                if allow_wildcards and has_wildcards(path):
                    matches = self._glob(path.split("/") if path != "." else [])
                    if not matches:
                        raise DockerfileError(
                            f"{instruction} failed: no source files were specified: "
                            f"{pattern!r} matches nothing in the build context")
                    found.extend(self._named(m, pattern, instruction) for m in matches)
                else:
                    found.append(self._named(path, pattern, instruction))
        except DockerfileError as e:
            raise DockerfileError(e.reason, filename=self.dockerfile_name, line=line) from None
        return found

    def _inside(self, pattern: str) -> str:
        """``pattern`` cleaned and relative to the root; refused if it climbs out. An
        absolute path is cleaned from the root, so it cannot climb (``/../x`` is ``x``)."""
        cleaned = clean_path(pattern)
        if cleaned.startswith("/"):
            return cleaned.lstrip("/") or "."
        if cleaned == ".." or cleaned.startswith("../"):
            raise DockerfileError(f"forbidden path outside the build context: {pattern}")
        return cleaned

    def _named(self, path: str, pattern: str, instruction: str) -> Source:
        missing = DockerfileError(
            f"{instruction} failed: file not found in build context or excluded by "
            f".dockerignore: stat {pattern}: file does not exist")
        parts = [] if path == "." else path.split("/")
        try:
            resolved = self._resolve(parts)
        except _SymlinkLoop:
            raise DockerfileError(
                f"{instruction} failed: {pattern}: too many levels of symbolic links (a "
                "symlink in the context loops, or points out of it and so back into it)"
            ) from None
        if resolved is None:
            raise missing
        real, st = resolved
        host = os.path.join(self.root, real) if real != "." else self.root
        if stat.S_ISDIR(st.st_mode):
            hidden = self.ignore.excluded(path) or self.ignore.excluded(real)
            if hidden and not self.ignore.may_contain_included(real):
                raise missing
            entries = tuple(self._walk(host, real, ""))
            if hidden and not entries:
                raise missing
            return Source(path, host, "dir", stat.S_IMODE(st.st_mode), 0, None, entries)
        if self.ignore.excluded(path) or self.ignore.excluded(real):
            raise missing
        if stat.S_ISLNK(st.st_mode):
            return Source(path, host, "symlink", stat.S_IMODE(st.st_mode), 0,
                          os.readlink(host))
        if stat.S_ISREG(st.st_mode):
            return Source(path, host, "file", stat.S_IMODE(st.st_mode), st.st_size, None)
        raise DockerfileError(f"{instruction} failed: {pattern} is not a regular file, "
                              "directory or symlink")

    def _resolve(self, parts: list[str]) -> tuple[str, os.stat_result] | None:
        """Where ``parts`` leads in the context: (its path there, its lstat), or None.

        Symlinks are followed, kept inside the root. The last one is followed only while
        its targets stay inside: one that leaves is returned as itself.
        """
        resolved: list[str] = []
        pending = list(parts)
        links = 0
        last: tuple[str, os.stat_result] | None = None
        while pending:
            part = pending.pop(0)
            if part in ("", "."):
                continue
            if part == "..":
                if resolved:
                    resolved.pop()
                continue
            candidate = [*resolved, part]
            try:
                st = os.lstat(os.path.join(self.root, *candidate))
            except (FileNotFoundError, NotADirectoryError):
                return None
            if not stat.S_ISLNK(st.st_mode):
                resolved = candidate
                continue
            links += 1
            if links > _MAX_LINKS:
                raise _SymlinkLoop
            target = os.readlink(os.path.join(self.root, *candidate))
            if not pending:
                if last is None:
                    last = ("/".join(candidate), st)
                if _leaves(resolved, target):
                    return last
            pending = [*target.split("/"), *pending]
            if target.startswith("/"):
                resolved = []
        return ("/".join(resolved) or "."), os.lstat(os.path.join(self.root, *resolved))

    def _walk(self, host: str, real: str, prefix: str) -> Iterator[Entry]:
        """The entries below the directory ``host`` (``real`` in the context) that the
        ignore rules keep, sorted, parents first; symlinks not followed."""
        try:
            children = sorted(os.scandir(host), key=lambda e: e.name)
        except OSError as e:
            raise DockerfileError(f"cannot read {prefix or real}: {e.strerror}") from None
        for child in children:
            rel = prefix + child.name
            in_context = rel if real == "." else f"{real}/{rel}"
            st = child.stat(follow_symlinks=False)
            hidden = self.ignore.excluded(in_context)
            if stat.S_ISDIR(st.st_mode):
                if hidden and not self.ignore.may_contain_included(in_context):
                    continue
                below = list(self._walk(child.path, real, rel + "/"))
                if hidden and not below:
                    continue
                yield Entry(rel, "dir", stat.S_IMODE(st.st_mode), 0, None)
                yield from below
            elif hidden:
                continue
            elif stat.S_ISLNK(st.st_mode):
                yield Entry(rel, "symlink", stat.S_IMODE(st.st_mode), 0,
                            os.readlink(child.path))
            elif stat.S_ISREG(st.st_mode):
                yield Entry(rel, "file", stat.S_IMODE(st.st_mode), st.st_size, None)
            # Sockets, fifos and devices are not content a build can copy.

    def _glob(self, parts: list[str]) -> list[str]:
        """The paths in the context that match the pattern ``parts``, in walk order."""
        matches: list[str] = []

        def descend(real: list[str], index: int) -> None:
            host = os.path.join(self.root, *real)
            element = parts[index]
            if has_wildcards(element):
                regex = re.compile(glob_regex(element), re.DOTALL)
                try:
                    names = sorted(n for n in os.listdir(host) if regex.fullmatch(n))
                except (FileNotFoundError, NotADirectoryError):
                    return
            else:
                names = [element.replace("\\", "")]
            for name in names:
                path = [*real, name]
                rel = "/".join(path)
                try:
                    st = os.lstat(os.path.join(self.root, rel))
                except (FileNotFoundError, NotADirectoryError):
                    continue
                if index + 1 == len(parts):
                    if not self.ignore.excluded(rel) or (
                            stat.S_ISDIR(st.st_mode) and self.ignore.may_contain_included(rel)):
                        matches.append(rel)
                elif stat.S_ISDIR(st.st_mode) and (
                        not self.ignore.excluded(rel) or self.ignore.may_contain_included(rel)):
                    descend(path, index + 1)

        if parts:
            descend([], 0)
        return matches

    # -- the cache key ---------------------------------------------------------------------

    def checksum(self, sources: list[Source]) -> str:
        """A sha256 over what ``sources`` would copy: paths, types, permission bits,
        symlink targets, contents; not owners, not times."""
        h = hashlib.sha256()
        for source in sources:
            h.update(self._record("source", source.path, source.kind, source.mode,
                                  source.target, source.host_path))
            for entry in source.entries:
                h.update(self._record("entry", entry.path, entry.kind, entry.mode,
                                      entry.target, os.path.join(source.host_path, entry.path)))
        return "sha256:" + h.hexdigest()

    def _record(self, what: str, path: str, kind: Kind, mode: int, target: str | None,
                host: str) -> bytes:
        content = target if kind == "symlink" else self._digest(host) if kind == "file" else ""
        return f"{what}\0{path}\0{kind}\0{mode:o}\0{content}\n".encode(
            "utf-8", "surrogateescape")

    def _digest(self, host: str) -> str:
        st = os.stat(host)
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        digest = self._digests.get(key)
        if digest is None:
            with open(host, "rb") as f:
                digest = hashlib.file_digest(f, "sha256").hexdigest()
            self._digests[key] = digest
        return digest


class _SymlinkLoop(Exception):
    """More symlinks in one path than the kernel would follow."""


def _leaves(resolved: list[str], target: str) -> bool:
    """Whether the symlink target ``target``, in the directory ``resolved``, points out
    of the context (an absolute target always does)."""
    if target.startswith("/"):
        return True
    depth = len(resolved)
    for part in target.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part not in ("", "."):
            depth += 1
    return False


def open_context(source: str, *, dockerfile: str | None,
                 stdin: BinaryIO | None = None) -> BuildContext:
    """Open the context ``source`` (a directory, or ``-`` for stdin) with the Dockerfile
    ``dockerfile``: a path (relative to the working directory for a directory context,
    to the tar's root for a tar), ``-`` for stdin, or None for ``Dockerfile`` at the
    context root."""
    if source == "-":
        if dockerfile == "-":
            raise InvalidArgument("the context and the Dockerfile cannot both come from "
                                  "stdin: name a context directory")
        return _from_stdin(stdin if stdin is not None else sys.stdin.buffer, dockerfile)
    if not os.path.isdir(source):
        what = "not found" if not os.path.exists(source) else "not a directory"
        raise InvalidArgument(f'unable to prepare context: path "{source}" {what}')
    root = os.path.abspath(source)
    if dockerfile == "-":
        stream = stdin if stdin is not None else sys.stdin.buffer
        return BuildContext(root, _text(stream.read(), "Dockerfile"), "Dockerfile",
                            load_ignore(root, None))
    if dockerfile is None:
        path = os.path.join(root, "Dockerfile")
        if not os.path.lexists(path) and os.path.lexists(os.path.join(root, "dockerfile")):
            path = os.path.join(root, "dockerfile")
        name = os.path.basename(path)
    else:
        path, name = os.path.abspath(dockerfile), dockerfile
    return BuildContext(root, _read_dockerfile(path, name), name, load_ignore(root, path))


def _from_stdin(stream: BinaryIO, dockerfile: str | None) -> BuildContext:
    root = tempfile.mkdtemp(prefix="dockyard-context-")
    try:
        with tempfile.TemporaryFile(dir=root) as spool:
            shutil.copyfileobj(stream, spool)
            spool.seek(0)
            head = spool.read(tarfile.BLOCKSIZE)
            spool.seek(0)
            if not _is_archive(head):
                text = _text(spool.read(), "Dockerfile")
                return BuildContext(root, text, "Dockerfile", IgnoreRules(), temporary=True)
            _unpack(spool, head, root)
        name = dockerfile or "Dockerfile"
        path = os.path.join(root, clean_path(name.lstrip("/") or "."))
        if dockerfile is None and not os.path.lexists(path) and \
                os.path.lexists(os.path.join(root, "dockerfile")):
            path, name = os.path.join(root, "dockerfile"), "dockerfile"
        if os.path.islink(path) or \
                not os.path.realpath(path).startswith(os.path.realpath(root) + "/"):
            raise InvalidArgument(f"the Dockerfile {name} must be a file inside the context "
                                  "tar (not a symlink, not a path out of it)")
        return BuildContext(root, _read_dockerfile(path, name), name,
                            load_ignore(root, path), temporary=True)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise


def _is_archive(head: bytes) -> bool:
    """Whether stdin holds a tar, as Docker tells: a compression's magic, or a valid
    tar header (an all-zero block is an empty tar)."""
    if head.startswith(_COMPRESSED_MAGIC):
        return True
    if len(head) < tarfile.BLOCKSIZE:
        return False
    if head == bytes(tarfile.BLOCKSIZE):
        return True
    try:
        tarfile.TarInfo.frombuf(head, "utf-8", "surrogateescape")
    except tarfile.HeaderError:
        return False
    return True


def _unpack(spool: BinaryIO, head: bytes, root: str) -> None:
    # Imported here: the layer code is only needed for a context that comes as a tar.
    from dockyard.storage.layers import apply_layer

    # gzip and zstd are undone by the layer applier; bzip2 and xz here.
    opener = next((o for magic, o in _DECOMPRESSORS if head.startswith(magic)), None)
    try:
        with contextlib.ExitStack() as stack:
            stream = stack.enter_context(opener(spool)) if opener else spool
            apply_layer(stream, root)
    except OSError as e:
        if e.errno is None:      # corrupt compressed data, not a failing system call
            raise InvalidArgument(f"the build context on stdin is not a valid tar: {e}") \
                from None
        raise SystemFailure(f"cannot unpack the build context from stdin: {e}") from None
    except (EOFError, lzma.LZMAError) as e:
        raise InvalidArgument(f"the build context on stdin is not a valid tar: {e}") from None
    except InvalidArgument as e:
        raise InvalidArgument(f"the build context on stdin is refused: {e}") from None


def _read_dockerfile(path: str, name: str) -> str:
    try:
        with open(path, "rb") as f:
            return _text(f.read(), name)
    except FileNotFoundError:
        raise InvalidArgument(f"cannot read the Dockerfile: {name} not found; name it "
                              "with -f") from None
    except IsADirectoryError:
        raise InvalidArgument(f"cannot read the Dockerfile: {name} is a directory") from None


def _text(data: bytes, name: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DockerfileError(f"not UTF-8 text (byte {e.start}): a Dockerfile is text",
                              filename=name) from None
