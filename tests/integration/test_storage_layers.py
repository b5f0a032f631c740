"""Layer tars applied to and made from real directories, as root (devices, owners, xattrs)."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zstandard

import bundles
from dockyard.errors import InvalidArgument
from dockyard.storage.layers import (
    LowerLayersNeeded,
    apply_layer,
    apply_layer_apart,
    diff_layer,
)
from dockyard.storage.snapshots import Mount, unmount

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
]

# A file capability: cap_net_bind_service, effective (VFS_CAP_REVISION_2).
CAPABILITY = bytes.fromhex("01000002" "00040000" "00000000" "00000000" "00000000")
MTIME = 1_600_000_000


def entry(name: str, kind: str = "file", data: bytes = b"", **attrs: Any) -> tuple[Any, ...]:
    return (name, kind, data, attrs)


def make_tar(entries: list[tuple[Any, ...]], compression: str = "none") -> bytes:
    """A layer tar of ``entries`` (name, kind, data, TarInfo attributes), compressed."""
    buf = io.BytesIO()
    types = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
             "link": tarfile.LNKTYPE, "char": tarfile.CHRTYPE, "block": tarfile.BLKTYPE,
             "fifo": tarfile.FIFOTYPE}
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, kind, data, attrs in entries:
            info = tarfile.TarInfo(name)
            info.type = types[kind]
            info.mode = 0o755 if kind == "dir" else 0o644
            info.mtime = MTIME
            info.size = len(data) if kind == "file" else 0
            for key, value in attrs.items():
                setattr(info, key, value)
            tf.addfile(info, io.BytesIO(data) if kind == "file" else None)
    raw = buf.getvalue()
    if compression == "gzip":
        return gzip.compress(raw)
    if compression == "zstd":
        return zstandard.ZstdCompressor().compress(raw)
    return raw


def xattr_pax(values: dict[str, bytes]) -> dict[str, str]:
    return {f"SCHILY.xattr.{k}": v.decode("utf-8", "surrogateescape")
            for k, v in values.items()}


def members_of(data: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return tf.getmembers()


def apply(data: bytes, root: Path, **kwargs: Any) -> tuple[str, int]:
    return apply_layer(io.BytesIO(data), str(root), **kwargs)


def snapshot_of(root: Path) -> dict[str, tuple[Any, ...]]:
    """Everything about a tree that a layer carries, by relative path."""
    result: dict[str, tuple[Any, ...]] = {}
    inodes: dict[int, str] = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        rel = str(path.relative_to(root))
        xattrs = {k: os.getxattr(path, k, follow_symlinks=False)
                  for k in os.listxattr(path, follow_symlinks=False)}
        content: Any = None
        if stat.S_ISREG(st.st_mode):
            content = (hashlib.sha256(path.read_bytes()).hexdigest(),
                       inodes.setdefault(st.st_ino, rel))
        elif stat.S_ISLNK(st.st_mode):
            content = os.readlink(path)
        mtime = st.st_mtime_ns // 1_000_000_000
        result[rel] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid,
                       st.st_gid, st.st_rdev, mtime, content, tuple(sorted(xattrs.items())))
    return result


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "outer").mkdir()
    path = tmp_path / "outer" / "root"
    path.mkdir()
    return path


@pytest.fixture
def no_mounts_left(tmp_path: Path) -> Iterator[None]:
    yield
    left = bundles.mounts_under(tmp_path)
    for point in left:
        subprocess.run(["umount", "--lazy", point], check=False)
    assert left == []


EVERYTHING = [
    entry("bin", "dir"),
    entry("bin/ping", "file", b"\x7fELF...", mode=0o755,
          pax_headers=xattr_pax({"security.capability": CAPABILITY})),
    entry("bin/su", "file", b"su", mode=0o4755),
    entry("bin/wall", "file", b"wall", mode=0o2755, gid=5),
    entry("bin/sh", "symlink", linkname="ping"),
    entry("bin/ping6", "link", linkname="bin/ping"),
    entry("home", "dir", mode=0o750, uid=1000, gid=2000, mtime=MTIME - 100),
    entry("home/user.txt", "file", b"mine", uid=1000, gid=2000,
          pax_headers=xattr_pax({"user.note": b"hello"})),
    entry("tmp", "dir", mode=0o1777),
    entry("dev", "dir"),
    entry("dev/null", "char", devmajor=1, devminor=3, mode=0o666),
    entry("dev/loop9", "block", devmajor=7, devminor=9, mode=0o660),
    entry("dev/pipe", "fifo"),
    entry("deep/er/file", "file", b"parents not listed"),
]


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_apply_every_kind_of_entry(root: Path, compression: str) -> None:
    data = make_tar(EVERYTHING, compression)
    diff_id, size = apply(data, root)
    raw = make_tar(EVERYTHING)
    assert (diff_id, size) == (f"sha256:{hashlib.sha256(raw).hexdigest()}", len(raw))

    ping = (root / "bin/ping").lstat()
    assert os.getxattr(root / "bin/ping", "security.capability") == CAPABILITY
    assert (root / "bin/ping6").lstat().st_ino == ping.st_ino
    assert stat.S_IMODE((root / "bin/su").lstat().st_mode) == 0o4755
    assert stat.S_IMODE((root / "bin/wall").lstat().st_mode) == 0o2755
    assert (root / "bin/wall").lstat().st_gid == 5
    assert os.readlink(root / "bin/sh") == "ping"
    home = (root / "home").lstat()
    assert (stat.S_IMODE(home.st_mode), home.st_uid, home.st_gid) == (0o750, 1000, 2000)
    # A directory's mtime is set after its children were written.
    assert home.st_mtime == MTIME - 100
    assert (root / "bin").lstat().st_mtime == MTIME
    assert os.getxattr(root / "home/user.txt", "user.note") == b"hello"
    assert stat.S_IMODE((root / "tmp").lstat().st_mode) == 0o1777
    null = (root / "dev/null").lstat()
    assert stat.S_ISCHR(null.st_mode) and null.st_rdev == os.makedev(1, 3)
    assert stat.S_IMODE(null.st_mode) == 0o666
    assert stat.S_ISBLK((root / "dev/loop9").lstat().st_mode)
    assert stat.S_ISFIFO((root / "dev/pipe").lstat().st_mode)
    assert (root / "deep/er/file").read_bytes() == b"parents not listed"


def test_media_type_overrides_sniffing(root: Path) -> None:
    data = make_tar([entry("f", "file", b"x")], "gzip")
    apply(data, root, media_type="application/vnd.oci.image.layer.v1.tar+gzip")
    assert (root / "f").read_bytes() == b"x"
    with pytest.raises(InvalidArgument, match="not a valid tar"):
        apply(b"garbage" * 200, root, media_type="application/vnd.oci.image.layer.v1.tar")


def test_vfs_whiteouts_delete_and_opaque_dirs_empty(root: Path) -> None:
    apply(make_tar([entry("a", "file", b"a"), entry("d", "dir"), entry("d/old", "file"),
                    entry("d/sub", "dir"), entry("keep", "file")]), root)
    # The opaque marker comes after one of the layer's own files: that one stays.
    apply(make_tar([entry(".wh.a"), entry("d", "dir"), entry("d/new", "file", b"n"),
                    entry("d/.wh..wh..opq"), entry(".wh.missing"),
                    entry("gone/.wh.x")]), root)
    assert sorted(p.name for p in root.iterdir()) == ["d", "keep"]
    assert [p.name for p in (root / "d").iterdir()] == ["new"]


def test_overlay_form_with_copy_up_mounts_right(tmp_path: Path, no_mounts_left: None) -> None:
    lower, upper, work, merged = (tmp_path / n for n in ("lower", "upper", "work", "merged"))
    for d in (lower, upper, work, merged):
        d.mkdir()
    apply(make_tar([entry("a", "file", b"a"), entry("d", "dir"), entry("d/old", "file"),
                    entry("etc", "dir", mode=0o700, uid=7),
                    entry("etc/passwd", "file", b"root")]), lower)
    apply(make_tar([entry(".wh.a"), entry("d", "dir"), entry("d/.wh..wh..opq"),
                    entry("d/new", "file", b"n"), entry("etc/shadow", "file", b"s"),
                    entry("etc/passwd-link", "link", linkname="etc/passwd"),
                    entry("bin/passwd", "link", linkname="etc/passwd")]),
          upper, whiteout_mode="overlay", lowers=[str(lower)])
    st = (upper / "a").lstat()
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert os.getxattr(upper / "d", "trusted.overlay.opaque") == b"y"
    # etc was not in the tar: its copy-up keeps the lower layer's mode and owner.
    etc = (upper / "etc").lstat()
    assert (stat.S_IMODE(etc.st_mode), etc.st_uid) == (0o700, 7)
    Mount("overlay", "overlay", (f"lowerdir={lower}", f"upperdir={upper}",
                                 f"workdir={work}")).mount(str(merged))
    try:
        assert sorted(p.name for p in merged.iterdir()) == ["bin", "d", "etc"]
        assert (merged / "bin/passwd").read_bytes() == b"root"
        assert [p.name for p in (merged / "d").iterdir()] == ["new"]
        assert (merged / "etc/passwd-link").read_bytes() == b"root"
        assert (merged / "etc/passwd").stat().st_ino == (merged / "etc/passwd-link").stat().st_ino
    finally:
        unmount(str(merged))


def test_vfs_diff_then_apply_reproduces_the_tree(tmp_path: Path) -> None:
    lower, upper, copy = tmp_path / "lower", tmp_path / "upper", tmp_path / "copy"
    for d in (lower, upper, copy):
        d.mkdir()
    base = make_tar(EVERYTHING)
    for d in (lower, upper, copy):
        apply(base, d)
    apply(make_tar([entry(".wh.tmp"), entry("bin/su", "file", b"changed", mode=0o4755),
                    entry("new", "dir"), entry("new/f", "file", b"f"),
                    entry("new/hard", "link", linkname="new/f"),
                    entry("home/user.txt", "file", b"mine", uid=1000, gid=2000,
                          pax_headers=xattr_pax({"user.note": b"changed"}))]), upper)
    out = io.BytesIO()
    diff_id, size = diff_layer(str(lower), str(upper), out, kind="vfs")
    assert diff_id == f"sha256:{hashlib.sha256(out.getvalue()).hexdigest()}"
    assert size == len(out.getvalue())
    names = [m.name for m in members_of(out.getvalue())]
    assert "bin/ping" not in names and ".wh.tmp" in names and "home" in names
    assert apply(out.getvalue(), copy) == (diff_id, size)
    assert snapshot_of(copy) == snapshot_of(upper)
    # The same trees give the same bytes.
    again = io.BytesIO()
    assert diff_layer(str(lower), str(upper), again, kind="vfs")[0] == diff_id


def test_overlay_diff_turns_whiteouts_back_into_entries(tmp_path: Path) -> None:
    upper = tmp_path / "upper"
    upper.mkdir()
    apply(make_tar([entry(".wh.a"), entry("d", "dir"), entry("d/.wh..wh..opq"),
                    entry("d/new", "file", b"n", pax_headers=xattr_pax(
                        {"security.capability": CAPABILITY}))]),
          upper, whiteout_mode="overlay")
    out = io.BytesIO()
    diff_layer(None, str(upper), out, kind="overlay")
    members = members_of(out.getvalue())
    assert [m.name for m in members] == [".wh.a", "d", "d/.wh..wh..opq", "d/new"]
    cap = members[-1].pax_headers["SCHILY.xattr.security.capability"]
    assert cap.encode("utf-8", "surrogateescape") == CAPABILITY
    assert not any("trusted.overlay" in k for m in members for k in m.pax_headers)


LOWER = [entry("usr", "dir"), entry("usr/bin", "dir"), entry("usr/bin/tool", "file", b"t"),
         entry("etc", "dir", mode=0o700, uid=7), entry("etc/passwd", "file", b"root"),
         entry("tmp", "dir", mode=0o1777), entry("marked", "dir"), entry("plain", "file"),
         entry("link", "symlink", linkname="usr"),
         entry("opaque", "dir"), entry("opaque/old", "file")]
# Upper layers, and whether unpacking one apart from LOWER makes what unpacking it over
# LOWER makes (True), needs a check that fails (False), or cannot be done apart (None).
APART = {
    "listed": ([entry("etc", "dir", mode=0o755), entry("etc/new", "file", b"n"),
                entry(".wh.plain"), entry("opaque", "dir"), entry("opaque/.wh..wh..opq"),
                entry("own", "file", b"o"), entry("own-link", "link", linkname="own")],
               True),
    "unlisted-like-below": ([entry("usr/lib/x/y", "file", b"y"), entry("new/z", "file"),
                             entry("usr/bin/.wh.tool"), entry("plain/f", "file")], True),
    "unlisted-then-listed": ([entry("etc/shadow", "file", b"s"), entry("etc", "dir")],
                             True),
    "unlisted-replaced": ([entry("etc/shadow", "file", b"s"), entry("etc", "file", b"e")],
                          True),
    "unlisted-whited-out": ([entry("etc/shadow", "file", b"s"), entry(".wh.etc")], True),
    "unlisted-other-owner": ([entry("etc/shadow", "file", b"s")], False),
    "unlisted-other-mode": ([entry("tmp/f", "file")], False),
    "unlisted-xattr": ([entry("marked/f", "file")], False),
    "unlisted-below-symlink": ([entry("link/f", "file")], False),
    "hard-link-below": ([entry("usr", "dir"), entry("usr/bin", "dir"),
                         entry("usr/bin/again", "link", linkname="usr/bin/tool")], None),
    "unlisted-opaque": ([entry("opaque/.wh..wh..opq")], None),
}


@pytest.mark.parametrize("case", sorted(APART))
def test_a_layer_unpacked_apart_is_checked_against_the_layers_below(
        tmp_path: Path, case: str) -> None:
    lower, over, apart = tmp_path / "lower", tmp_path / "over", tmp_path / "apart"
    for d in (lower, over, apart):
        d.mkdir()
    apply(make_tar(LOWER), lower)
    os.setxattr(lower / "marked", "user.kept", b"1")
    entries, same = APART[case]
    data = make_tar(entries)
    if same is None:
        with pytest.raises(LowerLayersNeeded):
            apply_layer_apart(io.BytesIO(data), str(apart))
        return
    diff_id, size, assumptions = apply_layer_apart(io.BytesIO(data), str(apart))
    try:
        assert apply(data, over, whiteout_mode="overlay", lowers=[str(lower)]) == (diff_id,
                                                                                  size)
    except InvalidArgument:
        assert same is False  # refused over them: the check sends it there to be refused
    assert assumptions.hold(str(apart), [str(lower)]) is same
    assert assumptions.hold(str(apart), []) is True  # nothing below: nothing assumed wrong
    if same:
        # Byte for byte, but for the mtime of the unlisted directories: the time of the
        # last child made in them, in both trees.
        unlisted = {rel for rel, listed in assumptions.directories.items() if not listed}
        assert {k: v[:5] + v[6:] if k in unlisted else v for k, v in snapshot_of(apart).items()} \
            == {k: v[:5] + v[6:] if k in unlisted else v for k, v in snapshot_of(over).items()}


HOSTILE = {
    "dotdot": ([entry("../../etc/x", "file", b"pwned")], "../../etc/x"),
    "absolute": ([entry("/abs/path", "file", b"pwned")], "/abs/path"),
    "absolute-symlink-component": ([entry("evil", "symlink", linkname="/"),
                                    entry("evil/sentinel", "file", b"pwned")],
                                   "evil/sentinel"),
    "relative-symlink-escape": ([entry("up", "symlink", linkname="../../.."),
                                 entry("up/sentinel", "file", b"pwned")], "up/sentinel"),
    "hardlink-absolute": ([entry("h", "link", linkname="/etc/passwd")], "/etc/passwd"),
    "hardlink-through-symlink": ([entry("out", "symlink", linkname="../.."),
                                  entry("h", "link", linkname="out/sentinel")], "'h'"),
    "symlink-loop": ([entry("l1", "symlink", linkname="l2"),
                      entry("l2", "symlink", linkname="l1"),
                      entry("l1/x", "file", b"pwned")], "l1/x"),
}


@pytest.mark.parametrize("mode", ["vfs", "overlay", "apart"])
@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_layers_are_refused(tmp_path: Path, root: Path, case: str, mode: str) -> None:
    sentinel = tmp_path / "sentinel"
    sentinel.write_bytes(b"untouched")
    outside_before = sorted(str(p) for p in tmp_path.rglob("*") if root not in p.parents)
    entries, named = HOSTILE[case]
    with pytest.raises(InvalidArgument) as caught:
        if mode == "apart":
            apply_layer_apart(io.BytesIO(make_tar(entries)), str(root))
        else:
            apply(make_tar(entries), root, whiteout_mode=mode)
    assert named in str(caught.value)
    assert sentinel.read_bytes() == b"untouched"
    assert sentinel.lstat().st_nlink == 1
    outside_after = sorted(str(p) for p in tmp_path.rglob("*") if root not in p.parents)
    assert outside_after == outside_before
