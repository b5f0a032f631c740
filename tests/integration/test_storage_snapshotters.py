"""One conformance suite, run against every snapshotter: a user's session with layers.

Layers are applied the generic way, through a mounted active snapshot (the vfs form of
whiteouts: real deletions, which overlayfs itself turns into whiteouts), then committed.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import subprocess
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import bundles
from dockyard.errors import Conflict, InvalidArgument, NotFound, Unavailable
from dockyard.storage.layers import apply_layer
from dockyard.storage.snapshots import (
    Kind,
    Snapshotter,
    choose,
    mount_all,
    unmount,
)

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
]

Mounted = contextlib.AbstractContextManager[Path]
CAPABILITY = bytes.fromhex("01000002" "00040000" "00000000" "00000000" "00000000")


@pytest.fixture(params=["overlay", "vfs"])
def snapshotter(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Snapshotter]:
    yield choose(str(tmp_path / "storage"), request.param)
    left = bundles.mounts_under(tmp_path)
    for point in left:
        subprocess.run(["umount", "--lazy", point], check=False)
    assert left == [], "mounts left behind"


@pytest.fixture
def mounted(tmp_path: Path, snapshotter: Snapshotter) -> Callable[..., Mounted]:
    """mounted(key) -> a context in which the snapshot is mounted on a fresh directory."""
    counter = iter(range(10_000))

    @contextlib.contextmanager
    def mount(key: str) -> Iterator[Path]:
        target = tmp_path / f"mnt{next(counter)}"
        target.mkdir()
        mount_all(snapshotter.mounts(key), str(target))
        try:
            yield target
        finally:
            unmount(str(target))
            target.rmdir()

    return mount


def tar_of(files: dict[str, bytes | str | None]) -> bytes:
    """A layer: bytes are files, a str starting with '>' a hard link, else a symlink;
    None is a directory."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, value in files.items():
            info = tarfile.TarInfo(name)
            info.mode = 0o755
            if value is None:
                info.type = tarfile.DIRTYPE
            elif isinstance(value, str):
                info.type = tarfile.LNKTYPE if value.startswith(">") else tarfile.SYMTYPE
                info.linkname = value.lstrip(">")
            else:
                info.size = len(value)
            tf.addfile(info, io.BytesIO(value) if isinstance(value, bytes) else None)
    return buf.getvalue()


@pytest.fixture
def layer(snapshotter: Snapshotter, mounted: Callable[..., Mounted]) -> Callable[..., str]:
    """layer(name, parent, files) -> commits a snapshot holding ``files`` over ``parent``."""

    def make(name: str, parent: str | None, files: dict[str, bytes | str | None],
             change: Callable[[Path], None] | None = None) -> str:
        snapshotter.prepare(f"extract-{name}", parent)
        with mounted(f"extract-{name}") as root:
            apply_layer(io.BytesIO(tar_of(files)), str(root), whiteout_mode="vfs")
            if change is not None:
                change(root)
        snapshotter.commit(name, f"extract-{name}")
        return name

    return make


def test_layers_stack_up_and_views_are_read_only(snapshotter, layer, mounted) -> None:
    layer("base", None, {"etc": None, "etc/os-release": b"base", "bin": None,
                         "bin/sh": b"shell"})
    layer("app", "base", {"app": None, "app/main": b"main", "etc": None,
                          "etc/os-release": b"app"})
    snapshotter.prepare("ctr", "app")
    with mounted("ctr") as root:
        assert (root / "bin/sh").read_bytes() == b"shell"
        assert (root / "app/main").read_bytes() == b"main"
        assert (root / "etc/os-release").read_bytes() == b"app"
        (root / "written").write_bytes(b"by the container")
    with mounted("ctr") as root:
        assert (root / "written").read_bytes() == b"by the container"
    snapshotter.view("look", "app")
    with mounted("look") as root:
        assert (root / "app/main").read_bytes() == b"main"
        assert not (root / "written").exists()
        with pytest.raises(OSError):
            (root / "nope").write_bytes(b"x")
    snapshotter.view("one-layer", "base")
    with mounted("one-layer") as root:
        assert (root / "etc/os-release").read_bytes() == b"base"
    info = snapshotter.stat("ctr")
    assert (info.kind, info.parent) == (Kind.ACTIVE, "app")
    assert snapshotter.stat("app").kind is Kind.COMMITTED
    assert [i.name for i in snapshotter.walk()] == ["app", "base", "ctr", "look",
                                                      "one-layer"]
    assert snapshotter.usage("ctr").inodes >= 1


