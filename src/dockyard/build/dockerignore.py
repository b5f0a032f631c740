"""``.dockerignore``: which files of the build context the builder does not see.

The rules are Docker's (moby/patternmatcher):

- One pattern a line; a line whose first character is ``#`` is a comment; blank lines
  are skipped; each pattern is trimmed and cleaned like Go's ``filepath.Clean`` (``./a``
  is ``a``, ``a/`` is ``a``, a leading ``/`` is dropped: patterns are relative to the
  context root).
- Patterns use Go's ``filepath.Match`` syntax per path element (``*`` and ``?`` do not
  cross ``/``), plus ``**`` for any number of directories (``**/x``, ``a/**``).
- ``!pattern`` is an exception: it re-includes what an earlier pattern excluded. The
  last pattern that matches a path decides.
- A pattern that matches a directory matches everything below it; so an excluded
  directory must still be walked when an exception could match inside it
  (``may_contain_included``).

Which file is read: ``<Dockerfile>.dockerignore`` next to the Dockerfile when it
exists (``app.Dockerfile.dockerignore``), else ``.dockerignore`` at the context root.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass

from dockyard.build.dockerfile import DockerfileError
from dockyard.build.shell import glob_regex, has_wildcards

__all__ = ["IgnoreRules", "clean_path", "load_ignore", "parse_ignore"]


def clean_path(path: str) -> str:
    """``path`` cleaned like Go's ``filepath.Clean``: no ``.``, ``..`` resolved
    lexically, no double or trailing slash; "" is ".", and ``//x`` is ``/x``."""
    cleaned = posixpath.normpath(path) if path else "."
    return cleaned[1:] if cleaned.startswith("//") else cleaned


def parse_ignore(text: str) -> list[str]:
    """The patterns of an ignore file, cleaned, exceptions with their ``!``."""
    patterns = []
    for line in text.removeprefix("\ufeff").splitlines():
        if line.startswith("#"):
            continue
        pattern = line.strip()
        if not pattern:
            continue
        invert = pattern.startswith("!")
        if invert:
            pattern = pattern[1:].strip()
        if pattern:
            pattern = clean_path(pattern)
            if len(pattern) > 1 and pattern.startswith("/"):
                pattern = pattern[1:]
        patterns.append("!" + pattern if invert else pattern)
    return patterns


@dataclass(frozen=True)
class _Pattern:
    text: str
    exception: bool
    regex: re.Pattern[str]
    parts: tuple[str, ...]


def _compile(pattern: str) -> _Pattern:
    exception = pattern.startswith("!")
    text = clean_path(pattern[1:] if exception else pattern)
    if exception and not pattern[1:].strip():
        raise DockerfileError('illegal exclusion pattern: "!" (an exception needs a path)')
    pieces: list[str] = []
    rest = text
    while rest:
        head, star, rest = rest.partition("**")
        pieces.append(glob_regex(head))
        if not star:
            break
        # "**" is any number of directories, none included ("**/" too); at the end it is
        # anything. Docker's one exception: a leading "**" before a plain suffix is a
        # suffix match ("**foo" matches "xfoo").
        if rest.startswith("/"):
            rest = rest[1:]
            pieces.append("(?:.*/)?")
        elif not rest or (not head and not pieces[1:] and not has_wildcards(rest)
                          and "\\" not in rest):
            pieces.append(".*")
        else:
            pieces.append("(?:.*/)?")
    return _Pattern(text, exception, re.compile("".join(pieces), re.DOTALL),
                    tuple(text.split("/")))


class IgnoreRules:
    """The compiled patterns of one ignore file; an empty set ignores nothing."""

    def __init__(self, patterns: Iterable[str] = (), source: str | None = None) -> None:
        self.source = source                  # the file they were read from
        self._patterns = [_compile(p) for p in patterns]
        self._exceptions = [p for p in self._patterns if p.exception]

    @property
    def patterns(self) -> tuple[str, ...]:
        return tuple(("!" if p.exception else "") + p.text for p in self._patterns)

    def excluded(self, relpath: str) -> bool:
        """Whether ``relpath`` (relative to the context root, ``/``-separated) is
        left out of the context."""
        path = clean_path(relpath).lstrip("/")
        if not self._patterns or path in ("", "."):
            return False
        parts = path.split("/")
        parents = ["/".join(parts[:i]) for i in range(1, len(parts))]
        excluded = False
        for pattern in self._patterns:
            # Only a pattern that would change the verdict needs to be tried.
            if pattern.exception != excluded:
                continue
            if pattern.regex.fullmatch(path) or any(
                    pattern.regex.fullmatch(parent) for parent in parents):
                excluded = not pattern.exception
        return excluded

    def may_contain_included(self, reldir: str) -> bool:
        """Whether something below the excluded directory ``reldir`` could be included
        again by an exception, so that it must be walked. Errs on the side of yes."""
        path = clean_path(reldir).lstrip("/")
        parts = [] if path in ("", ".") else path.split("/")
        return any(_may_reach(p.parts, parts) for p in self._exceptions)


def _may_reach(pattern: tuple[str, ...], parts: list[str]) -> bool:
    """Whether a pattern of elements ``pattern`` could match the directory ``parts``,
    one of its parents, or something below it."""
    for index, part in enumerate(parts):
        if index == len(pattern) or "**" in pattern[index]:
            return True
        if not re.fullmatch(glob_regex(pattern[index]), part, re.DOTALL):
            return False
    return True


def load_ignore(context_dir: str, dockerfile_path: str | None) -> IgnoreRules:
    """The ignore rules of a build: ``<Dockerfile>.dockerignore`` next to the Dockerfile
    (``dockerfile_path``, a host path; None for a Dockerfile from stdin) when it exists,
    else ``.dockerignore`` at the root of ``context_dir``, else none."""
    candidates = [os.path.join(context_dir, ".dockerignore")]
    if dockerfile_path is not None:
        candidates.insert(0, dockerfile_path + ".dockerignore")
    for candidate in candidates:
        try:
            with open(candidate, encoding="utf-8", errors="surrogateescape") as f:
                text = f.read()
        except (FileNotFoundError, NotADirectoryError):
            continue
        except IsADirectoryError:
            raise DockerfileError(f"{candidate} is a directory: an ignore file must be a "
                                  "file", filename=candidate) from None
        try:
            return IgnoreRules(parse_ignore(text), source=candidate)
        except DockerfileError as e:
            raise DockerfileError(e.reason, filename=candidate) from None
    return IgnoreRules()
