"""What ``COPY --from`` finds in another stage's rootfs (``files.glob_in_root``): Go's
``filepath.Match`` per path element, as Docker matches, never a shell's glob."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dockyard.build.dockerfile import DockerfileError
from dockyard.build.files import glob_in_root


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    for name in ("a", "b", "!", "^", "x*y", "xzy"):
        (tmp_path / "dir" / name).mkdir(parents=True)
    (tmp_path / "dir" / "a" / "file.txt").write_text("a")
    (tmp_path / "dir" / "b" / "file.txt").write_text("b")
    os.symlink("/etc", tmp_path / "dir" / "a" / "etc")
    return tmp_path


def _names(root: Path, pattern: str) -> list[str]:
    return [os.path.relpath(p, root) for p in glob_in_root(str(root), pattern)]


def test_a_class_negates_with_a_caret_not_with_a_bang(rootfs: Path) -> None:
    # A shell (fnmatch) reads [!a] as "not a" and [^a] as "^ or a": Go the other way.
    assert _names(rootfs, "/dir/[!a]") == ["dir/!", "dir/a"]
    assert _names(rootfs, "/dir/[^a]") == ["dir/!", "dir/^", "dir/b"]


def test_wildcards_per_element_and_escapes(rootfs: Path) -> None:
    assert _names(rootfs, "/dir/*/file.txt") == ["dir/a/file.txt", "dir/b/file.txt"]
    assert _names(rootfs, "dir/?/file.txt") == ["dir/a/file.txt", "dir/b/file.txt"]
    assert _names(rootfs, "/dir/x\\*y") == ["dir/x*y"]  # an escaped * is a name's own
    assert _names(rootfs, "/dir/x*y") == ["dir/x*y", "dir/xzy"]
    assert _names(rootfs, "/dir/nothing*") == []


def test_a_link_is_named_not_followed_and_never_leaves_the_root(rootfs: Path) -> None:
    assert _names(rootfs, "/dir/a/e*") == ["dir/a/etc"]
    # Below the link, the walk stays in the rootfs: its /etc, not the host's.
    assert _names(rootfs, "/dir/a/etc/pass*") == []


def test_a_malformed_class_is_an_error(rootfs: Path) -> None:
    with pytest.raises(DockerfileError):
        glob_in_root(str(rootfs), "/dir/[a")