def test_whiteouts_and_opaque_dirs_across_layers(snapshotter, layer, mounted) -> None:
    layer("l1", None, {"gone": b"x", "dir": None, "dir/a": b"a", "dir/b": b"b",
                       "opaque": None, "opaque/old": b"old", "keep": b"k"})

    def change(root: Path) -> None:
        (root / "gone").unlink()
        (root / "dir/a").unlink()
        for child in (root / "opaque").iterdir():
            child.unlink()

    layer("l2", "l1", {}, change)
    layer("l3", "l2", {"opaque/new": b"new", ".wh.keep": b""})
    snapshotter.view("v", "l3")
    with mounted("v") as root:
        assert sorted(p.name for p in root.iterdir()) == ["dir", "opaque"]
        assert [p.name for p in (root / "dir").iterdir()] == ["b"]
        assert [p.name for p in (root / "opaque").iterdir()] == ["new"]


def test_hard_links_across_layers(snapshotter, layer, mounted) -> None:
    layer("l1", None, {"bin": None, "bin/busybox": b"bb"})
    layer("l2", "l1", {"bin/ls": ">bin/busybox", "usr": None, "usr/ln": ">bin/busybox"})
    snapshotter.prepare("ctr", "l2")
    with mounted("ctr") as root:
        inode = (root / "bin/busybox").stat().st_ino
        assert (root / "bin/ls").stat().st_ino == inode
        assert (root / "usr/ln").read_bytes() == b"bb"


def test_file_capability_survives(snapshotter, layer, mounted) -> None:
    def set_capability(root: Path) -> None:
        (root / "ping").write_bytes(b"ping")
        os.setxattr(root / "ping", "security.capability", CAPABILITY)
        (root / "su").write_bytes(b"su")
        os.chmod(root / "su", 0o4755)

    layer("l1", None, {}, set_capability)
    layer("l2", "l1", {"other": b"o"})
    snapshotter.prepare("ctr", "l2")
    with mounted("ctr") as root:
        assert os.getxattr(root / "ping", "security.capability") == CAPABILITY
        assert stat.S_IMODE((root / "su").stat().st_mode) == 0o4755


def test_a_120_layer_chain_mounts(snapshotter, layer, mounted) -> None:
    parent = None
    for i in range(120):
        snapshotter.prepare(f"x{i}", parent)
        with mounted(f"x{i}") as root:
            (root / f"f{i}").write_text(str(i))
        snapshotter.commit(f"layer{i}", f"x{i}")
        parent = f"layer{i}"
    mounts = snapshotter.prepare("top", parent)
    # Too long for mount(2)'s one page as absolute paths: this takes the relative way.
    assert snapshotter.driver == "vfs" or len(",".join(mounts[0].options)) > 4096
    with mounted("top") as root:
        assert sorted(p.name for p in root.iterdir()) == sorted(f"f{i}" for i in range(120))
        assert (root / "f0").read_text() == "0"
    snapshotter.view("top-view", parent)
    with mounted("top-view") as root:
        assert (root / "f119").read_text() == "119"


def test_remove_refuses_a_parent_and_frees_the_rest(snapshotter, layer) -> None:
    layer("base", None, {"f": b"f"})
    snapshotter.prepare("ctr", "base")
    with pytest.raises(Conflict, match="ctr"):
        snapshotter.remove("base")
    snapshotter.remove("ctr")
    snapshotter.remove("base")
    assert list(snapshotter.walk()) == []
    assert os.listdir(Path(snapshotter.root) / "snapshots") == []
    with pytest.raises(NotFound):
        snapshotter.stat("base")


