"""The build context: a directory or a tar on stdin, the Dockerfile in it, COPY sources
resolved with Docker's rules, and their cache checksum."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard

from dockyard.build.context import BuildContext, Source, open_context
from dockyard.build.dockerfile import DockerfileError
from dockyard.errors import InvalidArgument

DOCKERFILE = "FROM busybox\nCOPY . /app\n"


def tree(root: Path, files: dict[str, str | None], links: dict[str, str] | None = None) -> Path:
    """Files (None: a directory) and symlinks under ``root``."""
    for name, content in files.items():
        path = root / name
        if content is None:
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
    for name, target in (links or {}).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, root / name)
    return root


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[BuildContext]:
    root = tree(tmp_path / "ctx", {
        "Dockerfile": DOCKERFILE,
        "app.py": "print(1)\n",
        "lib/a.py": "a\n",
        "lib/b.py": "b\n",
        "lib/sub/c.txt": "c\n",
        "docs/guide.md": "g\n",
        "docs/keep/important.md": "i\n",
        "notes.log": "log\n",
        "empty": None,
    }, links={"etc": "/etc", "up": "../outside", "alias.py": "app.py",
              "libdir": "lib", "lib/sub/rel": "../a.py", "chain": "etc"})
    (tmp_path / "outside").write_text("secret\n")
    (root / ".dockerignore").write_text("*.log\ndocs\n!docs/keep\n")
    with open_context(str(root), dockerfile=None) as context:
        yield context


def paths(sources: list[Source]) -> list[tuple[str, str]]:
    return [(s.path, s.kind) for s in sources]


# -- opening -------------------------------------------------------------------------------

def test_directory_context(ctx: BuildContext) -> None:
    assert ctx.dockerfile_text == DOCKERFILE
    assert ctx.dockerfile_name == "Dockerfile"
    assert ctx.ignore.patterns == ("*.log", "docs", "!docs/keep")
    assert os.path.isdir(ctx.root)


def test_dockerfile_by_name_is_relative_to_the_working_directory(tmp_path, monkeypatch) -> None:
    root = tree(tmp_path / "ctx", {"a": "a"})
    tree(tmp_path / "elsewhere", {"app.Dockerfile": "FROM scratch\n",
                                  "app.Dockerfile.dockerignore": "a\n"})
    monkeypatch.chdir(tmp_path)
    with open_context("ctx", dockerfile="elsewhere/app.Dockerfile") as context:
        assert context.dockerfile_text == "FROM scratch\n"
        assert context.dockerfile_name == "elsewhere/app.Dockerfile"
        assert context.root == str(root)
        assert context.ignore.excluded("a")
    # a directory context is the user's: closing leaves it
    assert (root / "a").exists()


def test_lower_case_dockerfile_is_found(tmp_path) -> None:
    root = tree(tmp_path, {"dockerfile": "FROM scratch\n"})
    with open_context(str(root), dockerfile=None) as context:
        assert context.dockerfile_name == "dockerfile"


def test_missing_context_or_dockerfile(tmp_path) -> None:
    with pytest.raises(InvalidArgument, match=r'unable to prepare context: path ".*nope" '
                                              r"not found"):
        open_context(str(tmp_path / "nope"), dockerfile=None)
    with pytest.raises(InvalidArgument, match="Dockerfile not found"):
        open_context(str(tmp_path), dockerfile=None)
    (tmp_path / "file").write_text("x")
    with pytest.raises(InvalidArgument, match="not a directory"):
        open_context(str(tmp_path / "file"), dockerfile=None)


def test_dockerfile_from_stdin_with_a_directory_context(tmp_path) -> None:
    tree(tmp_path, {"a.txt": "a"})
    with open_context(str(tmp_path), dockerfile="-",
                      stdin=io.BytesIO(b"FROM scratch\nCOPY a.txt /\n")) as context:
        assert context.dockerfile_text == "FROM scratch\nCOPY a.txt /\n"
        assert paths(context.sources(["a.txt"])) == [("a.txt", "file")]
    with pytest.raises(InvalidArgument, match="cannot both come from stdin"):
        open_context("-", dockerfile="-", stdin=io.BytesIO(b""))


def test_a_dockerfile_alone_on_stdin_has_an_empty_context() -> None:
    with open_context("-", dockerfile=None, stdin=io.BytesIO(DOCKERFILE.encode())) as context:
        assert context.dockerfile_text == DOCKERFILE
        assert os.listdir(context.root) == []
        with pytest.raises(DockerfileError, match="file not found in build context"):
            context.sources(["Dockerfile"])
        root = context.root
    assert not os.path.exists(root)


def test_a_dockerfile_that_is_not_text() -> None:
    with pytest.raises(DockerfileError, match="not UTF-8"):
        open_context("-", dockerfile=None, stdin=io.BytesIO(b"FROM \xff\n"))


def make_tar(files: dict[str, bytes], *, symlinks: dict[str, str] | None = None) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o640
            info.uid, info.gid = os.getuid(), os.getgid()
            tf.addfile(info, io.BytesIO(data))
        for name, target in (symlinks or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            info.uid, info.gid = os.getuid(), os.getgid()
            tf.addfile(info)
    return out.getvalue()


def zstd(data: bytes) -> bytes:
    return zstandard.ZstdCompressor().compress(data)


@pytest.mark.parametrize("compress", [
    lambda b: b, gzip.compress, bz2.compress, lzma.compress, zstd,
], ids=["plain", "gzip", "bzip2", "xz", "zstd"])
def test_tar_on_stdin(compress) -> None:
    tar = make_tar({"Dockerfile": DOCKERFILE.encode(), "src/main.c": b"int main;\n",
                    ".dockerignore": b"**/*.o\n", "src/main.o": b"\0"})
    with open_context("-", dockerfile=None, stdin=io.BytesIO(compress(tar))) as context:
        root = context.root
        assert context.dockerfile_text == DOCKERFILE
        (source,) = context.sources(["src"])
        assert [(e.path, e.kind, e.mode) for e in source.entries] == [
            ("main.c", "file", 0o640)]
    assert not os.path.exists(root)


def test_tar_on_stdin_with_a_named_dockerfile() -> None:
    tar = make_tar({"build/Dockerfile.dev": b"FROM scratch\n",
                    "build/Dockerfile.dev.dockerignore": b"secret\n", "secret": b"s"})
    with open_context("-", dockerfile="build/Dockerfile.dev", stdin=io.BytesIO(tar)) as ctx:
        assert ctx.dockerfile_text == "FROM scratch\n"
        assert ctx.dockerfile_name == "build/Dockerfile.dev"
        assert ctx.ignore.excluded("secret")
    with pytest.raises(InvalidArgument, match="nope not found"):
        open_context("-", dockerfile="nope", stdin=io.BytesIO(tar))


def test_hostile_tar_on_stdin_is_refused_and_cleaned(tmp_path, monkeypatch) -> None:
    spool, victim = tmp_path / "spool", tmp_path / "victim"
    spool.mkdir()
    victim.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    tar = make_tar({"Dockerfile": b"FROM scratch\n", "../escape": b"x"})
    with pytest.raises(InvalidArgument, match="refused"):
        open_context("-", dockerfile=None, stdin=io.BytesIO(tar))
    # a symlink out, then an entry written through it
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tf:
        info = tarfile.TarInfo("link")
        info.type, info.linkname = tarfile.SYMTYPE, str(victim)
        info.uid, info.gid = os.getuid(), os.getgid()
        tf.addfile(info)
        info = tarfile.TarInfo("link/escaped")
        info.size, info.uid, info.gid = 1, os.getuid(), os.getgid()
        tf.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(InvalidArgument, match="refused"):
        open_context("-", dockerfile=None, stdin=io.BytesIO(out.getvalue()))
    assert os.listdir(victim) == []
    assert os.listdir(spool) == []       # the unpacked context is gone


def test_a_dockerfile_symlink_in_a_tar_is_refused() -> None:
    tar = make_tar({}, symlinks={"Dockerfile": "/etc/passwd"})
    with pytest.raises(InvalidArgument, match="must be a file inside the context"):
        open_context("-", dockerfile=None, stdin=io.BytesIO(tar))
    tar = make_tar({"Dockerfile": b"FROM scratch\n"})
    with pytest.raises(InvalidArgument, match="must be a file inside the context"):
        open_context("-", dockerfile="../../../etc/passwd", stdin=io.BytesIO(tar))


def test_empty_tar_on_stdin_has_no_dockerfile() -> None:
    with pytest.raises(InvalidArgument, match="Dockerfile not found"):
        open_context("-", dockerfile=None, stdin=io.BytesIO(bytes(10240)))


def test_corrupt_compressed_stdin() -> None:
    with pytest.raises(InvalidArgument, match="build context on stdin"):
        open_context("-", dockerfile=None, stdin=io.BytesIO(b"\x1f\x8bnot gzip at all"))


# -- sources -------------------------------------------------------------------------------

def test_named_file_and_directory(ctx: BuildContext) -> None:
    file, directory = ctx.sources(["app.py", "./lib/"])
    assert (file.path, file.kind, file.size, file.host_path) == \
        ("app.py", "file", 9, os.path.join(ctx.root, "app.py"))
    assert directory.path == "lib" and directory.kind == "dir"
    assert [(e.path, e.kind, e.target) for e in directory.entries] == [
        ("a.py", "file", None), ("b.py", "file", None), ("sub", "dir", None),
        ("sub/c.txt", "file", None), ("sub/rel", "symlink", "../a.py")]


def test_absolute_sources_are_relative_to_the_context(ctx: BuildContext) -> None:
    assert paths(ctx.sources(["/app.py", "/", "/../../app.py", "//lib/./a.py"])) == [
        ("app.py", "file"), (".", "dir"), ("app.py", "file"), ("lib/a.py", "file")]


@pytest.mark.parametrize("pattern", ["../outside", "..", "lib/../../outside", "../ctx/app.py"])
def test_sources_outside_the_context_are_forbidden(ctx: BuildContext, pattern: str) -> None:
    with pytest.raises(DockerfileError) as caught:
        ctx.sources([pattern], line=4)
    assert str(caught.value) == \
        f"Dockerfile:4: forbidden path outside the build context: {pattern}"


def test_missing_and_ignored_sources_are_not_found(ctx: BuildContext) -> None:
    for name in ["nope.txt", "notes.log", "docs/guide.md", "lib/a.py/x"]:
        with pytest.raises(DockerfileError) as caught:
            ctx.sources([name], instruction="ADD", line=7)
        assert str(caught.value) == (
            "Dockerfile:7: ADD failed: file not found in build context or excluded by "
            f".dockerignore: stat {name}: file does not exist")


def test_an_excluded_directory_keeps_its_exceptions(ctx: BuildContext) -> None:
    (docs,) = ctx.sources(["docs"])
    assert [e.path for e in docs.entries] == ["keep", "keep/important.md"]
    (root,) = ctx.sources(["."])
    listed = {e.path for e in root.entries}
    assert "notes.log" not in listed and "docs/guide.md" not in listed
    assert {"docs/keep/important.md", ".dockerignore", "Dockerfile", "empty", "etc"} <= listed


def test_wildcards(ctx: BuildContext) -> None:
    assert paths(ctx.sources(["lib/*.py"])) == [("lib/a.py", "file"), ("lib/b.py", "file")]
    assert paths(ctx.sources(["*/sub"])) == [("lib/sub", "dir")]
    assert paths(ctx.sources(["[a]*.py"])) == [("alias.py", "file"), ("app.py", "file")]
    assert paths(ctx.sources(["d?cs"])) == [("docs", "dir")]


def test_wildcard_without_match(ctx: BuildContext) -> None:
    for pattern in ["*.nothing", "*.log", "docs/*.md", "nodir/*"]:
        with pytest.raises(DockerfileError, match=r"^Dockerfile:2: COPY failed: no source "
                                                  r"files were specified"):
            ctx.sources([pattern], line=2)


def test_wildcards_can_be_off(ctx: BuildContext) -> None:
    with pytest.raises(DockerfileError, match=r"stat lib/\*.py: file does not exist"):
        ctx.sources(["lib/*.py"], allow_wildcards=False)


def test_symlink_inside_the_context_is_followed(ctx: BuildContext) -> None:
    (alias,) = ctx.sources(["alias.py"])
    assert (alias.path, alias.kind, alias.host_path) == \
        ("alias.py", "file", os.path.join(ctx.root, "app.py"))
    (libdir,) = ctx.sources(["libdir"])
    assert libdir.kind == "dir" and libdir.host_path == os.path.join(ctx.root, "lib")
    (through,) = ctx.sources(["libdir/sub/c.txt"])
    assert through.host_path == os.path.join(ctx.root, "lib/sub/c.txt")


@pytest.mark.parametrize(("name", "target"), [("etc", "/etc"), ("up", "../outside"),
                                              ("chain", "etc")])
def test_symlink_out_of_the_context_is_the_link_itself(ctx: BuildContext, name: str,
                                                       target: str) -> None:
    (link,) = ctx.sources([name])
    assert (link.path, link.kind, link.target, link.host_path) == \
        (name, "symlink", target, os.path.join(ctx.root, name))
    assert link.entries == ()


def test_a_path_through_an_outward_symlink_stays_inside(ctx: BuildContext) -> None:
    # data -> /srv/data is taken inside the context: data/x is <context>/srv/data/x
    os.symlink("/srv/data", os.path.join(ctx.root, "data"))
    with pytest.raises(DockerfileError, match="file not found in build context"):
        ctx.sources(["data/x"])
    tree(Path(ctx.root), {"srv/data/x": "inside\n"})
    (found,) = ctx.sources(["data/x"])
    assert (found.path, found.host_path) == ("data/x", os.path.join(ctx.root, "srv/data/x"))
    # etc -> /etc inside the context is etc itself again: a loop, as openat2 finds it
    with pytest.raises(DockerfileError, match="COPY failed: etc/passwd: too many levels of "
                                              "symbolic links"):
        ctx.sources(["etc/passwd"])


def test_symlink_loop(tmp_path) -> None:
    root = tree(tmp_path, {"Dockerfile": "FROM scratch\n"}, links={"a": "b", "b": "a"})
    with open_context(str(root), dockerfile=None) as context, \
            pytest.raises(DockerfileError, match="too many levels of symbolic links"):
        context.sources(["a/x"])


# -- checksum ------------------------------------------------------------------------------

def test_checksum_follows_content_mode_and_names_not_times(ctx: BuildContext) -> None:
    def key() -> str:
        return ctx.checksum(ctx.sources(["app.py", "lib", "etc"]))

    first = key()
    assert first.startswith("sha256:") and len(first) == 7 + 64
    assert key() == first
    os.utime(os.path.join(ctx.root, "lib/a.py"), (1, 1))
    os.utime(os.path.join(ctx.root, "app.py"), (2, 2))
    assert key() == first                                   # touch: the cache holds

    os.chmod(os.path.join(ctx.root, "lib/b.py"), 0o600)
    second = key()
    assert second != first                                  # mode
    Path(ctx.root, "lib/sub/c.txt").write_text("changed\n")
    third = key()
    assert third not in (first, second)                     # content
    os.rename(os.path.join(ctx.root, "lib/a.py"), os.path.join(ctx.root, "lib/z.py"))
    assert key() not in (first, second, third)              # a name


def test_checksum_of_ignored_files_does_not_change(ctx: BuildContext) -> None:
    before = ctx.checksum(ctx.sources(["."]))
    Path(ctx.root, "notes.log").write_text("more\n")
    Path(ctx.root, "docs/guide.md").write_text("more\n")
    assert ctx.checksum(ctx.sources(["."])) == before
    Path(ctx.root, "docs/keep/important.md").write_text("more\n")
    assert ctx.checksum(ctx.sources(["."])) != before


def test_checksum_of_a_symlink_is_its_target(ctx: BuildContext) -> None:
    before = ctx.checksum(ctx.sources(["etc"]))
    os.remove(os.path.join(ctx.root, "etc"))
    os.symlink("/usr", os.path.join(ctx.root, "etc"))
    assert ctx.checksum(ctx.sources(["etc"])) != before
