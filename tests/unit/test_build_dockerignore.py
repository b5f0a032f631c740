"""``.dockerignore``: Docker's pattern rules, exceptions, and which ignore file is read."""

from __future__ import annotations

import os

import pytest

from dockyard.build.dockerfile import DockerfileError
from dockyard.build.dockerignore import IgnoreRules, clean_path, load_ignore, parse_ignore


def test_parse_ignore_cleans_patterns() -> None:
    text = ("\ufeff# a comment\n\n  node_modules  \n./build/\n/dist\n!./keep.txt\n"
            "a//b/../c\n #not a comment\n! spaced \n/\n")
    assert parse_ignore(text) == ["node_modules", "build", "dist", "!keep.txt", "a/c",
                                  "#not a comment", "!spaced", "/"]


@pytest.mark.parametrize(("path", "cleaned"), [
    ("", "."), (".", "."), ("./a/", "a"), ("a/../..", ".."), ("//a", "/a"), ("a//b", "a/b"),
])
def test_clean_path(path: str, cleaned: str) -> None:
    assert clean_path(path) == cleaned


@pytest.mark.parametrize(("patterns", "path", "excluded"), [
    (["*.log"], "a.log", True),
    (["*.log"], "dir/a.log", False),            # * does not cross /
    (["*/*.log"], "dir/a.log", True),
    (["**/*.log"], "a.log", True),
    (["**/*.log"], "x/y/z/a.log", True),
    (["**/*.log"], "a.txt", False),
    (["src/**/test"], "src/test", True),
    (["src/**/test"], "src/a/b/test", True),
    (["src/**/test"], "src/a/b/test/file.c", True),  # a matched directory takes its files
    (["src/**"], "src/x/y", True),
    (["src/**"], "src", False),
    (["**"], "anything/at/all", True),
    (["**foo"], "a/xfoo", True),                # Docker's suffix match
    (["**foo*"], "xfoo1", False),               # but a pattern after ** is per directory
    (["**foo*"], "x/foo1", True),
    (["a**b"], "axb", False),
    (["a**b"], "ax/b", True),
    (["a**b"], "ab", True),
    (["foo**"], "foobar/x", True),
    (["build"], "build", True),
    (["build"], "build/out/x.o", True),
    (["build"], "src/build", False),
    (["temp?"], "temp1", True),
    (["temp?"], "temp12", False),
    (["[a-c]*.txt"], "b1.txt", True),
    (["[a-c]*.txt"], "d1.txt", False),
    (["\\*.txt"], "*.txt", True),
    (["\\*.txt"], "a.txt", False),
    # exceptions: the last matching pattern wins
    (["*.md", "!README.md"], "README.md", False),
    (["*.md", "!README.md"], "CHANGES.md", True),
    (["!README.md", "*.md"], "README.md", True),
    (["*.md", "!README*.md", "README-secret.md"], "README-secret.md", True),
    (["*.md", "!README*.md", "README-secret.md"], "README-public.md", False),
    (["docs", "!docs/keep"], "docs/keep", False),
    (["docs", "!docs/keep"], "docs/keep/inner.txt", False),
    (["docs", "!docs/keep"], "docs/other", True),
    (["docs/*", "!docs/keep", "docs/keep/secret"], "docs/keep/secret", True),
    (["*", "!src"], "src/main.c", False),
    (["*", "!src"], "Makefile", True),
    ([], "anything", False),
    (["*"], ".", False),                        # the root itself is never excluded
])
def test_excluded(patterns: list[str], path: str, excluded: bool) -> None:
    assert IgnoreRules(parse_ignore("\n".join(patterns))).excluded(path) is excluded


@pytest.mark.parametrize(("patterns", "directory", "walk"), [
    (["docs", "!docs/keep"], "docs", True),
    (["docs", "!docs/keep"], "other", False),
    (["docs", "!docs/a/*.txt"], "docs/a", True),
    (["docs", "!docs/a/*.txt"], "docs/b", False),
    (["docs", "!**/keep"], "docs/x/y", True),
    (["docs", "!d*"], "docs/inner", True),       # the exception matches a parent
    (["*"], "src", False),                       # no exception at all
    (["*", "!src/*.c"], "src", True),
    (["*", "!src/*.c"], "lib", False),
])
def test_may_contain_included(patterns: list[str], directory: str, walk: bool) -> None:
    rules = IgnoreRules(parse_ignore("\n".join(patterns)))
    assert rules.may_contain_included(directory) is walk


def test_bad_patterns() -> None:
    with pytest.raises(DockerfileError, match="syntax error in pattern"):
        IgnoreRules(["a[b"])
    with pytest.raises(DockerfileError, match="illegal exclusion pattern"):
        IgnoreRules(["!"])


def test_load_prefers_the_dockerfile_own_ignore_file(tmp_path) -> None:
    context = tmp_path / "ctx"
    (context / "build").mkdir(parents=True)
    (context / ".dockerignore").write_text("*.log\n")
    dockerfile = context / "build" / "app.Dockerfile"
    dockerfile.write_text("FROM scratch\n")

    rules = load_ignore(str(context), str(dockerfile))
    assert rules.source == str(context / ".dockerignore")
    assert rules.excluded("a.log") and not rules.excluded("a.tmp")

    (context / "build" / "app.Dockerfile.dockerignore").write_text("*.tmp\n")
    rules = load_ignore(str(context), str(dockerfile))
    assert rules.source == str(dockerfile) + ".dockerignore"
    assert rules.excluded("a.tmp") and not rules.excluded("a.log")

    assert load_ignore(str(tmp_path), None).patterns == ()


def test_load_names_the_file_of_a_bad_pattern(tmp_path) -> None:
    (tmp_path / ".dockerignore").write_text("ok\n[bad\n")
    with pytest.raises(DockerfileError) as caught:
        load_ignore(str(tmp_path), None)
    assert str(caught.value) == (f"{tmp_path}/.dockerignore: syntax error in pattern: [bad")


def test_an_ignore_file_that_is_a_directory(tmp_path) -> None:
    os.mkdir(tmp_path / ".dockerignore")
    with pytest.raises(DockerfileError, match="is a directory"):
        load_ignore(str(tmp_path), None)