def test_misuse_is_refused(snapshotter, layer) -> None:
    layer("base", None, {})
    snapshotter.prepare("ctr", "base")
    with pytest.raises(Conflict):
        snapshotter.prepare("ctr", "base")
    with pytest.raises(InvalidArgument):
        snapshotter.prepare("other", "ctr")
    with pytest.raises(NotFound):
        snapshotter.prepare("other", "missing")
    with pytest.raises(Conflict):
        snapshotter.mounts("base")
    snapshotter.view("v", "base")
    with pytest.raises(Conflict):
        snapshotter.commit("c", "v")
    with pytest.raises(Conflict):
        snapshotter.commit("base", "ctr")


def test_metadata_survives_a_new_instance_and_cleanup_finds_crash_leftovers(
        snapshotter, layer) -> None:
    layer("base", None, {"f": b"f"})
    again = choose(str(Path(snapshotter.root).parent), snapshotter.driver)
    assert again.stat("base").kind is Kind.COMMITTED
    leftover = Path(snapshotter.root) / "snapshots" / "999"
    leftover.mkdir()
    assert again.cleanup() == ["999"]
    assert not leftover.exists()


def test_choose_probes_the_kernel(tmp_path: Path) -> None:
    assert choose(str(tmp_path)).driver == "overlay"  # this machine's ext4 has overlayfs
    with pytest.raises(InvalidArgument):
        choose(str(tmp_path), "zfs")
    assert [p.name for p in tmp_path.iterdir()] == ["overlay"]


def test_adopt_commits_a_staged_layer_over_its_parent(snapshotter, layer, mounted) -> None:
    if not snapshotter.stores_diffs:
        staged = snapshotter.stage()
        with pytest.raises(Unavailable):
            snapshotter.adopt("l2", None, staged)
        return
    layer("l1", None, {"etc": None, "etc/os-release": b"base", "gone": b"g"})
    staged = snapshotter.stage()
    # A layer in the overlay form, made before its parent is looked at.
    apply_layer(io.BytesIO(tar_of({"etc": None, "etc/app": b"app", ".wh.gone": b""})),
                staged, whiteout_mode="overlay")
    snapshotter.adopt("l2", "l1", staged)
    assert not os.path.exists(staged)
    info = snapshotter.stat("l2")
    assert (info.kind, info.parent) == (Kind.COMMITTED, "l1")
    assert snapshotter.layers("l2") == [
        os.path.join(snapshotter.root, "snapshots", n, "fs") for n in ("2", "1")]
    snapshotter.prepare("ctr", "l2")
    with mounted("ctr") as root:
        assert sorted(p.name for p in root.iterdir()) == ["etc"]
        assert (root / "etc/app").read_bytes() == b"app"
        assert (root / "etc/os-release").read_bytes() == b"base"
    assert snapshotter.usage("l2").inodes == 4  # fs, etc, etc/app, the whiteout

    other = snapshotter.stage()
    with pytest.raises(Conflict):
        snapshotter.adopt("l2", "l1", other)
    with pytest.raises(InvalidArgument):
        snapshotter.adopt("l3", "ctr", other)
    with pytest.raises(NotFound):
        snapshotter.adopt("l3", "missing", other)
    elsewhere = Path(snapshotter.root).parent / "staging-1-x"
    elsewhere.mkdir()
    with pytest.raises(InvalidArgument, match="stage"):
        snapshotter.adopt("l3", "l1", str(elsewhere))
    snapshotter.adopt("l3", None, other)  # refusals leave the staged tree usable
    (own,) = snapshotter.layers("l3")
    assert own not in snapshotter.layers("l2") and os.listdir(own) == []
    with pytest.raises(Conflict):
        snapshotter.layers("ctr")


def test_cleanup_removes_the_staging_of_dead_processes_only(snapshotter) -> None:
    mine = snapshotter.stage()
    dead = subprocess.Popen(["true"])
    dead.wait()
    left = Path(snapshotter.root) / "snapshots" / f"staging-{dead.pid}-0123abcd"
    left.mkdir()
    (left / "half-written").write_bytes(b"x")
    assert snapshotter.cleanup() == [left.name]
    assert not left.exists()
    assert os.path.isdir(mine)
